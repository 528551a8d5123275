"""Time of a full stage-2 training step (VG batch + COCO batch) per edge-grounding variant, before and after
the stage-2 speed-ups, and f_E's share.

Builds the synthetic CPU configuration exactly as ``python -m sgseg.train`` does (tiny detector, seg-grounded
MOTIF), on a small synthetic set written to a temporary folder, and times ``losses + backward + SGD step``
for each ``model.grounding.edge`` variant twice: ``before`` runs the plain code path (f_E on every ordered
pair, autograd's input gradient for all channels of the grounding heads' first conv, RoIAlign of every union
box even when (j, j') and (j', j) repeat it, masks pasted into the union frame by ``grid_sample``), ``after``
the current one (f_E once per unordered pair — its union box pooled once too —, mask-channel-only input
gradient, repeated boxes pooled once, separable pasting by two matrix products, RoIAlign as two matrix products
instead of torchvision's CPU kernel, the grounding heads' first conv and the refinement head in channels-last
layout built in one copy, the heads' ReLU in place and their 28 → 7 pooling as fixed windows;
see ``sgseg/models/grounding/edge.py``, ``concat_conv.py``, ``node.py``, ``SceneGraphModel._relation_logits``,
``JointDetector.roi_features`` and ``sgseg/ops/roi_align.py``). Both copies of a variant start from the same weights; all variants and both paths take
their steps interleaved, batch by batch, so that load from other processes hits every row alike — the ratios
are robust to load, the absolute times are not. Interleaving step by step also makes every row's step run with
the other rows' weights in the CPU caches, which overstates small differences; on a quiet machine ``--block 10``
(each row 10 steps in a row) times each model as a training run sees it. Each row: median over ``--repeats`` steps (after
``--warmup``), the speed-up, the ratio against ``none`` on the same path, and the share of the step spent in
the edge grounding's forward (timed with hooks) and in the frozen detector (every call into it timed: what
a cache of its outputs could save at most). The first step's losses of the two paths are compared (they
must agree to float tolerance).

    python scripts/bench_stage2.py [overrides ...] [--repeats 8] [--threads 2]   # e.g. task=sgcls (before --variants)
    # the real configuration: the default benchmark and the trained joint detector (README numbers; quiet machine)
    python scripts/bench_stage2.py --data-dir data --detector logs/det_joint/detector/detector.pt \
        --repeats 30 --block 10 --variants none gaussian
    # + a column with the grounding / refinement heads' convs in bf16 (cpu_bf16_convs=true; CPUs with AMX)
    python scripts/bench_stage2.py ... --bf16
    # which speed-up pays on this CPU: + one column per named flag, the current path with that one switched off
    python scripts/bench_stage2.py ... --ablate CHANNELS_LAST SEPARABLE
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from pytorch_lightning import seed_everything

import sgseg.models.grounding.concat_conv as concat_conv
from sgseg.data.synthetic import SyntheticConfig, generate
from sgseg.lit.build import (
    build_datamodule,
    build_detector,
    build_scene_graph_module,
    coco_class_count,
    load_frozen_detector,
)
from sgseg.models.speedups import FLAGS, code_path

CONF = Path(__file__).resolve().parent.parent / "conf"
# + "bf16" with --bf16: "after" with the heads' convs in bf16 (cpu_bf16_convs=true)
PATHS = ("before", "after")


@contextlib.contextmanager
def path_switches(path: str):
    """The code path of one column: the plain path, the current one, the current one with bf16 convs, or the
    current one with one speed-up off (``-FLAG``)."""
    old = concat_conv.BF16_CONVS
    concat_conv.BF16_CONVS = path == "bf16"
    off = [path[1:]] if path.startswith("-") else []
    try:
        with code_path(path != "before"), code_path(False, off):
            yield
    finally:
        concat_conv.BF16_CONVS = old


class Runner:
    """One variant's module + optimizer, with a hook timing the edge grounding's forward."""

    def __init__(
        self, data_dir: Path, edge: str, overrides: list[str], detector_path: str | None = None
    ) -> None:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"paths.data_dir={data_dir}", "data.generate=null", "data.vg.num_val=8",
                           f"model/grounding/edge={edge}", *overrides],
            )  # fmt: skip
        self.dm = build_datamodule(cfg)
        self.dm.setup("fit")
        vg = self.dm.dataset("vg", "train")
        torch.manual_seed(0)
        if detector_path:  # a trained stage-1 detector, as stage 2 loads it
            detector = load_frozen_detector(detector_path)
        else:
            detector = build_detector(cfg, len(vg.object_classes), coco_class_count(cfg, self.dm))
        self.module, _ = build_scene_graph_module(cfg, self.dm, detector)  # as training builds it
        self.model = self.module.model
        self.opt = self.module.configure_optimizers()["optimizer"]
        self.edge_time = [0.0]
        self.model.edge_grounding.register_forward_pre_hook(
            lambda *_: self.edge_time.append(time.perf_counter())
        )
        self.model.edge_grounding.register_forward_hook(self._post)
        # the frozen detector's share of a step: every call into it (backbone, box head on the given boxes, COCO
        # mask head, RoIAlign of node / union / refinement boxes) is timed — what a cache of its outputs could
        # save at most
        self.detector_time = [0.0]
        for name in ("features", "detect", "mask_logits", "roi_features"):
            setattr(self.model.detector, name, self._timed(getattr(self.model.detector, name)))
        self.model.train()

    def _timed(self, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.detector_time[0] += time.perf_counter() - t

        return call

    def _post(self, *_) -> None:
        self.edge_time[0] += time.perf_counter() - self.edge_time.pop()

    def evaluate(self, batch) -> float:
        """Seconds of one evaluation forward (all ordered pairs of each image)."""
        self.model.eval()
        images, targets = batch["vg"]
        t = time.perf_counter()
        with torch.no_grad():
            self.model(images, targets, self.module.mode)
        dt = time.perf_counter() - t
        self.model.train()
        return dt

    def step(self, batch) -> tuple[float, float, float, float]:
        """(step seconds, edge-grounding forward seconds, loss, frozen-detector seconds)."""
        self.edge_time[0] = self.detector_time[0] = 0.0
        t = time.perf_counter()
        loss = sum(self.module.losses(batch).values())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t, self.edge_time[0], float(loss), self.detector_time[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["none", "avg", "union", "gaussian"])
    p.add_argument(
        "--block",
        type=int,
        default=1,
        help="steps a row takes in a row before the next row's (1: interleaved step by step, robust to load; "
        "on a quiet machine 10 or more measures each model as training runs it, without the other rows "
        "evicting its weights from the caches between its steps)",
    )
    p.add_argument(
        "--data-dir", help="paths.data_dir of an existing synthetic benchmark (default: a small new one)"
    )
    p.add_argument("--detector", help="a trained stage-1 detector.pt (default: randomly initialised)")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="add a `bf16` column: the current path with the grounding / refinement heads' convs in bf16 "
        "(cpu_bf16_convs=true; pays on CPUs with AMX)",
    )
    p.add_argument(
        "--ablate",
        nargs="+",
        default=[],
        metavar="FLAG",
        help=f"add a column per flag: the current path with that one speed-up off (what it gains on this CPU); "
        f"flags: {' '.join(FLAGS)}",
    )
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. task=sgcls data.loader.batch_size_vg=8"
    )
    args = p.parse_args()
    unknown = sorted(set(args.ablate) - set(FLAGS))
    if unknown:
        p.error(f"--ablate: unknown speed-up flag(s) {unknown}; known: {' '.join(FLAGS)}")
    paths = (*PATHS, "bf16") if args.bf16 else PATHS
    paths = (*paths, *(f"-{flag}" for flag in args.ablate))
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir:  # an existing benchmark (e.g. data/, written by python -m sgseg.data.synthetic)
            data_dir = Path(args.data_dir)
        else:
            data_dir = Path(tmp)
            generate(data_dir / "synthetic", SyntheticConfig(num_vg_train=80, num_vg_test=4, num_coco_train=40,
                                                             num_coco_val=4), num_workers=1)  # fmt: skip
        runners = {
            (v, path): Runner(data_dir, v, args.overrides, args.detector)
            for v in args.variants
            for path in paths
        }
        # the augmentations draw from Python's, NumPy's and torch's generators: seed all three, so that every
        # run of the script times the same batches
        seed_everything(0, workers=True, verbose=False)
        loader = iter(runners[(args.variants[0], "after")].dm.train_dataloader())
        batches = [next(loader) for _ in range(args.warmup + args.repeats)]
        times = {key: [] for key in runners}
        shares = {key: [] for key in runners}
        det_shares = {key: [] for key in runners}
        first_loss: dict[tuple[str, str], float] = {}
        # every row takes ``--block`` consecutive steps, then the next row (1: interleaved step by step)
        for start in range(0, len(batches), args.block):
            for (v, path), runner in runners.items():
                for i in range(start, min(start + args.block, len(batches))):
                    torch.manual_seed(i)  # the same sampled pairs and dropout masks for every row
                    with path_switches(path):
                        dt, edge_t, loss, det_t = runner.step(batches[i])
                    if i == 0:
                        first_loss[(v, path)] = loss
                    if i >= args.warmup:
                        times[(v, path)].append(dt)
                        shares[(v, path)].append(edge_t / dt)
                        det_shares[(v, path)].append(det_t / dt)
        val_batch = next(iter(runners[(args.variants[0], "after")].dm.val_dataloader()[0]))
        eval_times = {key: [] for key in runners}
        for i in range(args.warmup + args.repeats):
            for key, runner in runners.items():
                with path_switches(key[1]):
                    dt = runner.evaluate(val_batch)
                if i >= args.warmup:
                    eval_times[key].append(dt)
    med = {k: statistics.median(t) for k, t in times.items()}
    emed = {k: statistics.median(t) for k, t in eval_times.items()}
    task = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("task=")), "predcls")
    order = "interleaved step by step" if args.block == 1 else f"in blocks of {args.block} steps per row"
    print(f"stage-2 training step, synthetic CPU config, {task}, {args.threads} threads, median of {args.repeats}, "
          f"all rows {order} (ratios hold under load; absolute times only for this machine now)")  # fmt: skip
    bf = "bf16" in paths
    print(f"{'edge':<10}{'before (s)':>11}{'after (s)':>11}{'speed-up':>10}{'before × none':>15}"
          f"{'after × none':>14}{'f_E fwd share':>15}{'detector share':>16}{'|Δ loss| step 1':>17}"
          + (f"{'bf16 (s)':>10}{'bf16 speed-up':>15}{'bf16 × none':>13}{'bf16 Δ loss':>13}" if bf else ""))  # fmt: skip
    for v in args.variants:
        b, a = med[(v, "before")], med[(v, "after")]
        nb, na = med.get(("none", "before"), float("nan")), med.get(("none", "after"), float("nan"))
        share = statistics.median(shares[(v, "after")])
        det_share = statistics.median(det_shares[(v, "after")])
        dloss = abs(first_loss[(v, "before")] - first_loss[(v, "after")])
        row = (f"{v:<10}{b:>11.3f}{a:>11.3f}{b / a:>9.2f}×{b / nb:>15.2f}{a / na:>14.2f}{100 * share:>14.1f}%"
               f"{100 * det_share:>15.1f}%{dloss:>17.2e}")  # fmt: skip
        if bf:  # speed-up against the plain path; loss difference against the float32 current path
            h, nh = med[(v, "bf16")], med.get(("none", "bf16"), float("nan"))
            dl = abs(first_loss[(v, "bf16")] - first_loss[(v, "after")])
            row += f"{h:>10.3f}{b / h:>14.2f}×{h / nh:>13.2f}{dl:>13.2e}"
        print(row)
    n_val = val_batch["vg"][0].num_images
    print(f"\nevaluation forward, {n_val} val images, all ordered pairs")
    print(f"{'edge':<10}{'before (s)':>11}{'after (s)':>11}{'speed-up':>10}{'after × none':>14}"
          + (f"{'bf16 (s)':>10}{'bf16 speed-up':>15}" if bf else ""))  # fmt: skip
    for v in args.variants:
        b, a = emed[(v, "before")], emed[(v, "after")]
        na = emed.get(("none", "after"), float("nan"))
        row = f"{v:<10}{b:>11.3f}{a:>11.3f}{b / a:>9.2f}×{a / na:>14.2f}"
        if bf:
            row += f"{emed[(v, 'bf16')]:>10.3f}{b / emed[(v, 'bf16')]:>14.2f}×"
        print(row)
    if args.ablate:
        print("\nthe current path with one speed-up off: training step (s) and what the speed-up gains here "
              "(time without it / time with it; < 1: it slows this CPU down)")  # fmt: skip
        print(f"{'edge':<10}{'flag off':<26}{'step (s)':>10}{'gain':>8}{'eval (s)':>10}{'eval gain':>11}")
        for v in args.variants:
            for flag in args.ablate:
                t, e = med[(v, f"-{flag}")], emed[(v, f"-{flag}")]
                print(f"{v:<10}{flag:<26}{t:>10.3f}{t / med[(v, 'after')]:>7.2f}×{e:>10.3f}"
                      f"{e / emed[(v, 'after')]:>10.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
