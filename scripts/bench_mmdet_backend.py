"""Stage-1 CPU step time of the two detector backends on the same synthetic configuration.

    python scripts/bench_mmdet_backend.py [--steps 5] [--warmup 2] [--threads 2]

Composes ``experiment=synthetic_detector`` twice, with ``detector=tiny`` (torchvision parts, the baseline)
and ``detector=mmdet_tiny`` (MMDetection, needs ``make install-mmdet``), builds each detector from its config
and times full training steps (VG batch + COCO batch: losses, backward, SGD step) on the same first
training batches of the synthetic set (4 VG + 4 COCO images). Prints the median seconds per step of each
and the ratio against the torchvision backend, measured in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent


def _cfg(detector: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=synthetic_detector", f"detector={detector}"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    from sgseg.lit.build import build_datamodule, build_detector, coco_class_count

    base = _cfg("tiny")
    dm = build_datamodule(base)
    dm.prepare_data()
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == args.warmup + args.steps:
            break
    num_vg = len(dm.dataset("vg", "train").object_classes)
    num_coco = coco_class_count(base, dm)

    rows = []
    for name in ("tiny", "mmdet_tiny"):
        torch.manual_seed(0)
        det = build_detector(_cfg(name), num_vg, num_coco).train()
        opt = torch.optim.SGD(det.parameters(), lr=0.002, momentum=0.9)
        times = []
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = sum(sum(det.training_losses(*batch[k], k).values()) for k in ("vg", "coco"))
            loss.backward()
            opt.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times), sum(p.numel() for p in det.parameters())))

    print(
        f"stage-1 training step, 4 VG + 4 COCO synthetic images, {args.threads} threads, median of {args.steps}"
    )
    print(f"{'detector':<12} {'params':>10} {'s/step':>8} {'ratio':>7}")
    for name, sec, params in rows:
        print(f"{name:<12} {params:>10,} {sec:>8.3f} {sec / rows[0][1]:>7.2f}")


if __name__ == "__main__":
    main()
