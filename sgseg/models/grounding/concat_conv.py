"""A convolution over ``[features ⊕ masks]`` that back-propagates only into the inputs that need it.

Where this sits: the first layer of the grounding heads (:class:`sgseg.models.grounding.node.GroundingHead`),
whose input is the concatenation of frozen-detector RoI features (no gradient) and mask channels. In the
Gaussian edge grounding the mask channels carry a gradient (to the kernel parameters), and autograd, seeing
one concatenated input that requires grad, computes the input gradient of *all* D + C channels and then
throws the D feature channels' part away. On the synthetic CPU configuration (D = 64, C = 19, R ≈ 170 pairs
of 28 × 28) that wasted half of the f_E head's backward and most of the Gaussian variant's overhead over
``edge=none`` (``scripts/bench_stage2.py``).

The forward is the same single ``conv2d`` on the concatenation (bit for bit); the backward asks ATen's
``convolution_backward`` for the weight and bias gradients exactly as autograd does, and for the input
gradient of the mask channels only (with the mask channels' slice of the weight), so the gradients equal
autograd's up to float summation order.

On CPU the convolution runs on channels-last copies of the concatenation and the weight (``CHANNELS_LAST``):
oneDNN's direct kernels are faster in that layout — forward + weight gradient of the f_E head's shape
(200 × 83 × 28 × 28 → 64) 1.7×, a whole grounded PredCls step 1.07× (``scripts/bench_stage2.py``). The outputs
then equal the NCHW call up to float rounding (not bit for bit); gradients come back in the NCHW layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _conv_backward(grad: Tensor, x: Tensor, weight: Tensor, padding: int, mask: list[bool]):
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]], [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, mask
    )


class _ConcatConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, masks: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
        x = cat_channels([features, masks.to(features.dtype)])
        weight = cpu_channels_last(weight)
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.split = features.shape[1]
        ctx.masks_dtype = masks.dtype
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        d, p = ctx.split, ctx.padding
        need_f, need_m, need_w, need_b = ctx.needs_input_grad[:4]
        grad_f = grad_m = grad_w = grad_b = None
        # the layout the forward ran in (a 1-channel x is contiguous in both)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
        layout = to_channels_last if channels_last else Tensor.contiguous
        grad_out = layout(grad_out)
        if need_f:  # both parts wanted (not the case in sgseg, where the features are frozen): one call
            grad_x, grad_w, grad_b = _conv_backward(grad_out, x, weight, p, [True, need_w, need_b])
            grad_f, grad_m = grad_x[:, :d], grad_x[:, d:] if need_m else None
        else:
            if need_w or need_b:
                _, grad_w, grad_b = _conv_backward(grad_out, x, weight, p, [False, need_w, need_b])
            if need_m:
                grad_m = _conv_backward(
                    grad_out,
                    layout(x[:, d:]),
                    layout(weight[:, d:]),
                    p,
                    [True, False, False],
                )[0]
        if grad_m is not None:
            grad_m = grad_m.to(ctx.masks_dtype).contiguous()
        if grad_w is not None:
            grad_w = grad_w.contiguous()  # the parameter's own (NCHW) layout
        if grad_f is not None:
            grad_f = grad_f.contiguous()
        return grad_f, grad_m, grad_w if need_w else None, grad_b if need_b else None, None


# False: the plain ``conv(torch.cat(...))`` under autograd (kept for scripts/bench_stage2.py and tests)
MASK_ONLY_INPUT_GRAD = True
# True: on CPU the convolution (forward and backward) runs on channels-last copies of its input and weight;
# the refinement head (sgseg.models.masks.refine) reads the same switch for its convs
CHANNELS_LAST = True


def cpu_channels_last(t: Tensor) -> Tensor:
    """``t`` (4-D) in channels-last layout when ``CHANNELS_LAST`` and on CPU (oneDNN's fast layout), else ``t``.

    The copy is made as a contiguous NHWC tensor viewed back as NCHW, the same values and strides as
    ``t.contiguous(memory_format=torch.channels_last)``, whose CPU copy kernel is several times slower at the
    grounding heads' shapes (measured: 14–74 ms vs 4 ms for 79 × 83 × 28 × 28, 1 thread).
    """
    return to_channels_last(t) if CHANNELS_LAST and t.device.type == "cpu" else t


def to_channels_last(t: Tensor) -> Tensor:
    """A 4-D ``t`` in channels-last layout (no copy when it already is): see :func:`cpu_channels_last`."""
    return t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def cat_channels(tensors: list[Tensor]) -> Tensor:
    """``torch.cat(tensors, 1)`` of 4-D tensors, made directly in channels-last layout when
    :func:`cpu_channels_last` would convert it (one copy instead of a concatenation and a layout change)."""
    if CHANNELS_LAST and tensors[0].device.type == "cpu":
        return torch.cat([t.permute(0, 2, 3, 1) for t in tensors], 3).permute(0, 3, 1, 2)
    return torch.cat(tensors, 1)


def concat_conv2d(conv: torch.nn.Conv2d, features: Tensor, masks: Tensor) -> Tensor:
    """``conv(torch.cat([features, masks], 1))`` for a stride-1, dilation-1, ungrouped ``conv`` with
    integer padding; the input gradient is computed only for the parts that require it.

    features: Float[N, D, H, W]; masks: Float[N, C, H, W] (cast to the features' dtype); ``conv`` takes
    D + C input channels. Returns Float[N, D_out, H', W'], equal to the plain call bit for bit (up to float
    rounding with ``CHANNELS_LAST`` on CPU, the default).
    """
    if (
        conv.stride != (1, 1)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or not isinstance(conv.padding, tuple)
    ):
        raise ValueError(f"concat_conv2d: needs a stride-1, dilation-1, ungrouped conv, got {conv}")
    if conv.padding[0] != conv.padding[1] or conv.bias is None:
        raise ValueError(f"concat_conv2d: needs equal padding on both sides and a bias, got {conv}")
    if features.shape[1] + masks.shape[1] != conv.in_channels:
        raise ValueError(
            f"concat_conv2d: features ({features.shape[1]}) + masks ({masks.shape[1]}) channels must equal the "
            f"conv's in_channels ({conv.in_channels})"
        )
    # Under autocast (bf16 on GPU) the conv runs in another dtype than its saved inputs: the plain route
    if not MASK_ONLY_INPUT_GRAD or torch.is_autocast_enabled(features.device.type):
        return conv(torch.cat([features, masks.to(features.dtype)], dim=1))
    return _ConcatConv2d.apply(features, masks, conv.weight, conv.bias, conv.padding[0])
