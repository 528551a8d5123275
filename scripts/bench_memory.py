"""Peak memory and time of stage 2 at VG150 scale: one training step and one test image per configuration.

Builds the real-data stage-2 experiment (``experiment=motif_resnext``: VG150 model sizes — MOTIF 512 hidden,
grounding heads 1024, pooling 4096, refinement head 256 × 4) on a full-width detector (ResNet-50-FPN or
ResNeXt-101-32x8d-FPN, random init: shapes, not accuracy), on the ``preset=vg150_shapes`` data read by the
real loaders, and for predcls / sgcls / sgdet × edge grounding none / gaussian measures:

* ``train``: one stage-2 step (losses + backward + SGD step) on ``--train-vg`` VG + ``--train-coco`` COCO
  images (the reference batch is 16 + 8; fewer on CPU);
* ``test40`` / ``test80``: one test image with 40 / 80 objects (SGDet: the detector's 40 / 80 best detections,
  ``score_thresh`` 0 so a random detector fills them; PredCls / SGCls: its GT boxes, topped up with random
  boxes to the count).

Each (detector, task, edge) runs in its own process (rows in the order test40, test80, train). Peak memory:
on CPU the process RSS sampled every millisecond during the row (weights and everything resident included);
on CUDA ``torch.cuda.max_memory_allocated`` reset per row. ``--old-path`` adds the pre-chunking SGDet test
path (every ordered pair, all pairs at once): measured at small pair counts and extrapolated linearly to 80
detections, and run once at 80 detections under an address-space cap (``--cap-gb``), where it fails.

    python scripts/bench_memory.py [--detectors resnet50_fpn resnext101_fpn] [--tasks predcls sgcls sgdet]
        [--edges none gaussian] [--train-vg 2 --train-coco 1] [--threads 2] [--old-path] [--device cpu]

Last line: ``sgdet_test_peak_gb=<X> (resnext101, gaussian, 80 detections)``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
GB = 1024**3


class PeakRSS:
    """Highest RSS of this process while the context is open, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _compose(detector: str, task: str, edge: str, data: Path, args, extra: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=motif_resnext", f"detector={detector}", f"task={task}", f"model/grounding/edge={edge}",
                "detector.checkpoint=unused", "detector.backbone.pretrained=null", "detector.net.score_thresh=0.0",
                f"paths.data_dir={data}", f"data.vectors={data}/glove.vg150_shapes.300d.txt",
                "data.vg.num_val=4", "data.loader.num_workers=0",
                f"data.loader.batch_size_vg={args.train_vg}", f"data.loader.batch_size_coco={args.train_coco}",
                *extra,
            ],
        )  # fmt: skip


def _build(cfg):
    from sgseg.lit.build import build_datamodule, build_detector, build_scene_graph_module, coco_class_count

    dm = build_datamodule(cfg)
    detector = build_detector(cfg, len(dm.dataset("vg", "train").object_classes), coco_class_count(cfg, dm))
    module, _ = build_scene_graph_module(cfg, dm, detector)  # as training builds it
    return dm, module


def _test_batch(dm, num_objects: int, task: str, seed: int = 0):
    """The test image with the most GT boxes (≤ 40), its boxes trimmed / topped up to ``num_objects``."""
    from sgseg.data.transforms import TransformedDataset
    from sgseg.lit.datamodule import _keyed_collate
    from sgseg.structures import Targets

    raw = dm.dataset("vg", "test")
    counts = [
        raw.get_groundtruth(i)["boxes"].shape[0] if hasattr(raw, "get_groundtruth") else 0
        for i in range(len(raw))
    ]
    i = max(range(len(raw)), key=lambda k: counts[k]) if any(counts) else 0
    ds = TransformedDataset(raw, dm._eval_transform())
    images, t = _keyed_collate([ds[i]], "vg", dm.size_divisible)["vg"]
    if task == "sgdet":
        return images, t
    g = torch.Generator().manual_seed(seed)
    n = t.boxes.shape[0]
    boxes, labels = t.boxes[:num_objects], t.labels[:num_objects]
    if n < num_objects:
        h, w = (int(v) for v in images.image_sizes[0])
        k = num_objects - n
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
        boxes = torch.cat([boxes, torch.cat([xy, xy + wh], 1)])
        labels = torch.cat([labels, torch.randint(1, 151, (k,), generator=g)])
    rel = t.relations[(t.relations[:, :2] < num_objects).all(1)]
    return images, Targets(boxes, labels, torch.zeros(num_objects, dtype=torch.long), rel)


