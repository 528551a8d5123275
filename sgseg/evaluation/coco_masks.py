"""COCO mask AP (paper Table 2) via pycocotools, and pasting box-relative masks into the image.

Where this sits: evaluation of the COCO mask head (unrefined) and of the refined masks. The detector gives
``M x M`` mask probabilities per box (:class:`~sgseg.structures.InstanceMasks`); :func:`paste_masks` turns
them into full-image binary masks at threshold 0.5, :func:`coco_mask_ap` RLE-encodes them and runs
``COCOeval(iouType="segm")``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sgseg.ops.boxes import to_numpy

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def paste_masks(
    mask_probs: torch.Tensor | np.ndarray,
    boxes: torch.Tensor | np.ndarray,
    height: int,
    width: int,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Paste box-relative mask probabilities into the image and binarise them.

    mask_probs: Float[N, M, M] probabilities (after sigmoid), each grid covering its box exactly.
    boxes: Float[N, 4] xyxy in the pixels of the target image (continuous coordinates: pixel (x, y) is the
        unit square [x, x+1) x [y, y+1), its centre (x + 0.5, y + 0.5)).
    Returns Bool[N, height, width] on the device of ``mask_probs``: pixel (x, y) is foreground when the
    bilinear sample of the grid at the pixel centre (zero outside the grid, ``align_corners=False``) is
    ``> threshold`` (strict, as Mask R-CNN binarises).

    This is Mask R-CNN's pasting with the geometry of Detectron2's ``paste_masks_in_image`` (sampling at
    pixel centres) rather than torchvision's legacy integer-box resize, which shifts masks by up to a pixel:
    here an all-ones grid fills exactly the pixels whose centres lie inside its box.
    """
    masks = torch.as_tensor(mask_probs)
    boxes_t = torch.as_tensor(boxes, device=masks.device)
    if masks.dim() != 3:
        raise ValueError(f"paste_masks: mask_probs must be Float[N, M, M], got shape {tuple(masks.shape)}")
    if boxes_t.dim() != 2 or boxes_t.shape[1] != 4 or boxes_t.shape[0] != masks.shape[0]:
        raise ValueError(
            f"paste_masks: boxes must be Float[N, 4] with N = {masks.shape[0]}, got shape {tuple(boxes_t.shape)}"
        )
    n, mh, mw = masks.shape
    out = torch.zeros((n, int(height), int(width)), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    masks = masks.to(dtype)
    boxes_t = boxes_t.to(torch.float64)
    if not torch.isfinite(boxes_t).all():
        raise ValueError("paste_masks: boxes contain NaN/inf")
    for i, (x1, y1, x2, y2) in enumerate(boxes_t.tolist()):
        if x2 <= x1 or y2 <= y1:
            continue  # an empty box covers no pixel centre
        # the bilinear fringe reaches one grid cell past the box: sample there too (matters for threshold < 0.5)
        cw, ch = (x2 - x1) / mw, (y2 - y1) / mh
        px0, px1 = max(math.floor(x1 - cw), 0), min(math.ceil(x2 + cw), int(width))
        py0, py1 = max(math.floor(y1 - ch), 0), min(math.ceil(y2 + ch), int(height))
        if px1 <= px0 or py1 <= py0:
            continue
        gx = (torch.arange(px0, px1, dtype=torch.float64, device=masks.device) + 0.5 - x1) / (x2 - x1) * 2 - 1
        gy = (torch.arange(py0, py1, dtype=torch.float64, device=masks.device) + 0.5 - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].to(dtype)  # (1, h, w, [x, y])
        val = F.grid_sample(
            masks[i][None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[i, py0:py1, px0:px1] = val[0, 0] > threshold
    return out


def _load_gt(coco_gt_json: str | Path | Mapping | COCO) -> COCO:
    if isinstance(coco_gt_json, COCO):
        return coco_gt_json
    if isinstance(coco_gt_json, (str, Path)):
        path = Path(coco_gt_json)
        if not path.is_file():
            raise ValueError(
                f"COCO annotation file not found at {path}; pass a path, a loaded dict or a COCO object"
            )
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    if isinstance(coco_gt_json, Mapping):
        coco = COCO()
        # COCOeval rewrites GT polygons into RLE in place: work on a copy of the caller's dict
        coco.dataset = copy.deepcopy(dict(coco_gt_json))
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
    raise ValueError(
        f"coco_gt_json must be a path, a dict or a pycocotools COCO, got {type(coco_gt_json).__name__}"
    )


def _iter_detections(detections: Any) -> Iterable[tuple[int, Mapping[str, Any]]]:
    if isinstance(detections, Mapping):
        for image_id, det in detections.items():
            yield int(image_id), det
        return
    for i, det in enumerate(detections):
        if not isinstance(det, Mapping) or "image_id" not in det:
            raise ValueError(
                f"detections[{i}] must be a dict with an 'image_id' (or pass {{image_id: dict}})"
            )
        yield int(to_numpy(det["image_id"]).item()), det


def detections_to_coco_results(
    coco_gt: COCO, detections: Any, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """pycocotools result dicts (``image_id``, ``category_id``, RLE ``segmentation``, ``score``)."""
    results: list[dict[str, Any]] = []
    valid_cats = set(coco_gt.getCatIds())
    for image_id, det in _iter_detections(detections):
        where = f"detections for image_id {image_id}"
        if image_id not in coco_gt.imgs:
            raise ValueError(f"{where}: image_id is not in the COCO ground truth")
        height, width = int(coco_gt.imgs[image_id]["height"]), int(coco_gt.imgs[image_id]["width"])
        for key in ("scores", "category_ids"):
            if key not in det:
                raise ValueError(f"{where}: '{key}' is missing (keys given: {sorted(det)})")
        scores = to_numpy(det["scores"]).astype(np.float64).reshape(-1)
        cats = to_numpy(det["category_ids"]).reshape(-1)
        n = scores.shape[0]
        if cats.shape[0] != n:
            raise ValueError(f"{where}: 'category_ids' has {cats.shape[0]} entries, 'scores' {n}")
        if not np.isfinite(scores).all():
            raise ValueError(f"{where}: 'scores' contains NaN/inf")
        bad = [int(c) for c in cats.tolist() if int(c) not in valid_cats]
        if bad:
            raise ValueError(f"{where}: category id {bad[0]} is not a category of the COCO ground truth")
        if "masks" in det:
            masks = det["masks"]
            masks_t = (
                torch.as_tensor(masks)
                if isinstance(masks, torch.Tensor)
                else torch.from_numpy(np.asarray(masks))
            )
            if masks_t.dim() != 3 or masks_t.shape[0] != n or tuple(masks_t.shape[1:]) != (height, width):
                raise ValueError(
                    f"{where}: 'masks' must be [N, H, W] = [{n}, {height}, {width}] full-image masks, "
                    f"got {tuple(masks_t.shape)}"
                )
            binary = masks_t > threshold if masks_t.is_floating_point() else masks_t != 0
        elif "mask_probs" in det and "boxes" in det:
            binary = paste_masks(det["mask_probs"], det["boxes"], height, width, threshold)
            if binary.shape[0] != n:
                raise ValueError(f"{where}: 'mask_probs' has {binary.shape[0]} masks, 'scores' {n}")
        else:
            raise ValueError(f"{where}: give 'masks' [N, H, W] or 'mask_probs' [N, M, M] with 'boxes' [N, 4]")
        if n == 0:
            continue
        array = np.asfortranarray(binary.cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
        rles = mask_utils.encode(array)
        for rle, cat, score in zip(rles, cats.tolist(), scores.tolist()):
            results.append(
                {"image_id": image_id, "category_id": int(cat), "segmentation": rle, "score": score}
            )
    return results


def coco_mask_ap(
    coco_gt_json: str | Path | Mapping | COCO,
    detections: Any,
    *,
    threshold: float = 0.5,
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
    per_category: bool = False,
) -> dict[str, Any]:
    """COCO segmentation AP of instance masks, with pycocotools ``COCOeval(iouType="segm")``.

    coco_gt_json: path of a COCO instances json, its loaded dict (not modified), or a ``COCO`` object.
    detections: a list of per-image dicts with ``image_id``, or a dict ``{image_id: dict}``; each dict has
        ``scores`` Float[N], ``category_ids`` Long[N] (the json's category ids, e.g. 1..90 for COCO) and either
        ``masks`` [N, H, W] full-image masks (bool/int: non-zero is foreground; float: ``> threshold``) or
        ``mask_probs`` Float[N, M, M] box-relative probabilities with ``boxes`` Float[N, 4] xyxy in image
        pixels, pasted with :func:`paste_masks` at ``threshold``.
    image_ids: the images to score (pycocotools' ``params.imgIds``); default every image of the GT, so an
        image without detections counts its objects as missed.
    verbose: let pycocotools print its summary table (silenced by default).

    per_category: also return ``per_category`` ``{category id: {"AP", "AP50", "AP75"}}`` from the same
        evaluation (the accumulated precision of that category, all areas, 100 detections; -1.0 for a category
        without GT objects in the scored images).

    Returns ``AP, AP50, AP75, APs, APm, APl`` exactly as pycocotools' ``stats[0:6]``: fractions in [0, 1],
    and -1.0 for an area range without GT objects. No detections at all gives 0.0 (not an error).
    Crowd GT regions are pycocotools' business: a detection matching only a crowd region is ignored.
    """
    coco_gt = _load_gt(coco_gt_json)
    results = detections_to_coco_results(coco_gt, detections, threshold)
    return run_cocoeval(
        coco_gt, results, "segm", image_ids=image_ids, verbose=verbose, per_category=per_category
    )


def run_cocoeval(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    iou_type: str,
    *,
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
    per_category: bool = False,
) -> dict[str, Any]:
    """The project's one COCOeval run: ``{AP, AP50, AP75, APs, APm, APl}`` = pycocotools' ``stats[0:6]``.

    coco_gt: an indexed ``COCO``; results: pycocotools result dicts (``image_id``, ``category_id``, ``score``
    and ``bbox`` or ``segmentation``); iou_type: "bbox" or "segm"; image_ids: pycocotools' ``params.imgIds``
    (default every GT image). Values as pycocotools gives them (-1.0 for an area range without GT); an empty
    result list scores 0 where there is GT (``loadRes`` cannot take it, so an empty result set stands in).
    per_category: also return ``per_category`` (see :func:`coco_mask_ap`).
    """
    sink: contextlib.AbstractContextManager = (
        contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    )
    with sink:
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    out: dict[str, Any] = {key: float(v) for key, v in zip(AP_KEYS, evaluator.stats[:6])}
    if per_category:
        out["per_category"] = _per_category_ap(evaluator)
    return out


def _per_category_ap(evaluator: COCOeval) -> dict[int, dict[str, float]]:
    """AP, AP50, AP75 of each category from an accumulated ``COCOeval`` (area "all", the largest maxDets), the
    means pycocotools' ``summarize`` takes over all categories, taken over one."""
    precision = evaluator.eval["precision"]  # [T IoU thresholds, R recalls, K categories, A areas, M maxDets]
    thresholds = np.asarray(evaluator.params.iouThrs)
    rows = {"AP": slice(None), "AP50": np.flatnonzero(np.isclose(thresholds, 0.5)),
            "AP75": np.flatnonzero(np.isclose(thresholds, 0.75))}  # fmt: skip
    out: dict[int, dict[str, float]] = {}
    for k, cat in enumerate(evaluator.params.catIds):
        out[int(cat)] = {}
        for name, t in rows.items():
            p = precision[t, :, k, 0, -1]
            out[int(cat)][name] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return out
