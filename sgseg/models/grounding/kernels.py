"""Per-object bivariate Gaussian kernels (paper Sec. 2.5, Eq. 6) and the batched blur that applies them.

Where this sits: inside the Gaussian edge grounding (:class:`sgseg.models.grounding.edge.GaussianEdgeGrounding`):
label distributions → (σx, σy, ρ) → k × k kernels → one grouped convolution blurring every object's (or every
pair member's) mask channels with its own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernels(
    sigma_x: Tensor,
    sigma_y: Tensor,
    rho: Tensor,
    size: int = 7,
    sigma_min: float = 1e-3,
    rho_max: float = 0.999,
) -> Tensor:
    """k × k bivariate Gaussians on the integer grid, each normalised to sum 1.

    sigma_x, sigma_y, rho: Float[N] (σ in grid cells of the mask, ρ the correlation).
    Returns Float[N, size, size] with
    ``K[n, i, j] ∝ exp(−[(x/σx)² + (y/σy)² − 2ρxy/(σxσy)] / (2(1 − ρ²)))``, x = j − size//2 (column offset),
    y = i − size//2 (row offset).

    Numerics (finite values and gradients for any finite input):
    - σ is clamped to ≥ ``sigma_min`` and ρ to [−``rho_max``, ``rho_max``] (``torch.clamp``: the gradient is 0
      past the bound), so no division by 0 for σ → 0 or ρ → ±1.
    - The quadratic form is evaluated as ``(x/σx − ρ y/σy)² / (1 − ρ²) + (y/σy)²`` (the same value, completed
      square), which is ≥ 0 by construction: no cancellation can make the exponent positive, and the centre
      cell's exponent is exactly 0, so the normaliser is ≥ 1 (a tiny σ gives a delta at the centre, not 0/0).
    Computed (and returned) in float32 or wider whatever the input dtype. Differentiable in all three parameters. The kernels are point-symmetric (K(x, y) = K(−x, −y)), so
    correlation (``conv2d``) and convolution coincide.
    """
    if not (sigma_x.shape == sigma_y.shape == rho.shape) or sigma_x.dim() != 1:
        raise ValueError(
            "gaussian_kernels: `sigma_x`, `sigma_y`, `rho` must all be Float[N], got "
            f"{tuple(sigma_x.shape)}, {tuple(sigma_y.shape)}, {tuple(rho.shape)}"
        )
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernels: `size` must be a positive odd number, got {size}")
    half = size // 2
    # At least float32: in half precision (3/σ)² overflows for small σ and inf − inf would give NaN.
    dtype = torch.promote_types(sigma_x.dtype, torch.float32)
    sigma_x, sigma_y, rho = sigma_x.to(dtype), sigma_y.to(dtype), rho.to(dtype)
    offsets = torch.arange(-half, half + 1, dtype=dtype, device=sigma_x.device)
    x = offsets.view(1, 1, size)  # column offset, varies along j
    y = offsets.view(1, size, 1)  # row offset, varies along i
    sx = sigma_x.clamp(min=sigma_min).view(-1, 1, 1)
    sy = sigma_y.clamp(min=sigma_min).view(-1, 1, 1)
    r = rho.clamp(-rho_max, rho_max).view(-1, 1, 1)
    u, v = x / sx, y / sy
    quad = (u - r * v) ** 2 / (1 - r * r) + v**2
    k = torch.exp(-0.5 * quad)
    return k / k.sum(dim=(1, 2), keepdim=True)


class _PerSampleBlur(torch.autograd.Function):
    """Grouped-convolution blur with a hand-written backward.

    Autograd's own weight gradient for a convolution with ~10⁵ groups is pathologically slow on CPU (50 s for
    8064 × 16 maps of 28 × 28, against 0.7 s for the forward), so both gradients are written as *forward*
    grouped convolutions: d maps = correlation of the output gradient with the flipped kernels; d kernels =
    correlation of the padded maps with the output gradient (a k × k result per map), summed over channels.
    """

    @staticmethod
    def forward(ctx, maps: Tensor, kernels: Tensor, padding: int) -> Tensor:
        n, c, h, w = maps.shape
        weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # [N*C, 1, k, k]: group n*C + c → kernel n
        out = F.conv2d(maps.reshape(1, n * c, h, w), weight, padding=padding, groups=n * c)
        ctx.save_for_backward(maps, kernels)
        ctx.padding = padding
        return out.view(n, c, out.shape[-2], out.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        maps, kernels = ctx.saved_tensors
        p = ctx.padding
        n, c, h, w = maps.shape
        k = kernels.shape[-1]
        ho, wo = grad_out.shape[-2:]
        g = grad_out.reshape(1, n * c, ho, wo)
        grad_maps = grad_kernels = None
        if ctx.needs_input_grad[0]:
            flipped = kernels.flip(-2, -1).repeat_interleave(c, dim=0).unsqueeze(1)
            grad_maps = F.conv2d(g, flipped, padding=k - 1 - p, groups=n * c).view(n, c, h, w)
        if ctx.needs_input_grad[1]:
            padded = F.pad(maps, (p, p, p, p)).reshape(1, n * c, h + 2 * p, w + 2 * p)
            per_map = F.conv2d(padded, g.reshape(n * c, 1, ho, wo), groups=n * c)  # [1, N*C, k, k]
            grad_kernels = per_map.view(n, c, k, k).sum(1)
        return grad_maps, grad_kernels, None


def blur_per_sample(maps: Tensor, kernels: Tensor, full: bool = False) -> Tensor:
    """Blur every channel of sample n with kernel n, as ONE grouped convolution (no loop over samples).

    maps: Float[N, C, H, W]; kernels: Float[N, k, k] (odd k), cast to the maps' dtype.
    full=False: Float[N, C, H, W] ("same" size, zero padding: mass blurred past the border is lost).
    full=True: Float[N, C, H + k − 1, W + k − 1], the full convolution — the grid grows by k//2 cells on
    every side, so nothing is lost (used to blur an object's mask before pasting it into a larger frame).
    Gradients flow to both ``maps`` and ``kernels`` (first order only).
    """
    n, c, h, w = maps.shape
    if kernels.dim() != 3 or kernels.shape[0] != n or kernels.shape[1] != kernels.shape[2]:
        raise ValueError(
            f"blur_per_sample: `kernels` must be Float[{n}, k, k] (one kernel per map), got {tuple(kernels.shape)}"
        )
    k = kernels.shape[-1]
    pad = k - 1 if full else k // 2
    if n == 0 or c == 0:
        return maps.new_zeros(n, c, h + 2 * pad - k + 1, w + 2 * pad - k + 1) + 0 * maps.sum()
    return _PerSampleBlur.apply(maps, kernels.to(maps.dtype), pad)
