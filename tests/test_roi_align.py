"""sgseg.ops.roi_align: the separable RoIAlign equals torchvision's kernel (forward and input gradient), its
FPN pooler equals torchvision's, the dispatch, and a detector training step's gradients on either kernel."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

import sgseg.ops.roi_align as ra
from sgseg.ops.roi_align import MultiScaleRoIAlign, roi_align, separable_roi_align
from tests.test_detector import shapes_batch, tiny_detector


def _random_rois(k: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Boxes partly outside a 68 × 52 image frame (scale 0.25 → 17 × 13 map), some smaller than a pixel."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * 90 - 10
    wh = torch.rand(k, 2, generator=g) * 60
    wh[:5] = torch.rand(5, 2, generator=g) * 0.5  # degenerate: torchvision forces them to 1 × 1 (not aligned)
    image = torch.randint(0, n, (k, 1), generator=g).to(dtype)
    return torch.cat([image, xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1, 1, 3])
def test_equals_torchvision_forward_and_input_gradient(aligned, sampling_ratio):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 13, 17, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(40, 3, seed=sampling_ratio + 10 * aligned)
    ref = torchvision.ops.roi_align(x, rois, (7, 6), 0.25, sampling_ratio, aligned)
    out = separable_roi_align(x, rois, (7, 6), 0.25, sampling_ratio, aligned)
    assert ref.abs().sum() > 0 and (ref == 0).any()  # some RoIs fall partly outside the map
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)  # float64: equal up to summation order
    grad = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    (g_out,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-12)
    # float32 (the training dtype): the same sample cells, rounding only
    x32 = x.detach().float()
    torch.testing.assert_close(
        separable_roi_align(x32, rois.float(), 7, 0.25, sampling_ratio, aligned),
        torchvision.ops.roi_align(x32, rois.float(), 7, 0.25, sampling_ratio, aligned),
        rtol=1e-5,
        atol=1e-5,
    )


def test_hand_worked_values_and_empty_inputs():
    # a 1 × 1 × 2 × 3 map; one bin over the whole map with one sample at its centre (x, y) = (1.5, 1.0):
    # row 1 exactly, halfway between columns 1 and 2 → (f[1, 1] + f[1, 2]) / 2
    x = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]])
    rois = torch.tensor([[0.0, 0.0, 0.0, 3.0, 2.0]])
    assert separable_roi_align(x, rois, 1, 1.0, 1).item() == pytest.approx(4.5)
    # 2 × 2 samples at x ∈ {0.75, 2.25}, y ∈ {0.5, 1.5}; y = 1.5 ≥ H - 1 clamps to the last row:
    # mean of rows (0.5 · r0 + 0.5 · r1, r1) at columns 0.75 and 2.25 (2.25 ≥ W - 1 → column 2)
    cols = (0.25 * torch.tensor([0.0, 3.0]) + 0.75 * torch.tensor([1.0, 4.0]), torch.tensor([2.0, 5.0]))
    rows = [0.5 * c[0] + 0.5 * c[1] for c in cols] + [c[1] for c in cols]
    assert separable_roi_align(x, rois, 1, 1.0, 2).item() == pytest.approx(float(sum(rows)) / 4)
    empty = separable_roi_align(x, torch.zeros(0, 5), (7, 7), 1.0, 2)
    assert empty.shape == (0, 1, 7, 7)
    with pytest.raises(ValueError, match="index the 1 images"):
        separable_roi_align(x, torch.tensor([[1.0, 0.0, 0.0, 2.0, 2.0]]), 2)
    with pytest.raises(ValueError, match=r"rois Float\[K, 5\]"):
        separable_roi_align(x, torch.zeros(3, 4), 2)


def test_chunked_rois_give_the_same_result(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 13, 17, dtype=torch.float64)
    rois = _random_rois(30, 2, seed=3)
    whole = separable_roi_align(x, rois, 5, 0.25, 2)
    monkeypatch.setattr(ra, "_MAX_INTERMEDIATE", 1)  # one RoI per chunk
    torch.testing.assert_close(separable_roi_align(x, rois, 5, 0.25, 2), whole, rtol=0, atol=1e-14)


def test_dispatch_matrix_products_on_cpu_also_under_autocast_torchvision_when_switched_off(monkeypatch):
    calls = []
    real = ra.separable_roi_align
    monkeypatch.setattr(ra, "separable_roi_align", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 24.0]])
    ref = torchvision.ops.roi_align(x, rois, 3, 0.25, 2)
    torch.testing.assert_close(roi_align(x, rois, 3, 0.25, 2), ref)
    assert calls == [1]
    # under CPU autocast: the matrix products in float32, the input's dtype out (torchvision's autocast rule)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x, rois, 3, 0.25, 2)
        out_bf16 = roi_align(x.bfloat16(), rois, 3, 0.25, 2)
        ref_bf16 = torchvision.ops.roi_align(x.bfloat16(), rois, 3, 0.25, 2)
    assert calls == [1, 1, 1] and out.dtype == torch.float32 and out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out_bf16, ref_bf16)
    monkeypatch.setattr(ra, "SEPARABLE", False)
    assert torch.equal(roi_align(x, rois, 3, 0.25, 2), ref)
    assert calls == [1, 1, 1]


@pytest.mark.parametrize("output_size", [7, 14])
@pytest.mark.parametrize("one_level", [False, True])
def test_multiscale_pooler_equals_torchvision(output_size, one_level):
    torch.manual_seed(0)
    names = ["0", "1", "2"]
    feats = {n: torch.randn(2, 4, 64 >> i, 48 >> i, dtype=torch.float64, requires_grad=True)
             for i, n in enumerate(names)}  # fmt: skip
    boxes = [torch.tensor([[2.0, 3.0, 20.0, 30.0], [0.0, 0.0, 190.0, 250.0], [5.0, 5.0, 120.0, 90.0]],
                          dtype=torch.float64), torch.tensor([[10.0, 40.0, 60.0, 100.0]], dtype=torch.float64)]  # fmt: skip
    if one_level:  # all small: every box on the finest level (the pooler's no-scatter path)
        boxes = [
            b[:, :2].repeat(1, 2) + torch.tensor([0.0, 0.0, 20.0, 24.0], dtype=torch.float64) for b in boxes
        ]
    shapes = [(256, 192), (256, 192)]
    ours = MultiScaleRoIAlign(names, output_size, 2)(feats, boxes, shapes)
    ref = torchvision.ops.MultiScaleRoIAlign(names, output_size, 2)(feats, boxes, shapes)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    # a level no box maps to gets no gradient from ours (None) and zeros from torchvision's
    g_ours = torch.autograd.grad(ours, list(feats.values()), grad, allow_unused=True)
    g_ref = torch.autograd.grad(ref, list(feats.values()), grad)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(torch.zeros_like(b) if a is None else a, b, rtol=0, atol=1e-12)
    assert sum(a is not None for a in g_ours) == (1 if one_level else 2)


@pytest.mark.parametrize("dataset", ["vg", "coco"])
def test_detector_training_step_gradients_match_torchvision_kernel(monkeypatch, dataset):
    """The stage-1 losses and every parameter gradient are those of torchvision's kernel (float32 rounding)."""
    det = tiny_detector().train()
    images, targets = shapes_batch()
    grads = {}
    for separable in (False, True):
        monkeypatch.setattr(ra, "SEPARABLE", separable)
        model = copy.deepcopy(det)
        torch.manual_seed(0)  # the same RPN / RoI samples
        losses = model.training_losses(images, targets, dataset)
        sum(losses.values()).backward()
        grads[separable] = ({k: float(v) for k, v in losses.items()},
                            {n: p.grad for n, p in model.named_parameters() if p.grad is not None})  # fmt: skip
    (l0, g0), (l1, g1) = grads[False], grads[True]
    assert l0.keys() == l1.keys() and g0.keys() == g1.keys() and len(g0) > 10
    for k in l0:
        assert l1[k] == pytest.approx(l0[k], rel=1e-5, abs=1e-6)
    for name in g0:
        scale = float(g0[name].abs().max()) + 1e-12
        torch.testing.assert_close(g1[name] / scale, g0[name] / scale, rtol=0, atol=1e-4, msg=name)


