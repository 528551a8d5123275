"""Time of a full stage-2 training step (VG batch + COCO batch) per edge-grounding variant, and f_E's share.

Builds the synthetic CPU configuration exactly as ``python -m sgseg.train`` does (tiny detector, seg-grounded
MOTIF), on a small synthetic set written to a temporary folder, and times ``losses + backward + SGD step``
for each ``model.grounding.edge`` variant. Each row: median over ``--repeats`` steps (after ``--warmup``), the
ratio against the ``none`` variant measured in the same process, and the share of the step spent in the edge
grounding's forward (timed with hooks) and in mask-grounded edges overall ((t − t_none) / t).

    python scripts/bench_stage2.py [--repeats 8] [--threads 2] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from sgseg.data.synthetic import SyntheticConfig, generate
from sgseg.lit.build import build_datamodule, build_detector, build_scene_graph_model, stage_two_inputs
from sgseg.lit.scene_graph_module import SceneGraphModule

CONF = Path(__file__).resolve().parent.parent / "conf"


def time_variant(
    data_dir: Path, edge: str, overrides: list[str], repeats: int, warmup: int
) -> tuple[float, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.data_dir={data_dir}", "data.generate=null", "data.vg.num_val=8",
                       f"model.grounding.edge={edge}", *overrides],
        )  # fmt: skip
    dm = build_datamodule(cfg)
    dm.setup("fit")
    vg = dm._dataset("vg", "train")
    detector = build_detector(cfg, len(vg.object_classes), len(dm._dataset("coco", "train").class_names))
    inputs = stage_two_inputs(cfg, dm)
    model = build_scene_graph_model(cfg, detector, inputs)
    module = SceneGraphModule(model, "predcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1)
    opt = module.configure_optimizers()["optimizer"]
    edge_time = [0.0]

    def pre(*_):
        edge_time.append(time.perf_counter())

    def post(*_):
        edge_time[0] += time.perf_counter() - edge_time.pop()

    model.edge_grounding.register_forward_pre_hook(pre)
    model.edge_grounding.register_forward_hook(post)
    model.train()
    batches = iter(dm.train_dataloader())
    steps, shares = [], []
    for i in range(warmup + repeats):
        batch = next(batches)
        edge_time[0] = 0.0
        t = time.perf_counter()
        loss = sum(module.losses(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t
        if i >= warmup:
            steps.append(dt)
            shares.append(edge_time[0] / dt)
    return statistics.median(steps), statistics.median(shares)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["none", "avg", "union", "gaussian"])
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.loader.batch_size_vg=8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "synthetic", SyntheticConfig(num_vg_train=80, num_vg_test=4, num_coco_train=40,
                                                          num_coco_val=4), num_workers=1)  # fmt: skip
        rows = {
            v: time_variant(Path(tmp), v, args.overrides, args.repeats, args.warmup) for v in args.variants
        }
    base = rows.get("none", (float("nan"), 0.0))[0]
    print(f"stage-2 training step, synthetic CPU config, {args.threads} threads, median of {args.repeats}")
    print(f"{'edge':<10}{'step (s)':>10}{'× none':>9}{'f_E fwd share':>15}{'edge-grounding share':>22}")
    for v, (t, share) in rows.items():
        print(f"{v:<10}{t:>10.3f}{t / base:>9.2f}{100 * share:>14.1f}%{100 * max(t - base, 0) / t:>21.1f}%")


if __name__ == "__main__":
    main()
