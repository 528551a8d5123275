"""Zero-shot mask transfer (paper Sec. 2.3, Eq. 4): COCO mask logits → VG class mask logits.

Where this sits: after the (frozen) detector's COCO mask head — optionally after the refinement residual
(:mod:`sgseg.models.masks.refine`) is added to its logits — and before node/edge grounding, which consume the
``sigmoid`` of the transferred logits. The similarity S comes from :func:`sgseg.models.masks.similarity.build_similarity`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from sgseg.models.losses import project_masks_on_boxes


class MaskTransfer(nn.Module):
    """Applies S per pixel in logit space: ``vg[n, t] = Σ_s S[t, s] · coco[n, s]``.

    similarity: Float[T, S] (T target/VG channels, S source/COCO channels, no background in either); kept as a
    buffer (moves with ``.to``, saved in checkpoints, never trained).
    All T channels are kept for every box; which one is a box's "own" mask is decided downstream
    (:func:`own_mask_probs`).
    """

    def __init__(self, similarity: Tensor) -> None:
        super().__init__()
        if similarity.dim() != 2:
            raise ValueError(f"MaskTransfer: `similarity` must be Float[T, S], got {tuple(similarity.shape)}")
        self.register_buffer("similarity", similarity.float().clone())

    @property
    def num_target_classes(self) -> int:
        return self.similarity.shape[0]

    @property
    def num_source_classes(self) -> int:
        return self.similarity.shape[1]

    def forward(self, coco_mask_logits: Tensor) -> Tensor:
        """coco_mask_logits: Float[N, S, M, M] box-relative logits → Float[N, T, M, M] VG mask logits."""
        if coco_mask_logits.dim() != 4 or coco_mask_logits.shape[1] != self.num_source_classes:
            raise ValueError(
                f"MaskTransfer: `coco_mask_logits` must be Float[N, {self.num_source_classes}, M, M] (one channel "
                f"per source class of the similarity), got {tuple(coco_mask_logits.shape)}"
            )
        sim = self.similarity.to(coco_mask_logits.dtype)
        return torch.einsum("ts,nsij->ntij", sim, coco_mask_logits)


def own_mask_probs(
    vg_mask_probs: Tensor, labels: Tensor | None = None, label_probs: Tensor | None = None
) -> Tensor:
    """Each box's own mask: Float[N, M, M] in [0, 1].

    vg_mask_probs: Float[N, C_vg, M, M] transferred masks (after sigmoid).
    labels: Long[N] in 1..C_vg → the channel of the box's label; or
    label_probs: Float[N, C_vg + 1] (index 0 background) → the foreground-probability-weighted mix of channels
    (class uncertainty kept, as in SGCls/SGDet). Exactly one of the two must be given.
    """
    if (labels is None) == (label_probs is None):
        raise ValueError(
            "own_mask_probs: pass exactly one of `labels` (Long[N]) or `label_probs` (Float[N, C+1])"
        )
    n = vg_mask_probs.shape[0]
    if labels is not None:
        return vg_mask_probs[torch.arange(n, device=labels.device), labels - 1]
    fg = label_probs[:, 1:]
    if fg.shape[1] != vg_mask_probs.shape[1]:
        raise ValueError(
            f"own_mask_probs: `label_probs` has {fg.shape[1]} foreground classes, masks have {vg_mask_probs.shape[1]}"
        )
    weights = fg / fg.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("nc,ncij->nij", weights, vg_mask_probs)


def true_mask_probs(gt_masks: Tensor, boxes: Tensor, num_classes: int, size: int) -> Tensor:
    """The oracle in place of the transferred masks: Float[N, C_vg, M, M], every class channel of box n its
    object's true mask cropped to the box and resized to M × M (:func:`project_masks_on_boxes`, the frame of
    the detector's mask logits, so of the transferred masks).

    gt_masks: UInt8[N, H, W] the true masks of the N boxes' objects, in the padded batch frame (row n = box n).
    boxes: Float[N, 4] xyxy, same frame. The true mask does not depend on the class, so the own-mask choice
    downstream (GT label, or the label-probability mix in SGCls) returns it as it is.
    """
    if gt_masks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"true_mask_probs: {gt_masks.shape[0]} true masks for {boxes.shape[0]} boxes; row n must be box n's object"
        )
    index = torch.arange(boxes.shape[0], device=boxes.device)
    masks = project_masks_on_boxes(gt_masks, boxes, index, size)
    return masks[:, None].expand(-1, num_classes, -1, -1).contiguous()


def blur_masks(masks: Tensor, sigma: float) -> Tensor:
    """Float[..., M, M] masks blurred by a Gaussian of standard deviation ``sigma`` (in cells of the M × M grid;
    kernel 2·ceil(3σ) + 1, capped at the largest odd size ≤ M·2 - 1, edges reflected — torchvision's
    ``gaussian_blur``); ``sigma == 0`` returns ``masks`` unchanged."""
    if sigma == 0:
        return masks
    side = masks.shape[-1]
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)
    flat = masks.reshape(-1, 1, *masks.shape[-2:])
    return gaussian_blur(flat, [kernel, kernel], [sigma, sigma]).reshape(masks.shape)