def test_cpu_fast_kernels_config_switches_the_float_rounding_speed_ups(monkeypatch):
    from omegaconf import OmegaConf

    import sgseg.models.context.motif as motif
    import sgseg.models.grounding.concat_conv as concat_conv
    from sgseg.lit.build import ConfigError, configure_torch

    monkeypatch.setattr(ra, "SEPARABLE", True)
    monkeypatch.setattr(concat_conv, "CHANNELS_LAST", True)
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: True)  # keep the process's own setting
    monkeypatch.setattr(motif, "DECODER_INPUT_ONCE", True)
    configure_torch(OmegaConf.create({"cpu_fast_kernels": False}))
    assert ra.SEPARABLE is False and concat_conv.CHANNELS_LAST is False and motif.DECODER_INPUT_ONCE is False
    configure_torch(OmegaConf.create({}))  # older runs' configs have no key: the default (fast)
    assert ra.SEPARABLE is True and concat_conv.CHANNELS_LAST is True and motif.DECODER_INPUT_ONCE is True
    with pytest.raises(ConfigError, match="cpu_fast_kernels"):
        configure_torch(OmegaConf.create({"cpu_fast_kernels": "yes"}))


def test_cpu_bf16_convs_config_sets_the_switch_and_warns_without_amx(monkeypatch, caplog):
    from omegaconf import OmegaConf

    import sgseg.models.grounding.concat_conv as concat_conv
    from sgseg.lit.build import ConfigError, configure_torch

    monkeypatch.setattr(concat_conv, "BF16_CONVS", False)
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: True)
    monkeypatch.setattr(concat_conv, "cpu_has_fast_bf16", lambda: True)
    with caplog.at_level("WARNING"):
        configure_torch(OmegaConf.create({"cpu_bf16_convs": True}))
    assert concat_conv.BF16_CONVS is True and "AMX" not in caplog.text
    configure_torch(OmegaConf.create({}))  # older runs' configs have no key: off
    assert concat_conv.BF16_CONVS is False
    monkeypatch.setattr(concat_conv, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        configure_torch(OmegaConf.create({"cpu_bf16_convs": True}))
    assert concat_conv.BF16_CONVS is True and "without AMX" in caplog.text
    with pytest.raises(ConfigError, match="cpu_bf16_convs"):
        configure_torch(OmegaConf.create({"cpu_bf16_convs": 1}))
