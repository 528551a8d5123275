"""Detector metrics: VG box mAP@0.5 (VOC-style) and COCO box / mask AP (pycocotools).

Where this sits: the evaluation boundary of stage 1. :class:`sgseg.lit.detector_module.DetectorPretrainModule`
splits its flat ``Detections`` per image into the dicts below and calls these at the end of validation.

Per-image dicts (all tensors on any device; boxes xyxy, any pixel frame as long as GT and predictions agree):
predictions ``{"boxes": Float[n, 4], "labels": Long[n], "scores": Float[n]}`` (+ ``"masks": Bool/UInt8[n, h, w]``
full-image binary masks for mask AP); ground truth ``{"boxes", "labels"}`` (+ ``"masks"``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

# one pasting convention for the whole project (pixel centres, grid covering the box exactly: the inverse of
# sgseg.models.losses.project_masks_on_boxes); re-exported for the detector's validation
from sgseg.evaluation.coco_masks import paste_masks, run_cocoeval

__all__ = ["box_map", "coco_ap", "encode_masks", "paste_masks", "voc_ap"]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): area under the monotone (right-max) precision envelope."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    step = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[step + 1] - r[step]) * p[step + 1]))


def box_map(
    predictions: Sequence[dict[str, Tensor]],
    ground_truths: Sequence[dict[str, Tensor]],
    iou_thresh: float = 0.5,
) -> dict[str, object]:
    """VOC-style box mAP at one IoU threshold, averaged over the classes present in the ground truth.

    Per class: detections of all images sorted by descending score (ties: image order, then input order);
    each is a true positive if its best-IoU GT box of that class in its image has IoU >= ``iou_thresh`` and
    is not yet taken, else a false positive (a duplicate on a taken GT is a false positive). AP is
    :func:`voc_ap` of the cumulative precision/recall. Classes with detections but no GT are ignored.
    Returns ``{"map": float, "ap": {class: float}}``; no GT at all gives ``map = nan``.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"box_map: {len(predictions)} prediction dicts but {len(ground_truths)} ground-truth dicts"
        )
    classes = sorted({int(c) for gt in ground_truths for c in gt["labels"].tolist()})
    ap: dict[int, float] = {}
    for c in classes:
        scores, tp, image_of = [], [], []
        num_gt = 0
        for i, (pred, gt) in enumerate(zip(predictions, ground_truths)):
            gt_boxes = gt["boxes"][gt["labels"] == c].float().cpu()
            num_gt += len(gt_boxes)
            keep = pred["labels"] == c
            boxes, s = pred["boxes"][keep].float().cpu(), pred["scores"][keep].float().cpu()
            order = torch.sort(s, descending=True, stable=True).indices
            boxes, s = boxes[order], s[order]
            taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
            iou = box_iou(boxes, gt_boxes) if len(gt_boxes) and len(boxes) else None
            for j in range(len(boxes)):
                hit = False
                if iou is not None:
                    best, k = iou[j].max(0)
                    if best >= iou_thresh and not taken[k]:
                        taken[k] = hit = True
                tp.append(hit)
                scores.append(float(s[j]))
                image_of.append(i)
        if not scores:
            ap[c] = 0.0
            continue
        # the per-image greedy matching above already ran in score order; a global stable sort ranks them
        order = np.argsort(-np.asarray(scores), kind="stable")
        hits = np.asarray(tp, dtype=np.float64)[order]
        ctp = np.cumsum(hits)
        cfp = np.cumsum(1.0 - hits)
        ap[c] = voc_ap(ctp / num_gt, ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))
    return {"map": float(np.mean(list(ap.values()))) if ap else float("nan"), "ap": ap}


def encode_masks(masks: Tensor) -> list[dict]:
    """Bool/UInt8[n, h, w] binary masks → n COCO RLE dicts (compact enough to keep for a whole val set)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.to(torch.uint8).cpu().numpy().transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _rles(masks: Tensor | list[dict]) -> list[dict]:
    return masks if isinstance(masks, list) else encode_masks(masks)


def coco_ap(
    predictions: Sequence[dict[str, Tensor]],
    ground_truths: Sequence[dict[str, Tensor]],
    iou_type: str = "bbox",
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict[str, float]:
    """COCO AP (pycocotools) of in-memory predictions: ``{"ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"}``.

    iou_type: "bbox" or "segm" (then both dicts need ``masks``: full-image binary Bool/UInt8[n, h, w], or the
        list of their RLEs from :func:`encode_masks`).
    Labels are used as category ids as they are. image_sizes: (h, w) per image (default: mask shape, or the
    GT box extent for bbox). No GT at all gives nan everywhere (pycocotools' -1 is mapped to nan).
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"coco_ap: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    keys = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")
    images, annotations, results = [], [], []
    categories = set()
    for i, (pred, gt) in enumerate(zip(predictions, ground_truths)):
        if image_sizes is not None:
            h, w = image_sizes[i]
        elif iou_type == "segm" and isinstance(gt["masks"], Tensor):
            h, w = gt["masks"].shape[-2:]
        elif iou_type == "segm":
            raise ValueError("coco_ap: pass `image_sizes` when masks are given as RLEs")
        else:
            h = w = int(max(1.0, float(gt["boxes"].max()) if len(gt["boxes"]) else 1.0)) + 1
        images.append({"id": i, "height": int(h), "width": int(w)})
        gt_rles = _rles(gt["masks"]) if iou_type == "segm" else None
        for j, (box, label) in enumerate(zip(gt["boxes"].float().cpu().tolist(), gt["labels"].tolist())):
            x1, y1, x2, y2 = box
            ann = {
                "id": len(annotations) + 1,
                "image_id": i,
                "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
            if iou_type == "segm":
                ann["segmentation"] = gt_rles[j]
                ann["area"] = float(mask_utils.area(gt_rles[j]))
            annotations.append(ann)
            categories.add(int(label))
        boxes = pred["boxes"].float().cpu().tolist()
        pred_rles = _rles(pred["masks"]) if iou_type == "segm" else None
        for j, (box, label, score) in enumerate(zip(boxes, pred["labels"].tolist(), pred["scores"].tolist())):
            x1, y1, x2, y2 = box
            res = {
                "image_id": i,
                "category_id": int(label),
                "score": float(score),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            }
            if iou_type == "segm":
                res["segmentation"] = pred_rles[j]
            results.append(res)
    if not annotations:
        return dict.fromkeys(keys, float("nan"))
    results = [r for r in results if r["category_id"] in categories]
    if not results:
        return dict.fromkeys(keys, 0.0)
    gt_api = COCO()
    gt_api.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api.createIndex()
    stats = run_cocoeval(gt_api, results, iou_type)
    return {k: (v if v >= 0 else float("nan")) for k, v in zip(keys, stats.values())}
