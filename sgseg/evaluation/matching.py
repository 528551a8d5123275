"""Box overlap in the scene-graph benchmark's "+1 pixel" convention, and input conversion for the evaluators.

Where this sits: the leaf of :mod:`sgseg.evaluation`. :mod:`sgseg.evaluation.scene_graph` builds its
object-match matrices from :func:`box_iou_plus1`; nothing here knows about relations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


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
