"""SGDet test post-processing of the objects, shared by every context model (MOTIF, VCTree).

Where this sits: stage 2, at evaluation, after the context encoder and the relation predictor and before the
predictions go to the evaluator (:class:`sgseg.models.scene_graph.SceneGraphModel` calls it). It follows the
reference post-processor (SGB ``roi_relation_inference.PostProcessor``, ubc-vision/segmentation-sg
``scenegraph_head/inference.py``) step for step, for every context model alike:

1. final label: from the context model's refined object logits (``ContextOutput.obj_logits``), by
   label-aware NMS (:func:`class_box_label_nms`, the reference ``obj_prediction_nms`` with
   ``TEST.RELATION.LATER_NMS_PREDICTION_THRES = 0.3``);
2. final score: the softmax probability of that label under the same logits;
3. final box: the detector's class-specific box regression of the detection for the final label (the
   reference's ``boxes_per_cls[i, label_i]``).

PredCls / SGCls keep the GT boxes and the context's labels and scores (the reference's ``use_gt_box`` branch
takes the argmax, which is what the context models return).

Differences from the reference, on purpose: IoUs here are in continuous pixels (``x2 - x1``, as everywhere in
the model); the reference's ``nms_overlaps`` adds one pixel to every side length. And when every class of a box
has been suppressed, the reference can leave it labelled background (0); here it takes its best remaining
class, since a detection's label is always 1..C_obj-1 downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sgseg.models.relation.sampling import all_pairs
from sgseg.ops.boxes import paired_box_iou

# reference TEST.RELATION.LATER_NMS_PREDICTION_THRES (SGB and ubc-vision/segmentation-sg defaults)
LATER_NMS_THRESHOLD = 0.3


@dataclass
class FinalObjects:
    """labels: Long[N] in 1..C_obj-1; scores: Float[N]; boxes: Float[N, 4] xyxy (resized-image pixels)."""

    labels: Tensor
    scores: Tensor
    boxes: Tensor


def class_box_label_nms(probs: Tensor, class_boxes: Tensor, image_index: Tensor, threshold: float) -> Tensor:
    """Greedy label-aware NMS with class-specific boxes (reference ``obj_prediction_nms``).

    In every image at once, repeat: among the boxes without a label, take the (box, class) of highest
    remaining probability (ties: lowest box index, then lowest class); the box gets that class, and that
    class's probability is zeroed for every box of the image whose box *for that class* overlaps the picked
    box's box for that class with IoU ≥ ``threshold``.

    probs: Float[N, C_obj] softmax probabilities (column 0, background, never chosen); class_boxes:
    Float[N, C_obj, 4] xyxy, the box of each detection regressed for each class; image_index: Long[N].
    Returns Long[N] labels in 1..C_obj-1.
    """
    n = probs.shape[0]
    device = probs.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if class_boxes.shape != (n, probs.shape[1], 4):
        raise ValueError(
            f"class_box_label_nms: class_boxes must be Float[N, C_obj, 4] = {(n, probs.shape[1], 4)}, got "
            f"{tuple(class_boxes.shape)}; pass Detections.class_boxes of the same detections"
        )
    probs = probs.detach().clone()
    probs[:, 0] = -1.0
    # Overlaps only inside an image: the ordered pairs of each image (memory Σ_b N_b² · C, not N² · C).
    pairs = all_pairs(image_index)
    over = paired_box_iou(class_boxes[pairs[:, 0]], class_boxes[pairs[:, 1]]) >= threshold  # Bool[P, C]
    labels = torch.zeros(n, dtype=torch.long, device=device)
    assigned = torch.zeros(n, dtype=torch.bool, device=device)
    num_images = int(image_index.max()) + 1
    flat = torch.arange(n, device=device)
    for _ in range(int(torch.bincount(image_index).max())):
        best_val, best_cls = probs.max(1)
        best_val = best_val.masked_fill(assigned, -2.0)
        img_best = torch.full((num_images,), -2.0, device=device).scatter_reduce(
            0, image_index, best_val, "amax"
        )
        is_cand = (~assigned) & (best_val == img_best[image_index])
        pick = torch.full((num_images,), n, device=device).scatter_reduce(
            0, image_index, torch.where(is_cand, flat, n), "amin"
        )
        pick = pick[pick < n]
        labels[pick] = best_cls[pick]
        picked_cls = torch.full((n,), -1, dtype=torch.long, device=device)
        picked_cls[pick] = best_cls[pick]
        c = picked_cls[pairs[:, 0]]
        hit = (c >= 0) & over[torch.arange(pairs.shape[0], device=device), c.clamp(min=0)]
        probs[pairs[hit, 1], c[hit]] = 0.0
        assigned[pick] = True
        probs[pick] = -1.0
    return labels


def postprocess_objects(
    obj_logits: Tensor,
    labels: Tensor,
    scores: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    class_boxes: Tensor | None,
    nms_threshold: float | None = LATER_NMS_THRESHOLD,
) -> FinalObjects:
    """The final SGDet objects (see the module docstring), identical for every context model.

    obj_logits: Float[N, C_obj] the context's refined logits; labels / scores: Long[N] / Float[N] the context's
    own labels and scores (kept when ``nms_threshold`` is None); boxes: Float[N, 4] the detections' boxes (kept
    when ``class_boxes`` is None); image_index: Long[N]; class_boxes: Float[N, C_obj, 4] or None.
    """
    if nms_threshold is not None:
        probs = obj_logits.float().softmax(-1)
        nms_boxes = (
            class_boxes if class_boxes is not None else boxes[:, None, :].expand(-1, probs.shape[1], 4)
        )
        labels = class_box_label_nms(probs, nms_boxes, image_index, nms_threshold)
        scores = probs.gather(1, labels[:, None]).squeeze(1) if labels.numel() else probs.new_zeros(0)
    if class_boxes is not None:
        boxes = class_boxes[torch.arange(labels.numel(), device=labels.device), labels]
    return FinalObjects(labels=labels, scores=scores, boxes=boxes)
