"""Node grounding f_N (paper Sec. 2.4, Eq. 5): ẑ_j = f_N([z_j, m_j]).

Where this sits: after mask transfer (and refinement), before the context model (MOTIF / VCTree): each object's
28 × 28 RoIAlign feature map is concatenated with its C_vg transferred mask channels and mapped to the vector
that replaces the plain box feature z_j as the context model's visual input. :class:`NoNodeGrounding` is the
baseline (z_j unchanged), chosen by the config group ``model/grounding/node=masks|none``.

Every f_N is built by :func:`sgseg.lit.build.build_stage2` with the same keywords, read from the built detector:
``in_channels`` (D), ``num_mask_channels`` (C_vg), ``box_feature_dim`` (D_box) and ``roi_size`` (the mask side
M); its own hyper-parameters come from its config node. It exposes ``out_dim`` (the context model's input width).

:class:`GroundingHead` (concat → 3 × 3 conv → flatten → 2 FC) is shared with the edge grounding f_E, which the
paper gives the same shape.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.grounding.concat_conv import concat_conv2d, cpu_bf16_convs


class GroundingHead(nn.Module):
    """[features ⊕ masks] → 3 × 3 conv back to the feature width (+ ReLU) → (pool) → flatten → 2 × (FC + ReLU).

    in_channels: D, feature channels of the RoI maps. num_mask_channels: C channels concatenated (0 = features
    only). hidden_dim / out_dim: the two FC widths (paper 1024 / 1024). roi_size: side of the input maps.
    pool_size: side the conv output is average-pooled to before flattening. Flattening the full 28 × 28 map
    (``pool_size=roi_size``, the reference and the VG150 experiments) makes the first FC D·784 × hidden — 205M
    weights at D = 256 — so the CPU configs pool to 7 × 7, the input size of the detector's own box head
    (12.8M weights at D = 256).
    conv_relu: ReLU after the combining conv. The reference's ``mask_combiner`` has none (conv → flatten →
    fc6 + ReLU → fc7 + ReLU, in both its box and its relation feature extractor); ``False`` reproduces that.
    """

    def __init__(
        self,
        in_channels: int,
        num_mask_channels: int,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        roi_size: int = 28,
        pool_size: int = 7,
        conv_relu: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= pool_size <= roi_size:
            raise ValueError(f"GroundingHead: `pool_size` must be in 1..roi_size={roi_size}, got {pool_size}")
        self.in_channels = in_channels
        self.num_mask_channels = num_mask_channels
        self.roi_size = roi_size
        self.pool_size = pool_size
        self.conv_relu = conv_relu
        self.out_dim = out_dim
        self.conv = nn.Conv2d(in_channels + num_mask_channels, in_channels, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(in_channels * pool_size * pool_size, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor, masks: Tensor | None = None) -> Tensor:
        """features: Float[N, D, S, S]; masks: Float[N, C, S, S] (S = roi_size) or None when C = 0.

        Returns Float[N, out_dim] (after ReLU).
        """
        s = self.roi_size
        if features.dim() != 4 or tuple(features.shape[1:]) != (self.in_channels, s, s):
            raise ValueError(
                f"GroundingHead: features must be Float[N, {self.in_channels}, {s}, {s}], got {tuple(features.shape)}"
            )
        if self.num_mask_channels:
            if masks is None or tuple(masks.shape) != (features.shape[0], self.num_mask_channels, s, s):
                got = None if masks is None else tuple(masks.shape)
                raise ValueError(
                    f"GroundingHead: masks must be Float[{features.shape[0]}, {self.num_mask_channels}, {s}, {s}] "
                    f"(mask side = RoI feature side), got {got}"
                )
        with cpu_bf16_convs(features.device):  # bf16 conv block on CPU when switched on (float32 after it)
            if self.num_mask_channels:
                x = concat_conv2d(self.conv, features, masks)  # input gradient only where needed
            else:
                x = self.conv(features)
            if self.conv_relu:  # in place: the conv's backward needs its input, not its output
                x = F.relu(x, inplace=WINDOW_POOL)
            if self.pool_size != s:
                x = pool_to(x, self.pool_size)
        x = F.relu(self.fc1(x.flatten(1).to(self.fc1.weight.dtype)))
        return F.relu(self.fc2(x))


# False: the plain path (a new tensor for the ReLU, adaptive_avg_pool2d always; kept for scripts/bench_stage2.py)
WINDOW_POOL = True


def pool_to(x: Tensor, size: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; when ``size`` divides the map's side, as the fixed-window
    ``F.avg_pool2d`` — the same windows and the same bits (tested), about twice as fast forward + backward on
    CPU in channels-last layout."""
    h, w = x.shape[-2:]
    if WINDOW_POOL and h % size == 0 and w % size == 0:
        return F.avg_pool2d(x, (h // size, w // size))
    return F.adaptive_avg_pool2d(x, size)


class NodeGrounding(nn.Module):
    """f_N: grounded object features from RoI features and the object's transferred masks.

    in_channels: D of the RoI maps; num_mask_channels: C_vg (150 on VG); hidden_dim/out_dim: FC widths;
    roi_size: RoIAlign output side (28); pool_size, conv_relu: see :class:`GroundingHead`.
    box_feature_dim: D_box, part of the common builder call; unused (ẑ_j replaces the box feature).
    """

    def __init__(
        self,
        in_channels: int,
        num_mask_channels: int,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        roi_size: int = 28,
        pool_size: int = 7,
        conv_relu: bool = True,
        box_feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.head = GroundingHead(
            in_channels, num_mask_channels, hidden_dim, out_dim, roi_size, pool_size, conv_relu
        )

    @property
    def out_dim(self) -> int:
        return self.head.out_dim

    def forward(self, roi_features: Tensor, mask_probs: Tensor, box_features: Tensor | None = None) -> Tensor:
        """roi_features: Float[N, D, 28, 28]; mask_probs: Float[N, C_vg, 28, 28] transferred masks in [0, 1]
        (box-relative); box_features: Float[N, D_box], unused here (the baseline's input).

        Returns Float[N, out_dim], the grounded ẑ_j.
        """
        return self.head(roi_features, mask_probs)


class NoNodeGrounding(nn.Module):
    """Baseline f_N: the detector's box feature z_j, unchanged (``model/grounding/node=none``).

    box_feature_dim: D_box, the detector's box feature width (checked, so a mismatch fails here and not in the
    context model). in_channels, num_mask_channels, roi_size: part of the common builder call; unused.
    """

    def __init__(
        self,
        box_feature_dim: int,
        in_channels: int | None = None,
        num_mask_channels: int | None = None,
        roi_size: int | None = None,
    ) -> None:
        super().__init__()
        self.out_dim = box_feature_dim

    def forward(self, roi_features: Tensor, mask_probs: Tensor, box_features: Tensor | None = None) -> Tensor:
        """Returns ``box_features`` (Float[N, out_dim]); the RoI maps and masks are ignored."""
        if box_features is None or box_features.dim() != 2 or box_features.shape[1] != self.out_dim:
            got = None if box_features is None else tuple(box_features.shape)
            raise ValueError(f"NoNodeGrounding: `box_features` must be Float[N, {self.out_dim}], got {got}")
        return box_features
