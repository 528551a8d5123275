"""Mask AP of zero-shot transferred masks on the synthetic benchmark's VG-like test objects.

The synthetic benchmark hides the true masks of its VG-like test objects (``vg/vg_test_masks.json``), so the
quality of masks transferred from the COCO-like classes can be measured — something the paper could not do on
Visual Genome. For every test image, the GT boxes go through a trained detector's COCO mask head; the 80 (here
5) COCO channels are mixed into the VG channels with the similarity S (paper Eq. 3–4); each box's own-class
mask is pasted and scored with pycocotools against the hidden masks, for the novel classes (names that are not
COCO classes) and for all classes, overall and per class (a markdown table). Controls: S with its source
columns shuffled (``shuffled_sources``, the derangement that ``model.mask_source=shuffled`` trains with: every
class draws on a wrong source) and the uniform S (every source weighted equally).

    python scripts/eval_transfer.py DETECTOR.pt [--data data/synthetic] [--runs 3] [--truth visible|amodal]

``--softness`` prints, instead of the AP, how soft the transferred masks are next to the true ones in the frame
grounding reads them (each GT box's M × M grid): the mean of 2·min(m, 1 − m) over the grid (0 for a binary
mask, 1 for one of 0.5 everywhere) of the transferred own-class masks and of the true masks blurred by a
Gaussian of σ cells (``model.oracle_blur``: σ = 0, 1, 2, 3), and the mean |transferred − true| per σ — which
σ of the soft oracle makes the true masks look most like the transferred ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sgseg.data.coco import CocoInstances
from sgseg.data.collate import collate
from sgseg.data.transforms import Resize
from sgseg.data.visual_genome import VisualGenome
from sgseg.evaluation import coco_mask_ap
from sgseg.models.detector.checkpoint import load_detector
from sgseg.models.masks import (
    MaskTransfer,
    blur_masks,
    build_similarity,
    shuffled_sources,
    true_mask_probs,
)
from sgseg.models.masks.similarity import load_word_vectors


@torch.no_grad()
def _mask_logits_batches(detector, vg: VisualGenome, size: int, max_size: int, batch: int):
    """Per batch of test images (resized for the detector): (first index, items, targets, COCO mask logits of the
    GT boxes [N, S, M, M])."""
    resize = Resize(size, max_size)
    for start in range(0, len(vg), batch):
        items = [resize(vg[i]) for i in range(start, min(start + batch, len(vg)))]
        images, targets = collate(items)
        feats = detector.features(images)
        logits = detector.mask_logits(feats, images, targets.boxes, targets.image_index).logits
        yield start, items, targets, logits


def coco_logits_for_test(detector, vg: VisualGenome, size: int, max_size: int, batch: int = 16):
    """Per test image: (image id, GT labels, GT boxes in original pixels, COCO mask logits [N, S, M, M])."""
    out = []
    for start, items, targets, logits in _mask_logits_batches(detector, vg, size, max_size, batch):
        for b, it in enumerate(items):
            keep = targets.image_index == b
            out.append((int(it["image_id"]), vg[start + b]["boxes"], targets.labels[keep], logits[keep]))
    return out


@torch.no_grad()
def softness_table(
    detector,
    vg: VisualGenome,
    similarity: torch.Tensor,
    size: int,
    max_size: int,
    sigmas: tuple[float, ...],
    batch: int = 16,
) -> list[tuple[str, float, float]]:
    """Rows (masks, softness, mean |transferred − these|) over every test object's M × M box grid; ``vg`` must
    carry the true masks (``true_masks=``). Softness: mean of 2·min(m, 1 − m)."""
    transfer = MaskTransfer(similarity)
    soft = {sigma: [0.0, 0.0] for sigma in sigmas}  # σ → [sum softness, sum |transferred − true|]
    transferred, cells = 0.0, 0
    for _, _, targets, logits in _mask_logits_batches(detector, vg, size, max_size, batch):
        n = targets.labels.numel()
        probs = transfer(logits).sigmoid()[torch.arange(n), targets.labels - 1]  # [N, M, M] own class
        true = true_mask_probs(targets.masks, targets.boxes, 1, probs.shape[-1])[:, 0]
        transferred += float((2 * torch.minimum(probs, 1 - probs)).sum())
        cells += probs.numel()
        for sigma in sigmas:
            t = blur_masks(true, sigma)
            soft[sigma][0] += float((2 * torch.minimum(t, 1 - t)).sum())
            soft[sigma][1] += float((probs - t).abs().sum())
    rows = [("transferred (own class)", transferred / cells, 0.0)]
    for sigma, (sm, l1) in soft.items():
        rows.append((f"true, blurred σ={sigma:g}" if sigma else "true (sharp)", sm / cells, l1 / cells))
    return rows


def mask_ap(per_image, similarity: torch.Tensor, gt: dict, categories: set[int]) -> dict[str, Any]:
    """Mask AP of the transferred own-class masks over ``categories``: overall, and ``per_category`` (VG label →
    AP, AP50, AP75) from the same pycocotools evaluation."""
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
    return coco_mask_ap(sub, dets, per_category=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("detector", help="detector.pt written by stage 1 (or its Lightning .ckpt)")
    p.add_argument("--data", default="data/synthetic", help="synthetic benchmark root")
    p.add_argument(
        "--size", type=int, default=160, help="test-time shorter side (as data.loader.test_min_size)"
    )
    p.add_argument("--max-size", type=int, default=256)
    p.add_argument("--seeds", type=int, default=3, help="shuffled-S controls to average")
    p.add_argument(
        "--truth",
        choices=("visible", "amodal"),
        default="visible",
        help="score against the objects' visible true masks (vg_test_masks.json) or their amodal masks "
        "(vg_test_amodal_masks.json, occluded parts included)",
    )
    p.add_argument(
        "--softness", action="store_true", help="print the masks' softness table instead of the AP"
    )
    args = p.parse_args(argv)
    root = Path(args.data)
    hidden = root / "vg" / ("vg_test_masks.json" if args.truth == "visible" else "vg_test_amodal_masks.json")
    if not hidden.is_file():
        print(
            f"eval_transfer: {hidden} not found; --data must be a synthetic benchmark root (amodal masks: "
            "generated since the amodal oracle row exists; regenerate with force=true)",
            file=sys.stderr,
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
    if args.softness:
        with_masks = VisualGenome(root / "vg", split="test", check_label_space=False, num_val=0,
                                  true_masks=hidden.name.replace("test", "{split}"))  # fmt: skip
        rows = softness_table(detector, with_masks, real, args.size, args.max_size, (0.0, 1.0, 2.0, 3.0))
        print(f"softness of the masks grounding reads, {len(vg)} synthetic VG test images, {args.truth} truth "
              f"({time.time() - t0:.0f} s)")  # fmt: skip
        print("| masks | softness 2·min(m, 1 − m) | mean abs(transferred − these) |\n| --- | ---: | ---: |")
        for name, softness, l1 in rows:
            print(f"| {name} | {softness:.3f} | {l1:.3f} |")
        return 0
    gt = json.loads(hidden.read_text())
    per_image = coco_logits_for_test(detector, vg, args.size, args.max_size)
    rows = {"real S": real, "uniform S": torch.full_like(real, 1.0 / real.shape[1])}
    results = {
        name: (mask_ap(per_image, s, gt, novel), mask_ap(per_image, s, gt, every)) for name, s in rows.items()
    }
    shuffled = [mask_ap(per_image, shuffled_sources(real, k), gt, novel) for k in range(args.seeds)]
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
    print()
    print(per_class_table(targets, sources, real, novel, results, shuffled))
    return 0


def _ap_cell(res: dict[str, Any], label: int) -> str:
    ap = res["per_category"].get(label, {"AP": -1.0, "AP50": -1.0})
    return "—" if ap["AP"] < 0 else f"{100 * ap['AP']:.1f} ({100 * ap['AP50']:.1f})"


def per_class_table(
    targets: list[str], sources: list[str], real: torch.Tensor, novel: set[int], results: dict, shuffled: list
) -> str:
    """Markdown: per VG class, its top source under the real S and the mask AP (AP50) of each similarity
    (novel classes from the novel-class evaluation, the others from the all-class one; the shuffled S, mean AP
    over its derangements, is evaluated on the novel classes only)."""
    lines = [
        "| class | novel | top source (weight) | real S AP (AP50) | shuffled S AP | uniform S AP (AP50) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for label, name in enumerate(targets, start=1):
        part = 0 if label in novel else 1
        top = int(real[label - 1].argmax())
        shuf = [s["per_category"][label]["AP"] for s in shuffled if label in s["per_category"]]
        shuf_cell = f"{100 * sum(shuf) / len(shuf):.1f}" if part == 0 and shuf and min(shuf) >= 0 else "—"
        lines.append(
            f"| {name} | {'yes' if part == 0 else 'no'} | {sources[top]} ({float(real[label - 1, top]):.2f}) | "
            f"{_ap_cell(results['real S'][part], label)} | {shuf_cell} | "
            f"{_ap_cell(results['uniform S'][part], label)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
