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

Under CPU bf16 autocast (:func:`cpu_bf16_convs`, switched on by the run config's ``cpu_bf16_convs``, or
Lightning's ``trainer.precision=bf16-mixed`` on CPU) the same custom backward runs in bfloat16: the forward
casts the concatenation, weight and bias to bf16 and returns a bf16 output (as autocast's ``conv2d`` would);
the backward's convolutions run in bf16 and the gradients come back in their inputs' and parameters' dtypes.
On a CPU with AMX (Sapphire Rapids and later) oneDNN's bf16 kernels are 3–5× faster at the grounding and
refinement heads' shapes than fp32; without AMX they are slower, so the switch is off by default.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor


def _conv_backward(grad: Tensor, x: Tensor, weight: Tensor, padding: int, mask: list[bool]):
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]], [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, mask
    )


class _ConcatConv2d(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        features: Tensor,
        masks: Tensor,
        weight: Tensor,
        bias: Tensor,
        padding: int,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        # dtype: the compute dtype (None: the features' own; bf16 under CPU bf16 autocast)
        dtype = dtype or features.dtype
        ctx.dtypes = (features.dtype, masks.dtype, weight.dtype, bias.dtype)
        x = cat_channels([features.to(dtype), masks.to(dtype)])
        weight = cpu_channels_last(weight.to(dtype))
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.split = features.shape[1]
        return F.conv2d(x, weight, bias.to(dtype), padding=padding)

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
        grad_out = layout(grad_out.to(x.dtype))
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
        f_dtype, m_dtype, w_dtype, b_dtype = ctx.dtypes
        if grad_m is not None:
            grad_m = grad_m.to(m_dtype).contiguous()
        if grad_w is not None:
            grad_w = grad_w.to(w_dtype).contiguous()  # the parameter's own dtype and (NCHW) layout
        if grad_b is not None:
            grad_b = grad_b.to(b_dtype)
        if grad_f is not None:
            grad_f = grad_f.to(f_dtype).contiguous()
        return grad_f, grad_m, grad_w if need_w else None, grad_b if need_b else None, None, None


# False: the plain ``conv(torch.cat(...))`` under autograd (kept for scripts/bench_stage2.py and tests)
MASK_ONLY_INPUT_GRAD = True
# True: on CPU the convolution (forward and backward) runs on channels-last copies of its input and weight;
# the refinement head (sgseg.models.masks.refine) reads the same switch for its convs
CHANNELS_LAST = True
# True: the grounding and refinement heads' convolutions run in bf16 on CPU (:func:`cpu_bf16_convs`; float
# rounding of bf16, not the fp32 numbers; set by the run config's ``cpu_bf16_convs``)
BF16_CONVS = False


def cpu_bf16_convs(device: torch.device):
    """A context in which the grounding / refinement heads' convolutions run in bf16: ``torch.autocast`` on
    CPU when ``BF16_CONVS`` and ``device`` is a CPU, else a no-op. Everything outside the heads' conv blocks
    (RoIAlign, the FC layers, the context model, the classifiers and the scores) stays float32."""
    if BF16_CONVS and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has AMX tiles (oneDNN's fast bf16 matrix units; Sapphire Rapids and later)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _cpu_bf16_autocast(device: torch.device) -> bool:
    return (
        device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


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
    # CPU bf16 autocast: the custom backward in bf16; other autocast (bf16 on GPU): the plain route
    bf16 = _cpu_bf16_autocast(features.device)
    if not MASK_ONLY_INPUT_GRAD or (torch.is_autocast_enabled(features.device.type) and not bf16):
        return conv(torch.cat([features, masks.to(features.dtype)], dim=1))
    dtype = torch.bfloat16 if bf16 else features.dtype
    return _ConcatConv2d.apply(features, masks, conv.weight, conv.bias, conv.padding[0], dtype)
