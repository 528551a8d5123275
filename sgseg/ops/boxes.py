"""Box geometry used across the pipeline, written once: IoU, union boxes, frame changes, per-image indices.

Where this sits: below everything (imports only torch and numpy). The models (context NMS, pair sampling,
SGDet post-processing, edge grounding), the evaluation (the benchmark's "+1 pixel" IoU) and the Lightning
glue (boxes back to original pixels) call these instead of keeping their own copies.

Two IoU conventions, on purpose:

* :func:`box_iou` / :func:`paired_box_iou`: continuous pixels (width = x2 − x1), 0 for an empty union, any
  leading batch dims. ``torchvision.ops.box_iou`` computes the same numbers for 2-d non-degenerate inputs but
  takes no batch dims and gives nan for an empty union and negative areas for degenerate boxes, which the
  padded VCTree sequences and greedy label NMS meet.
* :func:`box_iou_plus1`: the VG150 benchmark evaluator's inclusive-pixel IoU (width = x2 − x1 + 1), in float32
  numpy in the reference's order, so threshold ties break as there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "box_iou",
    "box_iou_plus1",
    "boxes_to_original",
    "local_index",
    "paired_box_iou",
    "rescale_boxes",
    "to_numpy",
    "union_boxes",
]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of Float[..., n, 4] × Float[..., m, 4] xyxy → Float[..., n, m] (continuous pixels; 0 for empty unions)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(inter))


def paired_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of Float[..., 4] × Float[..., 4] xyxy → Float[...] (row k of ``a`` with row k of ``b``)."""
    return box_iou(a[..., None, :], b[..., None, :])[..., 0, 0]


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array, a torch tensor (any device) or a nested list.

    Half-precision tensors are upcast to float32 (numpy has no bfloat16); other dtypes are kept, so float32
    scores stay float32 and products of them round exactly as the reference evaluator's numpy code does.
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def box_iou_plus1(boxes1: Any, boxes2: Any) -> np.ndarray:
    """IoU matrix with the "+1 pixel" convention of the VG150 benchmark evaluator, in float32 as there.

    boxes1: Float[N, 4], boxes2: Float[M, 4], xyxy (numpy or torch). Returns Float32[N, M].
    width = x2 - x1 + 1 and height = y2 - y1 + 1, for each box and for the intersection, which is clamped at 0
    per side; IoU = inter / (area1 + area2 - inter). Every step is float32 in the reference's order (its
    ``bbox_overlaps`` → ``boxlist_iou`` on float32 BoxLists), so a match whose IoU lies within ~1e-7 of the
    threshold goes the same way as there (a float64 computation flips some: see tests/test_evaluator.py).
    With integer coordinates of moderate size every term is exact, so IoU = 0.5 comes out as exactly 0.5.
    """
    f32 = np.float32
    a = to_numpy(boxes1).astype(f32, copy=False).reshape(-1, 4)
    b = to_numpy(boxes2).astype(f32, copy=False).reshape(-1, 4)
    one = f32(1.0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.maximum(rb - lt + one, f32(0.0))
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def union_boxes(boxes: Tensor, pair_index: Tensor) -> Tensor:
    """Float[R, 4] xyxy: the smallest box holding both boxes of each pair (boxes: Float[N, 4] xyxy)."""
    s, o = boxes[pair_index[:, 0]], boxes[pair_index[:, 1]]
    return torch.cat([torch.minimum(s[:, :2], o[:, :2]), torch.maximum(s[:, 2:], o[:, 2:])], dim=1)


def rescale_boxes(boxes: Tensor, image_index: Tensor, from_sizes: Tensor, to_sizes: Tensor) -> Tensor:
    """Boxes from one pixel frame of their image to another: Float[N, 4] xyxy.

    from_sizes / to_sizes: [B, 2] (h, w) of each image in the two frames; image_index: Long[N]. x is scaled
    by w_to / w_from and y by h_to / h_from, in the boxes' dtype.
    """
    scale = to_sizes.to(boxes) / from_sizes.to(boxes)  # (sy, sx) per image
    s = scale[image_index]
    return boxes * torch.stack([s[:, 1], s[:, 0], s[:, 1], s[:, 0]], 1)


def boxes_to_original(boxes: Tensor, image_index: Tensor, images: Any) -> Tensor:
    """Boxes from resized-image pixels back to original-image pixels (the evaluator's frame).

    images: an :class:`sgseg.structures.ImageBatch` (its ``image_sizes`` and ``original_sizes``, Long[B, 2]).
    """
    return rescale_boxes(boxes, image_index, images.image_sizes, images.original_sizes)


def local_index(selected: Tensor, size: int) -> Tensor:
    """Long[size] mapping flat indices to their position in ``selected`` (Long[K]), −1 elsewhere.

    The per-image remapping of flat batch indices: with ``selected`` the objects of image b,
    ``local_index(selected, N)[pair_index]`` turns flat pairs into the image's own indices.
    """
    local = torch.full((size,), -1, dtype=torch.long, device=selected.device)
    local[selected] = torch.arange(selected.numel(), device=selected.device)
    return local
