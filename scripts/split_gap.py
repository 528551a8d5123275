"""Does a grounded − baseline difference hold on every part of the evaluation? Validation vs test, seen vs zero-shot.

Training's curves read the validation images (carved from the training split: their triplets are seen ones);
the test split also plants zero-shot triplets. When a row's validation curves and its test disagree, this script
puts the per-seed differences side by side, each with its paired bootstrap over images (the study tables'
interval), on four sets of relations:

- ``val``: the validation images (``python -m sgseg.evaluate run_dir=RUN ckpt=last split=val``);
- ``test``: the test split (``... ckpt=last``);
- ``test seen``: its GT relations whose triplet the training split has (``... ckpt=last relations=seen``);
- ``test zero-shot``: the others (``... ckpt=last relations=zeroshot``).

The seen and zero-shot sets need no re-test where the test's per-image counts hold the zero-shot split (tests
written since 2026-12-06): they are cut from the ``test`` counts (:func:`sgseg.evaluation.scene_graph.split_counts`,
the same numbers); a re-test folder, where there is one, is read instead.

    python scripts/split_gap.py --baseline RUN_s1 RUN_s2 --grounded RUN_s1 RUN_s2 [--k 50] [--bootstrap 1000]

Runs are paired in the order given (seed by seed). Prints a markdown table per metric (mR@K, R@K): the images
scored (with at least one relation of the set), the two runs' values and the difference with its 95 % interval
per seed, and the mean over the seeds with its interval.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sgseg.evaluation.scene_graph import recall_from_per_image, split_counts
from sgseg.results import paired_bootstrap

# set name → (evaluate folder suffix after <task>-last, the sgseg.evaluate arguments that write it)
SETS = {
    "val": ("-val", "split=val"),
    "test": ("", ""),
    "test seen": ("-seen-relations", "relations=seen"),
    "test zero-shot": ("-zeroshot-relations", "relations=zeroshot"),
}
# the sets that can also be cut from the test's own counts: set name → split_counts' relations
FROM_TEST = {"test seen": "seen", "test zero-shot": "zeroshot"}


def task_of(run: Path) -> str:
    """The run's task, from the test of its final weights (``evaluate/<task>-last``)."""
    found = sorted(p.name[: -len("-last")] for p in (run / "evaluate").glob("*-last") if p.is_dir())
    if len(found) != 1:
        raise SystemExit(
            f"split_gap: {run}/evaluate holds {found or 'no'} <task>-last folder(s); need exactly one: run "
            f"python -m sgseg.evaluate run_dir={run} ckpt=last"
        )
    return found[0]


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def load(run: Path, task: str, name: str) -> dict[str, np.ndarray]:
    """The per-image counts of one set of relations (:data:`SETS`) for the run's final weights: its re-test
    folder, or for the seen / zero-shot sets the test's counts cut to them when they hold the split."""
    suffix, args = SETS[name]
    path = run / "evaluate" / f"{task}-last{suffix}" / f"{task}_per_image.npz"
    if path.is_file():
        return _read(path)
    test = run / "evaluate" / f"{task}-last" / f"{task}_per_image.npz"
    if name in FROM_TEST and test.is_file():
        data = _read(test)
        if "zs_pred_count" in data:
            return split_counts(data, FROM_TEST[name])
    raise SystemExit(
        f"split_gap: {path} not found"
        + (f" and {test} holds no zero-shot split" if name in FROM_TEST else "")
        + f": run python -m sgseg.evaluate run_dir={run} ckpt=last {args}"
    )


def gap_tables(baseline: list[Path], grounded: list[Path], k: int, num: int) -> str:
    if len(baseline) != len(grounded) or not baseline:
        raise SystemExit(
            f"split_gap: {len(baseline)} baseline and {len(grounded)} grounded runs; pair them seed by seed"
        )
    task = task_of(baseline[0])
    for run in baseline + grounded:
        if task_of(run) != task:
            raise SystemExit(f"split_gap: {run} was tested in {task_of(run)}, {baseline[0]} in {task}")
    data = {
        name: [(load(b, task, name), load(g, task, name)) for b, g in zip(baseline, grounded, strict=True)]
        for name in SETS
    }
    out = []
    for metric in (f"mR@{k}", f"R@{k}"):
        seeds = " | ".join(f"{g.name}" for g in grounded)
        out += [f"**{metric}** (%, baseline → grounded; difference [95 % paired bootstrap over images])", "",
                f"| relations | images scored | {seeds} | mean over {len(grounded)} |",
                "|---" * (3 + len(grounded)) + "|"]  # fmt: skip
        for name, pairs in data.items():
            boot = paired_bootstrap(pairs, k, num)
            cells = []
            for i, (b, g) in enumerate(pairs):
                vb, vg = (100 * recall_from_per_image(d, k)[metric] for d in (b, g))
                d, lo, hi = (100 * float(boot[f"{metric}{s}"][i]) for s in ("", "_low", "_high"))
                cells.append(f"{vb:.1f} → {vg:.1f}: {d:+.1f} [{lo:+.1f}, {hi:+.1f}]")
            mean = " ".join(
                [f"{100 * boot[f'{metric}_mean']:+.1f}",
                 f"[{100 * boot[f'{metric}_mean_low']:+.1f}, {100 * boot[f'{metric}_mean_high']:+.1f}]"]
            )  # fmt: skip
            scored = sorted({int(np.asarray(d["counted"]).sum()) for pair in pairs for d in pair})
            out.append(f"| {name} | {'/'.join(map(str, scored))} | " + " | ".join(cells) + f" | {mean} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", nargs="+", type=Path, required=True, help="baseline run directories")
    parser.add_argument(
        "--grounded", nargs="+", type=Path, required=True, help="grounded runs, same seed order"
    )
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    args = parser.parse_args(argv)
    print(gap_tables(args.baseline, args.grounded, args.k, args.bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
