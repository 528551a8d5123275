"""Stage-1 training step (and the RoI poolers alone) with torchvision's CPU RoIAlign kernel vs the separable
one (``sgseg/ops/roi_align.py``), in the same process.

Builds the synthetic CPU stage-1 configuration as ``python -m sgseg.train experiment=synthetic_detector`` does
(tiny joint detector; one step = one VG batch + one COCO batch, losses, backward, SGD step), makes two copies
with the same initial weights and times both on the same batches, ``--block`` steps per row in turn (load from
other processes hits both rows alike, so the ratio holds under load; absolute times only on a quiet machine).
The two copies' weights drift apart by float rounding (sampled RoIs then differ), so the rows are compared
on time, not on loss; the step-1 losses must agree to float tolerance (printed).

    python scripts/bench_roi_align.py [--data-dir data] [--repeats 30] [--block 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pytorch_lightning import seed_everything

import sgseg.ops.roi_align as roi_align_mod
from sgseg.data.synthetic import SyntheticConfig, generate
from sgseg.lit.build import build_datamodule, build_detector, coco_class_count
from sgseg.lit.detector_module import DetectorPretrainModule

CONF = Path(__file__).resolve().parent.parent / "conf"
ROWS = ("torchvision", "separable")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--block", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--data-dir", help="paths.data_dir of an existing synthetic benchmark (default: a small new one)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            data_dir = Path(tmp)
            generate(data_dir / "synthetic", SyntheticConfig(num_vg_train=80, num_vg_test=4, num_coco_train=80,
                                                             num_coco_val=4), num_workers=1)  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[f"paths.data_dir={data_dir}", "data.generate=null",
                                              "data.vg.num_val=8", "experiment=synthetic_detector"])  # fmt: skip
        dm = build_datamodule(cfg, with_coco=True)
        dm.setup("fit")
        torch.manual_seed(0)
        detector = build_detector(
            cfg, len(dm.dataset("vg", "train").object_classes), coco_class_count(cfg, dm)
        )
        optim = OmegaConf.to_container(cfg.detector.optim, resolve=True)
        modules = {row: DetectorPretrainModule(copy.deepcopy(detector), **optim) for row in ROWS}
        optimizers = {row: m.configure_optimizers()["optimizer"] for row, m in modules.items()}
        seed_everything(0, workers=True, verbose=False)  # the same batches (augmentations) in every run
        loader = iter(dm.train_dataloader())
        batches = [next(loader) for _ in range(args.warmup + args.repeats)]
        times: dict[str, list[float]] = {row: [] for row in ROWS}
        first: dict[str, float] = {}
        pool_times: dict[str, list[float]] = {row: [] for row in ROWS}
        for start in range(0, len(batches), args.block):
            for row in ROWS:
                roi_align_mod.SEPARABLE = row == "separable"
                module, opt = modules[row], optimizers[row]
                module.detector.train()
                for i in range(start, min(start + args.block, len(batches))):
                    torch.manual_seed(i)  # the same RPN / RoI sampling draws for both rows
                    t = time.perf_counter()
                    out = module.training_step(batches[i], i)
                    loss = out["loss"] if isinstance(out, dict) else out
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    dt = time.perf_counter() - t
                    first.setdefault(row, float(loss.detach()))
                    if i >= args.warmup:
                        times[row].append(dt)
        # the box pooler alone (forward + backward into the features) on one batch's sampled-size RoI set
        images, _ = batches[0]["vg"]
        det = modules["separable"].detector
        feats = {k: v.detach().requires_grad_() for k, v in det.features(images).items()}
        h, w = images.tensors.shape[-2:]
        g = torch.Generator().manual_seed(0)
        per_image = []
        for _ in range(images.num_images):
            xy = torch.rand(128, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
            wh = 4 + torch.rand(128, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
            per_image.append(torch.cat([xy, xy + wh], 1))
        frame = [(int(h), int(w))] * images.num_images
        for _ in range(args.warmup + args.repeats):
            for row in ROWS:
                roi_align_mod.SEPARABLE = row == "separable"
                t = time.perf_counter()
                out = det.box_roi_pool(feats, per_image, frame)
                torch.autograd.grad(out.sum(), list(feats.values()), allow_unused=True)
                pool_times[row].append(time.perf_counter() - t)
        roi_align_mod.SEPARABLE = True
    med = {row: statistics.median(t) for row, t in times.items()}
    pmed = {row: statistics.median(t[args.warmup :]) for row, t in pool_times.items()}
    print(f"stage-1 training step (VG + COCO batch), synthetic CPU config, {args.threads} threads, median of "
          f"{args.repeats}, rows in blocks of {args.block} steps (ratio holds under load; times only quiet)")  # fmt: skip
    print(f"{'':<34}{'torchvision (s)':>16}{'separable (s)':>15}{'speed-up':>10}")
    tv, sep = med["torchvision"], med["separable"]
    print(f"{'training step':<34}{tv:>16.3f}{sep:>15.3f}{tv / sep:>9.2f}×")
    tv, sep = pmed["torchvision"], pmed["separable"]
    print(f"{'box pooler fwd+bwd, 128 RoIs/img':<34}{tv:>16.4f}{sep:>15.4f}{tv / sep:>9.2f}×")
    print(f"step-1 loss: torchvision {first['torchvision']:.6f}, separable {first['separable']:.6f}")


if __name__ == "__main__":
    main()
