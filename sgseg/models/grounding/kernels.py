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


def blur_per_sample(maps: Tensor, kernels: Tensor) -> Tensor:
    """Blur every channel of sample n with kernel n, as ONE grouped convolution (no loop over samples).

    maps: Float[N, C, H, W]; kernels: Float[N, k, k] (odd k). Returns Float[N, C, H, W], zero padding ("same"
    size): mass blurred past the border is lost, as for an object mask at the edge of its frame.
    """
    n, c, h, w = maps.shape
    if kernels.dim() != 3 or kernels.shape[0] != n or kernels.shape[1] != kernels.shape[2]:
        raise ValueError(
            f"blur_per_sample: `kernels` must be Float[{n}, k, k] (one kernel per map), got {tuple(kernels.shape)}"
        )
    if n == 0 or c == 0:
        return maps.clone()
    k = kernels.shape[-1]
    # Fold the batch into channels: group g = n * C + c sees only its own map and its sample's kernel.
    weight = kernels.to(maps.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # [N*C, 1, k, k]
    out = F.conv2d(maps.reshape(1, n * c, h, w), weight, padding=k // 2, groups=n * c)
    return out.view(n, c, h, w)
