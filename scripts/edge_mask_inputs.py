"""How often is an edge grounding's mask input (nearly) empty? Table 4's avg / union / gaussian rows side by side.

Test-time all-zero masks (``python -m sgseg.evaluate ... mask_source=empty``) feed f_E an all-zero m_{j,j'} for
every pair. This script measures how often a trained run's f_E met a (nearly) all-zero m_{j,j'} on its own masks:
it re-tests each run on its validation images (carved from the training split, so the pairs are of the kind
training saw; ``split=val``, the same route as ``python -m sgseg.evaluate``) and records, for every pair f_E
grounds, the largest value of m_{j,j'} over its class channels and cells.

    python scripts/edge_mask_inputs.py RUN [RUN ...] [--ckpt last] [--thresholds 0.01 0.05 0.1]

Prints a markdown table: per run, its edge grounding, the pairs seen, the share of pairs whose max m_{j,j'} is
below each threshold, and the median of the max. Nothing is written into the run directories (the re-tests go to
a temporary folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from sgseg.models.grounding import edge

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
MASK_EDGES = ("AvgEdgeGrounding", "UnionEdgeGrounding", "GaussianEdgeGrounding")


def pair_maxima(rel: torch.Tensor) -> torch.Tensor:
    """Float[R]: the largest value of each pair's m_{j,j'} (Float[R, C, S, S]) over channels and cells."""
    return rel.detach().flatten(1).amax(dim=1) if rel.numel() else rel.new_zeros(rel.shape[0])


@contextmanager
def recording(maxima: list[np.ndarray]):
    """Within the block, every ``relation_masks`` call of a mask edge grounding (avg / union via the base class,
    Gaussian its own) appends its pairs' maxima to ``maxima``; the class methods are restored on leaving."""

    def wrap(fn):
        def relation_masks(self, *args, **kwargs):
            rel = fn(self, *args, **kwargs)
            maxima.append(pair_maxima(rel).float().cpu().numpy())
            return rel

        return relation_masks

    originals = {
        cls: cls.__dict__["relation_masks"] for cls in (edge._MaskEdgeGrounding, edge.GaussianEdgeGrounding)
    }
    try:
        for cls, fn in originals.items():
            cls.relation_masks = wrap(fn)
        yield maxima
    finally:
        for cls, fn in originals.items():
            cls.relation_masks = fn


def summarise(maxima: np.ndarray, thresholds: list[float]) -> dict[str, float]:
    """Share of pairs with max below each threshold, and the median max."""
    if maxima.size == 0:
        raise ValueError("no edge-grounded pair was recorded: is the run's edge grounding a mask one?")
    out = {f"< {t:g}": float((maxima < t).mean()) for t in thresholds}
    out["median max"] = float(np.median(maxima))
    out["pairs"] = int(maxima.size)
    return out


def edge_kind(run_dir: Path) -> str:
    """The class name of a run's edge grounding (``none`` where the run has none)."""
    run_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    target = OmegaConf.select(run_cfg, "model.grounding.edge._target_", default=None)
    return str(target).rsplit(".", 1)[-1] if target else "none"


def measure(run_dir: Path, ckpt: str, thresholds: list[float], num_threads: int) -> dict:
    from sgseg.lit.run import run_evaluation

    maxima: list[np.ndarray] = []
    with recording(maxima), tempfile.TemporaryDirectory() as tmp:
        # sgseg.evaluate's own defaults (conf/evaluate.yaml), so a key it gains later is not missed here
        defaults = OmegaConf.load(CONF_DIR / "evaluate.yaml")
        cfg = OmegaConf.merge(
            {k: v for k, v in OmegaConf.to_container(defaults).items() if k not in ("defaults", "hydra")},
            {
                "task": None,
                "run_dir": str(run_dir),
                "ckpt": ckpt,
                "out": tmp,
                "split": "val",
                "num_threads": num_threads,
            },
        )
        run_evaluation(cfg)
    return summarise(np.concatenate(maxima) if maxima else np.zeros(0), thresholds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="stage-2 run directories of python -m sgseg.train")
    ap.add_argument("--ckpt", default="last", help="best | last | a checkpoint path (default last)")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.01, 0.05, 0.1])
    ap.add_argument("--num-threads", type=int, default=1)
    args = ap.parse_args(argv)
    kinds = {}
    for run in args.runs:
        if not (run / ".hydra" / "config.yaml").is_file():
            print(f"edge_mask_inputs: {run} is not a run directory (no .hydra/config.yaml)", file=sys.stderr)
            return 2
        kinds[run] = edge_kind(run)
        if kinds[run] not in MASK_EDGES:
            print(
                f"edge_mask_inputs: {run} grounds its edges with {kinds[run]}, not on masks "
                f"({', '.join(MASK_EDGES)}); pass runs of the avg / union / gaussian rows",
                file=sys.stderr,
            )
            return 2
    rows = [
        (run, kinds[run], measure(run, args.ckpt, args.thresholds, args.num_threads)) for run in args.runs
    ]
    cols = [f"< {t:g}" for t in args.thresholds]
    print("\nshare of f_E's pairs on the validation images whose m_{j,j'} has max below a threshold\n")
    print("| run | edge grounding | pairs | " + " | ".join(f"max {c}" for c in cols) + " | median max |")
    print("|---|---|---:|" + "---:|" * (len(cols) + 1))
    for run, kind, s in rows:
        cells = " | ".join(f"{100 * s[c]:.1f} %" for c in cols)
        print(f"| {run.name} | {kind} | {s['pairs']} | {cells} | {s['median max']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
