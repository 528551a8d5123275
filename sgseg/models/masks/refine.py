"""Mask refinement f_M' (paper Sec. 2.6, Eq. 8–9): m̂_j = m_j + f_M'(z^o_j), in logit space.

Where this sits: stage 2, between the frozen detector's COCO mask head and the zero-shot transfer. The context
model's per-object feature z^o_j is broadcast over the RoI grid, fused with the object's RoI feature map, and a
Mask R-CNN-style conv head predicts a residual on the 80 COCO mask logits; the refined logits then go through
:class:`~sgseg.models.masks.transfer.MaskTransfer` (:class:`~sgseg.models.scene_graph.SceneGraphModel` chains the
two). The head's last
layer starts at zero, so training starts exactly from the transferred masks. It is trained on COCO images only,
with :func:`refinement_loss` (per-pixel BCE on the GT class channel). Config group ``model/refine=on|off``
(``refinement=None`` in :class:`~sgseg.models.scene_graph.SceneGraphModel`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from sgseg.models.grounding.concat_conv import cat_channels, cpu_bf16_convs


class MaskRefinement(nn.Module):
    """f_M': [RoI features ⊕ broadcast context] → ``num_convs`` × (3 × 3 conv + ReLU) → 2 × 2 deconv + ReLU →
    1 × 1 conv to ``num_classes`` residual logits (zero-initialised).

    in_channels: D of the RoI maps (Float[N, D, R, R], R = roi_size, 14 as the mask head's input).
    context_dim: Dc of the context feature z^o. num_classes: mask channels refined (80 COCO).
    hidden: conv width (Mask R-CNN 256). The output side is 2·roi_size (28).
    """

    def __init__(
        self,
        in_channels: int,
        context_dim: int,
        num_classes: int,
        hidden: int = 256,
        num_convs: int = 4,
        roi_size: int = 14,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"MaskRefinement: `num_convs` must be ≥ 1, got {num_convs}")
        self.in_channels = in_channels
        self.context_dim = context_dim
        self.num_classes = num_classes
        self.roi_size = roi_size
        convs = []
        width = in_channels + context_dim
        for _ in range(num_convs):
            convs += [nn.Conv2d(width, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            width = hidden
        self.convs = nn.Sequential(*convs)
        self.deconv = nn.ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(hidden, num_classes, kernel_size=1)
        for m in [*self.convs, self.deconv]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Zero residual at step 0: refined masks == transferred masks until training moves them.
        nn.init.zeros_(self.predictor.weight)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, roi_features: Tensor, context: Tensor) -> Tensor:
        """roi_features: Float[N, D, R, R]; context: Float[N, Dc] (z^o, one row per object).

        Returns Float[N, num_classes, 2R, 2R] residual logits, box-relative.
        """
        r = self.roi_size
        if roi_features.dim() != 4 or tuple(roi_features.shape[1:]) != (self.in_channels, r, r):
            raise ValueError(
                f"MaskRefinement: `roi_features` must be Float[N, {self.in_channels}, {r}, {r}], "
                f"got {tuple(roi_features.shape)}"
            )
        if tuple(context.shape) != (roi_features.shape[0], self.context_dim):
            raise ValueError(
                f"MaskRefinement: `context` must be Float[{roi_features.shape[0]}, {self.context_dim}] (one context "
                f"feature per RoI), got {tuple(context.shape)}"
            )
        ctx = context.to(roi_features.dtype)[:, :, None, None].expand(-1, -1, r, r)
        x = cat_channels([roi_features, ctx])  # channels-last on CPU: the convs follow its layout
        # bf16 convs on CPU when switched on; float32 residual logits either way
        with cpu_bf16_convs(x.device):
            x = self.predictor(F.relu(self.deconv(self.convs(x))))
        return x.to(roi_features.dtype).contiguous()


def crop_masks_to_boxes(gt_masks: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Binary targets in each box's frame: Float[N, size, size] in {0, 1}.

    gt_masks: UInt8/Bool[N, H, W] instance masks in the image frame of ``boxes`` (Float[N, 4] xyxy, pixels).
    RoIAlign of each mask over its own box (``aligned=True``: pixel k covers [k, k + 1)), thresholded at 0.5 —
    the Mask R-CNN target.
    """
    n = gt_masks.shape[0]
    if n == 0:
        return gt_masks.new_zeros(0, size, size, dtype=torch.float32)
    rois = torch.cat([torch.arange(n, device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1).float()
    crops = roi_align(
        gt_masks[:, None].float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True
    )
    return (crops[:, 0] >= 0.5).float()


def refinement_loss(mask_logits: Tensor, labels: Tensor, gt_masks: Tensor, boxes: Tensor) -> Tensor:
    """Per-pixel BCE of the refined COCO mask logits on each box's GT class channel (Mask R-CNN mask loss).

    mask_logits: Float[N, C, M, M] box-relative logits (C = 80 COCO channels).
    labels: Long[N] 1-based COCO labels (channel ``labels - 1``).
    gt_masks: either UInt8/Bool[N, H, W] in the image frame (cropped to ``boxes`` and resized to M × M with
    RoIAlign here), or Float[N, M, M] targets already in the box frame (a floating dtype means "already
    cropped").
    boxes: Float[N, 4] xyxy, the boxes the mask grids cover.
    Returns a scalar: the mean over N·M·M pixels; for N = 0 a zero that is still connected to ``mask_logits``
    (so ``backward`` works on an empty COCO batch).
    """
    n, c, m, _ = mask_logits.shape
    if labels.shape != (n,) or boxes.shape != (n, 4) or gt_masks.shape[0] != n:
        raise ValueError(
            f"refinement_loss: need labels Long[{n}], boxes Float[{n}, 4], gt_masks [{n}, …] to match mask_logits "
            f"{tuple(mask_logits.shape)}; got {tuple(labels.shape)}, {tuple(boxes.shape)}, {tuple(gt_masks.shape)}"
        )
    if n == 0:
        return mask_logits.sum() * 0.0
    if gt_masks.is_floating_point():
        if tuple(gt_masks.shape[1:]) != (m, m):
            raise ValueError(
                f"refinement_loss: float `gt_masks` are taken as box-frame targets and must be [N, {m}, {m}], got "
                f"{tuple(gt_masks.shape)}; pass UInt8 image-frame masks to have them cropped"
            )
        targets = gt_masks
    else:
        targets = crop_masks_to_boxes(gt_masks, boxes, m)
    if int(labels.min()) < 1 or int(labels.max()) > c:
        raise ValueError(
            f"refinement_loss: `labels` must be 1-based in 1..{c}, got range {labels.min()}..{labels.max()}"
        )
    picked = mask_logits[torch.arange(n, device=mask_logits.device), labels - 1]
    return F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))
