"""RoIAlign as two matrix products per image: ``torchvision.ops.roi_align``'s numbers, with a fast CPU backward.

Why: on CPU, torchvision's RoIAlign backward is a serial loop that recomputes every bilinear weight and adds
into the input gradient one sample at a time. In the stage-1 training step of the synthetic CPU configuration
it was the largest single cost (30 % of the step, ``scripts/bench_roi_align.py``), more than every convolution's
backward together.

The identity: RoIAlign averages bilinear samples on a regular grid inside each bin, and bilinear interpolation
is separable — the weight of input pixel (h, w) for a sample at (y, x) is ``a_h(y) · b_w(x)``, where ``a`` and
``b`` are the 1-d interpolation weights (torchvision's border rules included: a sample outside
[-1, H] × [-1, W] contributes 0, which is the product of one indicator per axis; coordinates in [-1, 0] clamp
to 0; the last row/column replicates). Summing over a bin's ``g_h × g_w`` samples therefore factorises:

    out[k, c, p, q] = Σ_{h, w} A[k, p, h] · F[b_k, c, h, w] · B[k, q, w] / (g_h g_w)

with ``A[k, p, h] = Σ_i a_h(y_{k,p,i})`` (P × H) and ``B[k, q, w] = Σ_j b_w(x_{k,q,j})`` (Q × W). For each
image that is one matrix product over H for all its RoIs and one batched product over W — and autograd's
backward of those is two more matrix products, multi-threaded, instead of the serial scatter. Sample
coordinates are computed in the input's dtype in torchvision's order of operations, so every sample falls into
the same pixel cell; the outputs differ from torchvision's only by float rounding (the sums run in another
order): tests/test_roi_align.py checks forward and input gradient against ``torchvision.ops.roi_align``.

:func:`roi_align` dispatches: this path on CPU for float32/float64 input, and under CPU autocast (in float32,
returning the input's dtype — torchvision's autocast rule for its kernel), torchvision's kernel everywhere else
(CUDA has a fast one). :class:`MultiScaleRoIAlign` is torchvision's pooler (same FPN level
mapping, same ``scales`` set-up) calling :func:`roi_align`. ``SEPARABLE`` = False restores torchvision's kernel
everywhere (the "before" of the benchmark).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor
from torchvision.ops import poolers as tv_poolers

__all__ = ["MultiScaleRoIAlign", "roi_align", "separable_roi_align"]

# False: torchvision's kernel everywhere (the plain path, kept for scripts/bench_roi_align.py and the A/B tests)
SEPARABLE = True

# per-image chunk of RoIs whose (RoIs × P) × (C × W) intermediate stays under this many elements (~128 MiB fp32)
_MAX_INTERMEDIATE = 32 * 1024 * 1024


def _axis_weights(
    start: Tensor, bin_size: Tensor, grid: Tensor, grid_max: int, pooled: int, length: int
) -> Tensor:
    """Float[K, pooled, length]: Σ over each bin's ``grid`` samples of their 1-d bilinear weights, / grid.

    start, bin_size: Float[K] (the RoI's first coordinate and bin side in feature pixels); grid: Long[K] samples
    per bin (≤ grid_max). Mirrors torchvision's ``bilinear_interpolate`` along one axis.
    """
    k = start.shape[0]
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, device=device, dtype=dtype).view(1, pooled, 1)
    i = torch.arange(grid_max, device=device, dtype=dtype).view(1, 1, grid_max)
    g = grid.to(dtype).view(k, 1, 1)
    bs = bin_size.view(k, 1, 1)
    # torchvision: y = roi_start + p * bin_size + (i + .5) * bin_size / grid, left to right
    y = start.view(k, 1, 1) + p * bs + (i + 0.5) * bs / g
    valid = (y >= -1.0) & (y <= length) & (i < g)
    y = y.clamp(min=0)
    low = y.floor().long()  # y ≥ 0: (int) y
    last = low >= length - 1
    low = torch.where(last, torch.full_like(low, length - 1), low)
    high = torch.where(last, low, low + 1)
    y = torch.where(last, low.to(dtype), y)
    lw = y - low.to(dtype)
    hw = 1.0 - lw
    zero = torch.zeros((), dtype=dtype, device=device)
    weights = torch.zeros(k, pooled, length, dtype=dtype, device=device)
    weights.scatter_add_(2, low, torch.where(valid, hw, zero))
    weights.scatter_add_(2, high, torch.where(valid, lw, zero))
    return weights / g.clamp(min=1)


def separable_roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align(input, rois, ...)`` (rois: Float[K, 5] ``(image, x1, y1, x2, y2)``) as
    separable matrix products; Float[K, C, P, Q]. Differentiable in ``input`` (not in ``rois``, as torchvision)."""
    if input.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"separable_roi_align: input must be Float[N, C, H, W] and rois Float[K, 5], got "
            f"{tuple(input.shape)} and {tuple(rois.shape)}"
        )
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = input.shape
    k = rois.shape[0]
    if k == 0:
        return input.new_zeros(k, c, ph, pw)
    rois = rois.detach().to(input.dtype)
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    rw = rois[:, 3] * spatial_scale - offset - x1
    rh = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # torchvision: force malformed RoIs to be 1 × 1
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bin_h, bin_w = rh / ph, rw / pw
    if sampling_ratio > 0:
        gh = torch.full((k,), sampling_ratio, dtype=torch.long, device=input.device)
        gw = gh
    else:  # adaptive: ceil(roi side / pooled side) samples per bin, per RoI
        gh, gw = torch.ceil(rh / ph).long(), torch.ceil(rw / pw).long()
    gh_max, gw_max = max(int(gh.max()), 1), max(int(gw.max()), 1)
    a = _axis_weights(y1, bin_h, gh, gh_max, ph, h)  # [K, P, H]
    b = _axis_weights(x1, bin_w, gw, gw_max, pw, w)  # [K, Q, W]
    image = rois[:, 0].long()
    if int(image.min()) < 0 or int(image.max()) >= n:
        raise ValueError(f"separable_roi_align: rois[:, 0] must index the {n} images of input")
    # RoIs by image (the poolers pass them sorted already: then no reordering at all)
    order = None
    if k > 1 and bool((image[1:] < image[:-1]).any()):
        order = torch.argsort(image, stable=True)
        image, a, b = image[order], a[order], b[order]
    counts = torch.bincount(image, minlength=n).tolist()
    chunk = max(1, _MAX_INTERMEDIATE // max(ph * c * w, 1))
    rows, begin = [], 0
    for i, count in enumerate(counts):
        if not count:
            continue
        fmap = input[i].transpose(0, 1).reshape(h, c * w)  # [H, C·W]
        for lo in range(begin, begin + count, chunk):
            hi = min(lo + chunk, begin + count)
            m = hi - lo
            t = (a[lo:hi].reshape(m * ph, h) @ fmap).view(m, ph * c, w)  # Σ_h A · F: [K_i, P·C, W]
            rows.append(torch.bmm(t, b[lo:hi].transpose(1, 2)))  # Σ_w · B: [K_i, P·C, Q]
        begin += count
    out = torch.cat(rows).view(k, ph, c, pw).transpose(1, 2)
    if order is not None:
        out = torch.empty_like(out).index_copy_(0, order, out)
    return out.contiguous()


def roi_align(
    input: Tensor,
    boxes: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align`` with Float[K, 5] boxes: :func:`separable_roi_align` on CPU for float input
    and under CPU autocast (see the module docstring), torchvision's kernel otherwise."""
    if (
        SEPARABLE
        and input.device.type == "cpu"
        and isinstance(boxes, Tensor)
        and not torchvision._is_tracing()
    ):
        if torch.is_autocast_enabled("cpu"):
            # as torchvision's autocast rule for roi_align: float32 inside, the input's dtype out
            with torch.autocast("cpu", enabled=False):
                out = separable_roi_align(
                    input.float(), boxes.float(), output_size, spatial_scale, sampling_ratio, aligned
                )
            return out.to(input.dtype)
        if input.dtype in (torch.float32, torch.float64):
            return separable_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """torchvision's FPN pooler (level by box size, ``scales`` from the first call's shapes) over
    :func:`roi_align`; same constructor, same state, same outputs up to float rounding."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        x_filtered = tv_poolers._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = tv_poolers._setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = tv_poolers._convert_to_roi_format(boxes)
        size, ratio = self.output_size, self.sampling_ratio
        if len(x_filtered) == 1:
            return roi_align(x_filtered[0], rois, size, self.scales[0], ratio)
        levels = self.map_levels(boxes)
        first = x_filtered[0]
        used = torch.unique(levels).tolist()
        if len(used) == 1:  # every box on one level: no scatter into the result
            level = int(used[0])
            return roi_align(x_filtered[level], rois, size, self.scales[level], ratio).to(first.dtype)
        result = first.new_zeros((rois.shape[0], first.shape[1], *size))
        for level in used:
            idx = torch.where(levels == level)[0]
            pooled = roi_align(x_filtered[level], rois[idx], size, self.scales[level], ratio)
            result.index_copy_(0, idx, pooled.to(result.dtype))
        return result
