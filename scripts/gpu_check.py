"""What one CUDA GPU does with the paper-sized models: the table behind ``scripts/gpu_check.sh``.

Rows (median step time over ``--repeats`` after ``--warmup``, peak memory of the device, the ratio against the
row's baseline measured in this process):

- stage 1: the ResNeXt-101-FPN joint detector (``detector=resnext101_fpn``, no download: ImageNet weights are
  not loaded), one VG and one COCO batch of 8 images per step, bf16 autocast (Lightning's ``bf16-mixed``);
- stage 2: MOTIF on that (frozen) detector at the reference batch (16 VG + 8 COCO images a step,
  ``experiment=motif_resnext``), baseline (no grounding, no refinement) vs seg-grounded, bf16 autocast;
- SGDet test of one image with 40 detections (all 40 × 39 ordered pairs scored and evaluated).

Images are the synthetic benchmark drawn VG150-sized (sides 500-800 px, resized to 592/1000 as the reference).

    python scripts/gpu_check.py [--repeats 5] [--warmup 2]
    python scripts/gpu_check.py --smoke --device cpu     # the same code on the tiny CPU models (tests)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from sgseg.lit.build import (
    build_datamodule,
    build_detector,
    build_scene_graph_module,
    coco_class_count,
    prepare_data,
)
from sgseg.lit.detector_module import DetectorPretrainModule

CONF = Path(__file__).resolve().parent.parent / "conf"

VG150_SHAPED = [
    "data.generate.num_vg_train=48", "data.generate.num_vg_test=4", "data.generate.num_coco_train=24",
    "data.generate.num_coco_val=4", "data.vg.num_val=4", "+data.generate.min_image_size=500",
    "+data.generate.max_image_size=800", "+data.generate.min_objects=6", "+data.generate.max_objects=20",
    "data.loader.min_size=[592]", "data.loader.test_min_size=592", "data.loader.max_size=1000",
    "detector.backbone.pretrained=null", "model.label_vectors=null",  # random label tables at the VG150 width
]  # fmt: skip
SMOKE = [
    "detector=tiny", "data.generate.num_vg_train=12", "data.generate.num_vg_test=2",
    "data.generate.num_coco_train=8", "data.generate.num_coco_val=2", "data.vg.num_val=2",
    "detector.backbone.channels=[8,16,16,32]", "detector.backbone.out_channels=16",
    "detector.net.representation_size=64", "detector.net.mask_head_channels=[16]",
    "detector.net.mask_dim_reduced=16", "model.context.embed_dim=50", "model.context.hidden_dim=32",
    "model.grounding.hidden_dim=32", "model.grounding.out_dim=32", "model.predictor.pooling_dim=32",
    "model.refine_head.hidden=16", "model.refine_head.num_convs=1",
]  # fmt: skip
BASELINE = ["model/grounding/node=none", "model/grounding/edge=none", "model/refine=off"]


def _cfg(data_dir: Path, smoke: bool, *extra: str):
    base = (
        SMOKE if smoke else ["experiment=motif_resnext", "data=synthetic", "trainer=default", *VG150_SHAPED]
    )
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train", overrides=[*base, f"paths.data_dir={data_dir}", "paths.output_dir=unused", *extra]
        )


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (images.to(device), targets.to(device)) for k, (images, targets) in batch.items()}


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        return (
            torch.cuda.max_memory_allocated(self.device) / 2**30
            if self.device.type == "cuda"
            else float("nan")
        )


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _steps(step, batches, timer: _Timer, repeats: int, warmup: int) -> tuple[float, float]:
    times = []
    timer.reset_peak()
    for i in range(warmup + repeats):
        batch = next(batches)
        timer.sync()
        t = time.perf_counter()
        step(batch)
        timer.sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times), timer.peak_gib()


def stage1(cfg, device, timer, args) -> tuple[float, float]:
    dm = build_datamodule(cfg)
    dm.setup("fit")
    detector = build_detector(cfg, len(dm.dataset("vg", "train").object_classes), coco_class_count(cfg, dm))
    if cfg.get("compile"):
        detector.backbone.compile(dynamic=True)
    module = DetectorPretrainModule(detector.to(device), lr=0.001, warmup_iters=1).train()
    opt = module.configure_optimizers()["optimizer"]

    def step(batch):
        with _autocast(device, args.bf16):
            loss = module.training_step(_to(batch, device), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _steps(step, _cycle(dm), timer, args.repeats, args.warmup)


def _cycle(dm):
    while True:
        yield from dm.train_dataloader()


def _stage2_module(cfg, device):
    dm = build_datamodule(cfg)
    dm.setup("fit")
    detector = build_detector(cfg, len(dm.dataset("vg", "train").object_classes), coco_class_count(cfg, dm))
    module, _ = build_scene_graph_module(cfg, dm, detector)  # as training builds it
    module.to(device)
    if cfg.get("compile"):
        module.model.detector.backbone.compile(dynamic=True)
    return dm, module


def stage2(cfg, device, timer, args) -> tuple[float, float]:
    dm, module = _stage2_module(cfg, device)
    module.train()
    opt = module.configure_optimizers()["optimizer"]

    def step(batch):
        with _autocast(device, args.bf16):
            loss = sum(module.losses(_to(batch, device)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _steps(step, _cycle(dm), timer, args.repeats, args.warmup)


def sgdet_one_image(cfg, device, timer, args) -> tuple[float, float, int]:
    dm, module = _stage2_module(cfg, device)
    module.eval()
    batch = next(iter(dm.test_dataloader()[0]))
    counts = []

    def step(b):
        with torch.no_grad(), _autocast(device, args.bf16):
            res = module._eval_step(_to(b, device))
        counts.append(res.predictions.boxes.shape[0])

    t, mem = _steps(step, iter(lambda: batch, None), timer, args.repeats, args.warmup)
    return t, mem, counts[-1]


class _Rows(list):
    """The table's rows, each also printed (flushed) the moment it is measured: a run cut off by a time limit
    still shows the rows it finished."""

    def append(self, row) -> None:
        super().append(row)
        what, t, m, r = row
        print(f"measured: {what}: step {t:.3f} s, peak {m:.2f} GiB, ratio {r:.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--smoke", action="store_true", help="tiny models and images (checks the code, not the GPU)"
    )
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast (default: on for CUDA, off for --device cpu, where PyTorch's oneDNN LSTM fails under "
        "bf16 autocast on CPUs without AVX-512)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="also time the steps with compile=true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    torch.set_flush_denormal(True)  # as the runners do (sgseg.lit.build.configure_torch)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # self.log outside a Trainer, etc.
    device = torch.device(args.device)
    if args.bf16 is None:
        args.bf16 = device.type == "cuda"
    timer = _Timer(device)
    rows = _Rows()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (v1, c1), (v2, c2) = ((2, 2), (2, 2)) if args.smoke else ((8, 8), (16, 8))
        s1 = [f"data.loader.batch_size_vg={v1}", f"data.loader.batch_size_coco={c1}"]
        s2 = [f"data.loader.batch_size_vg={v2}", f"data.loader.batch_size_coco={c2}"]
        prepare_data(_cfg(data, args.smoke))
        t, m = stage1(_cfg(data, args.smoke, *s1), device, timer, args)
        rows.append((f"stage 1 detector step (VG {v1} + COCO {c1})", t, m, 1.0))
        t0, m0 = stage2(_cfg(data, args.smoke, "task=sgcls", *s2, *BASELINE), device, timer, args)
        rows.append((f"stage 2 MOTIF baseline step (VG {v2} + COCO {c2})", t0, m0, 1.0))
        t1, m1 = stage2(_cfg(data, args.smoke, "task=sgcls", *s2), device, timer, args)
        rows.append(("stage 2 MOTIF seg-grounded step", t1, m1, t1 / t0))
        if args.compile:  # warm-up steps include the compilation
            t, m = stage1(_cfg(data, args.smoke, "compile=true", *s1), device, timer, args)
            rows.append(("stage 1, backbone compiled (vs. eager)", t, m, t / rows[0][1]))
            t, m = stage2(_cfg(data, args.smoke, "task=sgcls", "compile=true", *s2), device, timer, args)
            rows.append(("stage 2 seg-grounded, backbone compiled (vs. eager)", t, m, t / t1))
        det = ["task=sgdet", "data.loader.eval_batch_size=1", "detector.net.detections_per_img=40",
               "detector.net.score_thresh=0.0"]  # fmt: skip
        t, m, n = sgdet_one_image(_cfg(data, args.smoke, *det), device, timer, args)
        rows.append((f"SGDet test, 1 image, {n} detections", t, m, 1.0))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"\n{name}, {'bf16 autocast' if args.bf16 else 'fp32'}, median of {args.repeats} after {args.warmup}"
    )
    print(f"| {'what':<46} | {'step (s)':>9} | {'peak GiB':>8} | {'ratio':>5} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 10}|{'-' * 7}|")
    for what, t, m, r in rows:
        print(f"| {what:<46} | {t:9.3f} | {m:8.2f} | {r:5.2f} |")


if __name__ == "__main__":
    main()
