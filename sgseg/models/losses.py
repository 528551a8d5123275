"""Pure loss functions of sgseg (no modules, no sampling, no state).

Where this sits: the detector (stage 1, paper Eq. 10: L_obj = L_rcnn + L_seg) samples anchors/proposals and
calls these; stage-2 losses (Eq. 11) live here too. Every function takes flat batch tensors, returns a
scalar that is differentiable w.r.t. its prediction inputs, and handles empty inputs on purpose (an image
with no GT box, a batch where sampling kept nothing): the result is then an exact zero that still carries
the graph (``pred.sum() * 0``), so DDP and the optimiser see every parameter every step.

Conventions follow torchvision's Faster/Mask R-CNN (so COCO-pretrained heads keep their meaning):
smooth-L1 with beta = 1/9, box loss summed over positives and divided by the number of sampled rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

SMOOTH_L1_BETA = 1.0 / 9.0


def rpn_loss(
    objectness_logits: Tensor,
    pred_deltas: Tensor,
    anchor_labels: Tensor,
    regression_targets: Tensor,
    sampled: Tensor,
) -> tuple[Tensor, Tensor]:
    """RPN objectness BCE and box smooth-L1 over the sampled anchors.

    objectness_logits: Float[A] anchors of the whole batch. pred_deltas: Float[A, 4] encoded (dx, dy, dw, dh).
    anchor_labels: Float[A] 1 = foreground, 0 = background (only sampled rows are read).
    regression_targets: Float[A, 4] encoded GT deltas (only foreground rows are read).
    sampled: Long[S] the anchors that enter the loss.
    Returns (objectness_loss, box_loss): BCE averaged over S; smooth-L1 summed over positive samples / S.
    """
    if sampled.numel() == 0:
        zero = objectness_logits.sum() * 0 + pred_deltas.sum() * 0
        return zero, zero
    logits = objectness_logits[sampled].float()
    labels = anchor_labels[sampled].to(logits.dtype)
    obj_loss = F.binary_cross_entropy_with_logits(logits, labels)
    pos = sampled[anchor_labels[sampled] > 0]
    box_loss = (
        F.smooth_l1_loss(
            pred_deltas[pos].float(), regression_targets[pos].float(), beta=SMOOTH_L1_BETA, reduction="sum"
        )
        / sampled.numel()
    )
    return obj_loss, box_loss


def fast_rcnn_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
) -> tuple[Tensor, Tensor]:
    """Fast R-CNN classification CE and class-specific box smooth-L1.

    class_logits: Float[P, C] (index 0 background). box_deltas: Float[P, C * 4] per-class encoded deltas.
    labels: Long[P] in 0..C-1. regression_targets: Float[P, 4] encoded GT deltas (read for labels > 0).
    Returns (cls_loss, box_loss): CE averaged over P; smooth-L1 of the GT class's deltas summed over
    foreground rows / P. P = 0 gives exact zeros attached to the graph.
    """
    p, c = class_logits.shape
    if box_deltas.shape != (p, 4 * c):
        raise ValueError(
            f"box_deltas must be Float[P, 4 * C] = ({p}, {4 * c}), got {tuple(box_deltas.shape)}"
        )
    if p == 0:
        zero = class_logits.sum() * 0 + box_deltas.sum() * 0
        return zero, zero
    cls_loss = F.cross_entropy(class_logits.float(), labels)
    fg = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(p, c, 4)[fg, labels[fg]]
    box_loss = (
        F.smooth_l1_loss(deltas.float(), regression_targets[fg].float(), beta=SMOOTH_L1_BETA, reduction="sum")
        / p
    )
    return cls_loss, box_loss


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """Crop-and-resize GT instance masks into box-relative ``size × size`` targets (Mask R-CNN's targets).

    gt_masks: UInt8/Bool/Float[N, H, W] in the padded batch frame. boxes: Float[P, 4] xyxy, same frame.
    gt_index: Long[P] row of ``gt_masks`` each box takes its target from.
    Returns Float[P, size, size] in [0, 1]: bilinear RoIAlign with ``aligned=True``, i.e. boxes are continuous
    extents and pixel k covers [k, k + 1) (the COCO box convention; torchvision's ``aligned=False`` would shift
    every target by half a pixel, which matters on small objects). Cell (i, j) covers the box's (i, j)-th
    ``1/size`` sub-rectangle; :func:`sgseg.evaluation.detection.paste_masks` is its inverse.
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([gt_index[:, None].to(boxes.dtype), boxes], dim=1).float()
    return roi_align(gt_masks[:, None].float(), rois, (size, size), 1.0, aligned=True)[:, 0]


def mask_rcnn_loss(
    mask_logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    gt_masks: Tensor,
    gt_index: Tensor,
) -> Tensor:
    """Per-pixel BCE of the GT class's mask channel against the GT mask projected into each box (L_seg).

    mask_logits: Float[P, C_m, M, M] for P positive boxes (C_m = 80 COCO channels, no background).
    boxes: Float[P, 4] xyxy the M × M grids cover. labels: Long[P] in 1..C_m (channel = label - 1).
    gt_masks: UInt8[N, H, W] instance masks in the padded frame. gt_index: Long[P] matched GT row.
    Returns the BCE averaged over P × M × M; P = 0 gives an exact zero attached to the graph.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    m = mask_logits.shape[-1]
    targets = project_masks_on_boxes(gt_masks, boxes, gt_index, m)
    picked = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels - 1]
    return F.binary_cross_entropy_with_logits(picked.float(), targets)
