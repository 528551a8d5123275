"""Mask AP of zero-shot transferred masks on the synthetic benchmark's VG-like test objects.

The synthetic benchmark hides the true masks of its VG-like test objects (``vg/vg_test_masks.json``), so the
quality of masks transferred from the COCO-like classes can be measured — something the paper could not do on
Visual Genome. For every test image, the GT boxes go through a trained detector's COCO mask head; the 80 (here
5) COCO channels are mixed into the VG channels with the similarity S (paper Eq. 3–4); each box's own-class
mask is pasted and scored with pycocotools against the hidden masks, for the novel classes (names that are not
COCO classes) and for all classes. Controls: S with its source columns shuffled (a derangement: every class
draws on a wrong source) and the uniform S (every source weighted equally).

    python scripts/eval_transfer.py DETECTOR.pt [--data data/synthetic] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sgseg.data.coco import CocoInstances
from sgseg.data.collate import collate
from sgseg.data.transforms import Resize
from sgseg.data.visual_genome import VisualGenome
from sgseg.evaluation import coco_mask_ap
from sgseg.models.detector.checkpoint import load_detector
from sgseg.models.masks import MaskTransfer, build_similarity
from sgseg.models.masks.similarity import load_word_vectors


def derangement(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    while True:
        p = torch.randperm(n, generator=g)
        if n < 2 or (p != torch.arange(n)).all():
            return p


@torch.no_grad()
def coco_logits_for_test(detector, vg: VisualGenome, size: int, max_size: int, batch: int = 16):
    """Per test image: (image id, GT labels, GT boxes in original pixels, COCO mask logits [N, S, M, M])."""
    resize = Resize(size, max_size)
    out = []
    for start in range(0, len(vg), batch):
        items = [resize(vg[i]) for i in range(start, min(start + batch, len(vg)))]
        images, targets = collate(items)
        feats = detector.features(images)
        logits = detector.mask_logits(feats, images, targets.boxes, targets.image_index).logits
        for b, it in enumerate(items):
            keep = targets.image_index == b
            out.append((int(it["image_id"]), vg[start + b]["boxes"], targets.labels[keep], logits[keep]))
    return out


def mask_ap(per_image, similarity: torch.Tensor, gt: dict, categories: set[int]) -> dict[str, float]:
    transfer = MaskTransfer(similarity)
    dets = []
    for image_id, boxes, labels, logits in per_image:
        probs = transfer(logits).sigmoid()[torch.arange(labels.numel()), labels - 1]
        keep = torch.tensor([int(c) in categories for c in labels], dtype=torch.bool)
        dets.append({"image_id": image_id, "scores": torch.ones(int(keep.sum())), "category_ids": labels[keep],
                     "mask_probs": probs[keep], "boxes": boxes[keep]})  # fmt: skip
    sub = dict(gt)
    sub["annotations"] = [a for a in gt["annotations"] if a["category_id"] in categories]
    sub["categories"] = [c for c in gt["categories"] if c["id"] in categories]
    return coco_mask_ap(sub, dets)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("detector", help="detector.pt written by stage 1 (or its Lightning .ckpt)")
    p.add_argument("--data", default="data/synthetic", help="synthetic benchmark root")
    p.add_argument(
        "--size", type=int, default=160, help="test-time shorter side (as data.loader.test_min_size)"
    )
    p.add_argument("--max-size", type=int, default=256)
    p.add_argument("--seeds", type=int, default=3, help="shuffled-S controls to average")
    args = p.parse_args(argv)
    root = Path(args.data)
    hidden = root / "vg" / "vg_test_masks.json"
    if not hidden.is_file():
        print(
            f"eval_transfer: {hidden} not found; --data must be a synthetic benchmark root", file=sys.stderr
        )
        return 1
    t0 = time.time()
    detector = load_detector(args.detector).eval()
    vg = VisualGenome(root / "vg", split="test", check_label_space=False, num_val=0)
    coco = CocoInstances(root / "coco", split="val", check_label_space=False)
    targets, sources = list(vg.object_classes), list(coco.class_names)
    vectors = load_word_vectors(next(root.glob("glove.*.txt")))
    real = build_similarity(targets, sources, vectors, aliases={})
    novel = {i + 1 for i, n in enumerate(targets) if n not in sources}
    every = set(range(1, len(targets) + 1))
    gt = json.loads(hidden.read_text())
    per_image = coco_logits_for_test(detector, vg, args.size, args.max_size)
    rows = {"real S": real, "uniform S": torch.full_like(real, 1.0 / real.shape[1])}
    results = {
        name: (mask_ap(per_image, s, gt, novel), mask_ap(per_image, s, gt, every)) for name, s in rows.items()
    }
    shuffled = [
        mask_ap(per_image, real[:, derangement(len(sources), k)], gt, novel) for k in range(args.seeds)
    ]
    print(f"transferred-mask AP on {len(vg)} synthetic VG test images, {len(novel)} novel classes "
          f"({time.time() - t0:.0f} s)")  # fmt: skip
    print(f"{'similarity':<22}{'novel AP':>10}{'novel AP50':>12}{'all AP':>10}{'all AP50':>10}")
    for name, (nov, allc) in results.items():
        print(f"{name:<22}{100 * nov['AP']:>10.1f}{100 * nov['AP50']:>12.1f}{100 * allc['AP']:>10.1f}"
              f"{100 * allc['AP50']:>10.1f}")  # fmt: skip
    ap = torch.tensor([s["AP"] for s in shuffled])
    ap50 = torch.tensor([s["AP50"] for s in shuffled])
    print(f"{f'shuffled S ({args.seeds} seeds)':<22}{100 * ap.mean():>7.1f}±{100 * ap.std():.1f}"
          f"{100 * ap50.mean():>8.1f}±{100 * ap50.std():.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