def _peak(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t, torch.cuda.max_memory_allocated() / GB
    with PeakRSS() as p:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    return out, dt, p.peak / GB


def _step5(model, n_obj: int, device: str):
    """Step 5 alone (union features → edge grounding → predictor) on every ordered pair of ``n_obj`` random
    boxes in one 800 × 1067 image, with random FPN features, masks and context of the real shapes."""
    from collections import OrderedDict
    from types import SimpleNamespace

    from sgseg.models.relation.sampling import all_pairs
    from sgseg.structures import Detections, ImageBatch

    g = torch.Generator().manual_seed(0)
    h, w, hp, wp = 800, 1067, 800, 1088
    images = ImageBatch(
        torch.zeros(1, 3, hp, wp), torch.tensor([[h, w]]), torch.tensor([[h, w]]), torch.tensor([1])
    ).to(device)
    d = model.detector.backbone.out_channels
    features = OrderedDict(
        (name, torch.randn(1, d, hp // 2 ** (k + 2), wp // 2 ** (k + 2), generator=g).to(device))
        for k, name in enumerate([*model.detector.backbone.featmap_names, "pool"])
    )
    xy = torch.rand(n_obj, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    boxes = torch.cat([xy, xy + 40 + torch.rand(n_obj, 2, generator=g) * 300], 1).to(device)
    idx = torch.zeros(n_obj, dtype=torch.long, device=device)
    c_obj = model.predictor.num_obj_classes
    logits = torch.randn(n_obj, c_obj, generator=g).to(device)
    dets = Detections(boxes, idx, logits, logits[:, 1:].argmax(1) + 1, torch.rand(n_obj).to(device),
                      torch.randn(n_obj, 1024, generator=g).to(device))  # fmt: skip
    edge_probs = torch.rand(n_obj, model.transfer.num_target_classes, 28, 28, generator=g).to(device)
    ctx = SimpleNamespace(obj_logits=logits, obj_labels=dets.labels,
                          edge_context=torch.randn(n_obj, model.predictor.edge_dim, generator=g).to(device))  # fmt: skip
    pairs = all_pairs(idx)
    with torch.no_grad():
        out = model._relation_logits(features, images, dets, pairs, edge_probs, ctx, logits.softmax(-1))
    return SimpleNamespace(predictions=SimpleNamespace(boxes=boxes, pair_index=pairs, rel_logits=out))


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    extra = list(args.override)
    cfg = _compose(args.detector, args.task, args.edge, Path(args.data), args, extra)
    dm, module = _build(cfg)
    model = module.model.to(args.device)
    rows = []
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind.startswith("step5_"):
            model.eval()
            out, dt, peak = _peak(lambda n=int(kind[6:]): _step5(model, n, args.device), args.device)
            p = out.predictions
            rows.append({"kind": kind, "objects": int(p.boxes.shape[0]), "pairs": int(p.pair_index.shape[0]),
                         "peak_gb": peak, "sec_per_image": dt, "images": 1})  # fmt: skip
        elif kind.startswith("test"):
            n = int(kind[4:])
            model.eval()
            if args.task == "sgdet":
                model.detector.detections_per_img = n
            images, targets = _test_batch(dm, n, args.task)
            images, targets = images.to(args.device), targets.to(args.device)

            def step(images=images, targets=targets):
                with torch.no_grad():
                    return model(images, targets, args.task)

            out, dt, peak = _peak(step, args.device)
            p = out.predictions
            rows.append({"kind": kind, "objects": int(p.boxes.shape[0]), "pairs": int(p.pair_index.shape[0]),
                         "peak_gb": peak, "sec_per_image": dt, "images": 1})  # fmt: skip
        else:
            model.train()
            model.detector.detections_per_img = int(cfg.model.get("detections_per_image") or 40)
            opt = torch.optim.SGD(model.trainable_parameters(), lr=0.01, momentum=0.9)
            batch = next(iter(dm.train_dataloader()))
            batch = {k: (i.to(args.device), t.to(args.device)) for k, (i, t) in batch.items()}
            pairs = []

            def step(batch=batch, opt=opt, pairs=pairs):
                h = model.predictor.register_forward_hook(lambda m, a, o: pairs.append(a[1].shape[0]))
                loss = sum(module.losses(batch).values())
                h.remove()
                opt.zero_grad()
                loss.backward()
                opt.step()
                return loss

            _, dt, peak = _peak(step, args.device)
            nvg = batch["vg"][0].num_images
            ncoco = batch["coco"][0].num_images if "coco" in batch else 0
            rows.append({"kind": f"train {nvg}+{ncoco}", "objects": int(batch["vg"][1].boxes.shape[0]),
                         "pairs": int(sum(pairs)), "peak_gb": peak, "sec_per_image": dt / nvg,
                         "images": nvg})  # fmt: skip
        print("ROW " + json.dumps(rows[-1]), flush=True)
    print("MAXRSS_GB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, flush=True)


def _spawn(args, detector, task, edge, kinds, extra=(), cap_gb=None):
    cmd = [sys.executable, __file__, "--child", "--detector", detector, "--task", task, "--edge", edge,
           "--kinds", kinds, "--data", str(args.data), "--threads", str(args.threads), "--device", args.device,
           "--train-vg", str(args.train_vg), "--train-coco", str(args.train_coco)]  # fmt: skip
    for o in extra:
        cmd += ["--override", o]

    def limit():
        if cap_gb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (int(cap_gb * GB), int(cap_gb * GB)))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=limit)
    rows = [json.loads(line[4:]) for line in res.stdout.splitlines() if line.startswith("ROW ")]
    err = None
    if res.returncode != 0:
        tail = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        err = tail[-1][:160] if tail else f"exit {res.returncode}"
    return rows, err, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--detector", default="resnext101_fpn")
    p.add_argument("--task", default="sgdet")
    p.add_argument("--edge", default="gaussian")
    p.add_argument("--kinds", default="test40,test80,train")
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--detectors", nargs="+", default=["resnet50_fpn", "resnext101_fpn"])
    p.add_argument("--tasks", nargs="+", default=["predcls", "sgcls", "sgdet"])
    p.add_argument("--edges", nargs="+", default=["none", "gaussian"])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "vg150_shapes")
    p.add_argument("--train-vg", type=int, default=2)
    p.add_argument("--train-coco", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="test40,test80,train", help="rows per (detector, task, edge)")
    p.add_argument("--old-path", action="store_true")
    p.add_argument("--old-path-only", action="store_true", help="skip the table")
    p.add_argument("--new-path-80", action="store_true", help="with --old-path: chunked step 5 on 6320 pairs")
    p.add_argument("--cap-gb", type=float, default=10.0)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if not (args.data / "synthetic_config.json").is_file():
        subprocess.run([sys.executable, "-m", "sgseg.data.synthetic", "preset=vg150_shapes", f"out={args.data}"],
                       check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    unit = "GPU max allocated" if args.device == "cuda" else "CPU peak RSS"
    print(f"device={args.device} threads={args.threads} ({unit}; one run per row)")
    print(
        f"{'detector':<16}{'task':<9}{'edge':<10}{'row':<12}{'objects':>8}{'pairs':>8}{'peak GB':>9}{'s/img':>8}"
    )
    target = None
    for det in [] if args.old_path_only else args.detectors:
        for task in args.tasks:
            for edge in args.edges:
                rows, err, _ = _spawn(args, det, task, edge, args.rows)
                for r in rows:
                    print(f"{det:<16}{task:<9}{edge:<10}{r['kind']:<12}{r['objects']:>8}{r['pairs']:>8}"
                          f"{r['peak_gb']:>9.2f}{r['sec_per_image']:>8.1f}", flush=True)  # fmt: skip
                    if (det, task, edge, r["kind"]) == ("resnext101_fpn", "sgdet", "gaussian", "test80"):
                        target = r["peak_gb"]
                if err:
                    print(f"{det:<16}{task:<9}{edge:<10}FAILED: {err}", flush=True)
    if args.old_path or args.old_path_only:
        # The pre-chunking SGDet test path: every ordered pair (no overlap filter) through step 5 at once. Step 5
        # alone on random inputs of the real shapes (the detector's share is in the table above): the old path
        # at a few pair counts → per-pair slope → 80 detections; then the chunked path at 80 detections, and
        # the old one at 80 detections under an address-space cap.
        old = ["model.pair_chunk_size=1000000000"]
        kinds = ",".join(f"step5_{n}" for n in (6, 10, 14))
        rows, err, _ = _spawn(args, "resnext101_fpn", "sgdet", "gaussian", kinds, old)
        for r in rows:
            print(f"old path (unchunked) step 5: {r['objects']} detections, {r['pairs']} pairs, "
                  f"peak {r['peak_gb']:.2f} GB, {r['sec_per_image']:.1f} s", flush=True)  # fmt: skip
        if err:
            print(f"old path small runs FAILED: {err}", flush=True)
        if len(rows) >= 2:
            (x0, y0), (x1, y1) = (
                (rows[0]["pairs"], rows[0]["peak_gb"]),
                (rows[-1]["pairs"], rows[-1]["peak_gb"]),
            )
            slope = (y1 - y0) / (x1 - x0)
            print(f"old path: {slope * 1024:.2f} MB per pair → 80 detections (6320 pairs): "
                  f"~{y0 + slope * (6320 - x0):.1f} GB (linear extrapolation)", flush=True)  # fmt: skip
        rows, err, wall = _spawn(
            args, "resnext101_fpn", "sgdet", "gaussian", "step5_80", old, cap_gb=args.cap_gb
        )
        status = f"fits: peak {rows[0]['peak_gb']:.2f} GB" if rows else f"fails after {wall:.0f} s: {err}"
        print(f"old path step 5 at 80 detections under a {args.cap_gb:.0f} GB address-space cap: {status}",
              flush=True)  # fmt: skip
        if args.new_path_80:  # the chunked step 5 on all 6320 pairs (slow on CPU: ~9 TFLOP of f_E)
            rows, err, _ = _spawn(args, "resnext101_fpn", "sgdet", "gaussian", "step5_80")
            for r in rows:
                print(f"new path (auto chunks) step 5: {r['objects']} detections, {r['pairs']} pairs (no overlap "
                      f"filter), peak {r['peak_gb']:.2f} GB, {r['sec_per_image']:.1f} s", flush=True)  # fmt: skip
    print(f"sgdet_test_peak_gb={target:.2f} (resnext101, gaussian, 80 detections)" if target is not None
          else "sgdet_test_peak_gb=nan (resnext101, gaussian, 80 detections)")  # fmt: skip


if __name__ == "__main__":
    main()
