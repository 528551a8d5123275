"""Grounding: Gaussian kernels vs the formula, the grouped blur, union-frame pasting, the f_E variants, f_N."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sgseg.models.grounding import (
    AvgEdgeGrounding,
    GaussianEdgeGrounding,
    NodeGrounding,
    NoEdgeGrounding,
    NoNodeGrounding,
    UnionEdgeGrounding,
    blur_per_sample,
    gaussian_kernels,
    paste_into_union,
    union_boxes,
)


def _formula(sx: float, sy: float, rho: float, size: int) -> torch.Tensor:
    """The paper's kernel evaluated literally, cell by cell, in float64."""
    h = size // 2
    k = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            x, y = j - h, i - h
            q = (x / sx) ** 2 + (y / sy) ** 2 - 2 * rho * x * y / (sx * sy)
            k[i, j] = math.exp(-q / (2 * (1 - rho**2)))
    return k / k.sum()


# ----------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize(
    "sx,sy,rho,size", [(1.0, 1.0, 0.0, 7), (2.0, 0.7, 0.6, 7), (0.8, 1.9, -0.45, 7), (1.5, 3.0, 0.9, 5)]
)
def test_kernels_match_formula(sx, sy, rho, size):
    got = gaussian_kernels(
        torch.tensor([sx], dtype=torch.float64),
        torch.tensor([sy], dtype=torch.float64),
        torch.tensor([rho], dtype=torch.float64),
        size=size,
    )
    assert got.shape == (1, size, size)
    torch.testing.assert_close(got[0], _formula(sx, sy, rho, size), rtol=1e-10, atol=1e-12)


def test_kernel_symmetries_and_orientation():
    t = lambda *v: torch.tensor(v)  # noqa: E731
    k = gaussian_kernels(t(1.3, 2.0, 2.0, 0.9), t(1.3, 0.8, 0.8, 1.6), t(0.0, 0.0, 0.5, -0.3))
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(4))
    # ρ = 0: mirror-symmetric in x and in y; σx = σy also transpose-symmetric.
    for n in (0, 1):
        torch.testing.assert_close(k[n], k[n].flip(0))
        torch.testing.assert_close(k[n], k[n].flip(1))
    torch.testing.assert_close(k[0], k[0].T)
    # Any ρ: point-symmetric, K(x, y) = K(−x, −y) (so correlation = convolution).
    torch.testing.assert_close(k[2], k[2].flip(0, 1))
    c = 3
    assert k[1, c, c + 2] > k[1, c + 2, c]  # σx > σy: wider along columns (x)
    assert k[2, c + 1, c + 1] > k[2, c + 1, c - 1]  # ρ > 0: mass where x and y share a sign
    assert k[3, c + 1, c - 1] > k[3, c + 1, c + 1]  # ρ < 0: the other diagonal
    # Swapping σx and σy (same ρ) transposes the kernel.
    torch.testing.assert_close(gaussian_kernels(t(0.8), t(2.0), t(0.5))[0], k[2].T)


def test_kernels_finite_at_the_extremes():
    sx = torch.tensor([0.0, 1e-30, 1.0, 1.0, 1e6, 1e-30], requires_grad=True)
    sy = torch.tensor([0.0, 1e-30, 1.0, 1.0, 1e6, 2.0], requires_grad=True)
    rho = torch.tensor([0.0, 1.0, 1.0, -1.0, 0.999999, -1.0], requires_grad=True)
    k = gaussian_kernels(sx, sy, rho)
    assert torch.isfinite(k).all()
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(6))
    delta = torch.zeros(7, 7)
    delta[3, 3] = 1
    torch.testing.assert_close(k[0], delta)  # σ → 0: a delta, not 0/0
    torch.testing.assert_close(k[4], torch.full((7, 7), 1 / 49), rtol=1e-4, atol=1e-6)  # σ → ∞: box filter
    assert k[2].diagonal().sum() > 0.9  # ρ → 1: mass on the x = y line
    (k * torch.randn(6, 7, 7)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in (sx, sy, rho))
    # Half-precision parameters (autocast): computed in float32, so (3/σ)² cannot overflow into inf − inf.
    half = gaussian_kernels(
        *(torch.tensor([1e-3, 0.5]).half() for _ in range(2)), torch.tensor([0.99, 0.3]).half()
    )
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_kernels_gradcheck():
    args = [torch.tensor([1.2, 0.7], dtype=torch.float64, requires_grad=True) for _ in range(2)]
    rho = torch.tensor([0.3, -0.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, r: gaussian_kernels(a, b, r, size=5), (*args, rho))


def test_blur_is_one_kernel_per_sample():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 4, 9, 9, generator=g)
    kernels = gaussian_kernels(
        torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 1.5, 0.7]), torch.tensor([0.0, 0.4, -0.8])
    )
    got = blur_per_sample(maps, kernels)
    for n in range(3):  # independent route: an ordinary conv per sample, the kernel shared by its channels
        w = kernels[n].expand(4, 1, 7, 7)
        torch.testing.assert_close(got[n], F.conv2d(maps[n : n + 1], w, padding=3, groups=4)[0])
    # Interior mass is preserved (kernels sum to 1): a constant map stays constant away from the border.
    flat = blur_per_sample(torch.ones(3, 1, 9, 9), kernels)
    torch.testing.assert_close(flat[:, :, 4, 4], torch.ones(3, 1), rtol=1e-4, atol=1e-4)
    assert blur_per_sample(torch.zeros(0, 4, 9, 9), torch.zeros(0, 7, 7)).shape == (0, 4, 9, 9)
    # Full convolution: the grid grows by k//2 on each side and no mass is lost (kernels sum to 1).
    full = blur_per_sample(maps, kernels, full=True)
    assert full.shape == (3, 4, 15, 15)
    torch.testing.assert_close(full.sum((2, 3)), maps.sum((2, 3)))
    torch.testing.assert_close(full[:, :, 3:-3, 3:-3], got)


def test_blur_hand_written_backward():
    x = torch.rand(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    k = torch.rand(3, 3, 3, dtype=torch.float64, requires_grad=True)  # not symmetric: checks the flips
    for full in (False, True):
        assert torch.autograd.gradcheck(lambda a, b, f=full: blur_per_sample(a, b, f), (x, k))


# ------------------------------------------------------------------------------------------------ pasting
def _hand_pair():
    """Two side-by-side 28 × 28 boxes; subject mask = column index, object mask = row index."""
    boxes = torch.tensor([[0.0, 0.0, 28.0, 28.0], [28.0, 0.0, 56.0, 28.0]])
    ramp = torch.arange(28.0)
    masks = torch.stack([ramp.expand(28, 28), ramp[:, None].expand(28, 28)])[:, None]  # [2, 1, 28, 28]
    return masks, boxes


def test_paste_into_union_hand_built_pair():
    masks, boxes = _hand_pair()
    pairs = torch.tensor([[0, 1], [1, 0]])
    torch.testing.assert_close(union_boxes(boxes, pairs), torch.tensor([[0.0, 0, 56, 28]] * 2))
    out = paste_into_union(masks, boxes, pairs)
    assert out.shape == (2, 2, 1, 28, 28)
    j = torch.arange(28.0)
    # Union cell j has centre x = 2j + 1. Subject (box x ∈ [0, 28)): box-relative sample 2j + 0.5 of a linear
    # ramp, for j ≤ 13; object (box x ∈ [28, 56)): it reads rows exactly (same height), only for j ≥ 14.
    subj = torch.where(j <= 13, 2 * j + 0.5, torch.zeros(())).expand(28, 28)
    obj = torch.where(j >= 14, torch.arange(28.0)[:, None], torch.zeros(())).expand(28, 28)
    torch.testing.assert_close(out[0, 0, 0], subj)
    torch.testing.assert_close(out[1, 0, 0], obj)
    # The reversed pair swaps roles, same frame.
    torch.testing.assert_close(out[0, 1, 0], obj)
    torch.testing.assert_close(out[1, 1, 0], subj)


def test_paste_small_box_inside_union_is_its_indicator():
    boxes = torch.tensor([[0.0, 0.0, 28.0, 28.0], [7.0, 7.0, 14.0, 14.0]])
    masks = torch.ones(2, 1, 28, 28)
    out = paste_into_union(masks, boxes, torch.tensor([[0, 1]]))
    expected = torch.zeros(28, 28)
    expected[7:14, 7:14] = 1  # union cells whose centres (k + 0.5) lie in [7, 14]; no fading at the border
    torch.testing.assert_close(out[1, 0, 0], expected)
    torch.testing.assert_close(out[0, 0, 0], torch.ones(28, 28))  # the big box is the union: unchanged
    assert paste_into_union(masks, boxes, torch.zeros(0, 2, dtype=torch.long)).shape == (2, 0, 1, 28, 28)


def test_paste_identity_when_box_is_union_and_degenerate_box_is_zero():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(2, 3, 8, 8, generator=g)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 30.0], [10.0, 20.0, 10.0, 30.0]])  # second has zero width
    out = paste_into_union(masks, boxes, torch.tensor([[0, 1]]))
    torch.testing.assert_close(out[0, 0], masks[0])
    assert torch.isfinite(out).all() and out[1].abs().sum() == 0


# ---------------------------------------------------------------------------------------------- f_E variants
def _variants(c=1, d=2, s=28, frame="union"):
    torch.manual_seed(0)
    kw = dict(
        in_channels=d, num_mask_channels=c, hidden_dim=8, out_dim=4, roi_size=s, pool_size=4, mask_frame=frame
    )
    return (
        AvgEdgeGrounding(**kw),
        UnionEdgeGrounding(**kw),
        GaussianEdgeGrounding(num_label_classes=3, **kw),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_separable_resample_equals_grid_sample(monkeypatch, dtype):
    """The two-matmul route of resample_to_frames gives grid_sample's values and input gradients: non-square
    masks, frames partly or wholly outside the box, a degenerate box, cells exactly on the box edge."""
    import sgseg.models.grounding.edge as edge

    g = torch.Generator().manual_seed(3)
    b, c = 9, 3
    masks = torch.rand(b, c, 6, 9, generator=g, dtype=dtype)
    xy = torch.rand(b, 2, generator=g, dtype=dtype) * 50
    own = torch.cat([xy, xy + torch.rand(b, 2, generator=g, dtype=dtype) * 40 + 1], 1)
    fxy = xy - torch.rand(b, 2, generator=g, dtype=dtype) * 30
    frames = torch.cat([fxy, fxy + torch.rand(b, 2, generator=g, dtype=dtype) * 90 + 1], 1)
    own[0, 2] = own[0, 0]  # zero-width box: all zero
    frames[1] = own[1]  # the frame is the box: the identity resampling at out_size = mask side ...
    frames[2] = own[2] + 200  # wholly outside: all zero
    frames[3, [0, 2]] = own[3, [0, 2]] * 2 - own[3, [2, 0]]  # twice as wide, centred: cells on the box edges
    frames[3, [1, 3]] = own[3, [1, 3]]
    grad = torch.rand(b, c, 7, 7, generator=g, dtype=dtype)
    results = {}
    for flag in (False, True):
        monkeypatch.setattr(edge, "SEPARABLE_RESAMPLE", flag)
        x = masks.clone().requires_grad_(True)
        out = edge.resample_to_frames(x, own, frames, 7)
        out.backward(grad)
        results[flag] = (out.detach(), x.grad)
        assert out.shape == (b, c, 7, 7)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(results[True][0], results[False][0], atol=tol, rtol=0)
    torch.testing.assert_close(results[True][1], results[False][1], atol=tol, rtol=0)
    assert (results[True][0][0] == 0).all() and (results[True][0][2] == 0).all()
    assert results[True][0][3].abs().sum() > 0
    # the weight rows: two non-zeros at most, summing to 1 inside the box and 0 outside
    w = edge.resample_weights(own[:, 0], own[:, 2], frames[:, 0], frames[:, 2], 9, 7)
    assert ((w != 0).sum(-1) <= 2).all()
    sums = w.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-6) | (sums == 0))
    monkeypatch.setattr(edge, "SEPARABLE_RESAMPLE", True)
    square = torch.rand(1, c, 7, 7, generator=g, dtype=dtype)
    torch.testing.assert_close(
        edge.resample_to_frames(square, own[1:2], own[1:2], 7), square, atol=tol, rtol=0
    )
    assert edge.resample_to_frames(masks[:0], own[:0], frames[:0], 7).shape == (0, c, 7, 7)
    # index=: the rows masks[index] (repeats included), the same bits as gathering first, gradients summed
    index = torch.tensor([4, 0, 4, 8, 1])
    for flag in (False, True):
        monkeypatch.setattr(edge, "SEPARABLE_RESAMPLE", flag)
        x1, x2 = masks.clone().requires_grad_(True), masks.clone().requires_grad_(True)
        gathered = edge.resample_to_frames(x1[index], own[index], frames[index], 7)
        lazy = edge.resample_to_frames(x2, own[index], frames[index], 7, index=index)
        assert torch.equal(gathered, lazy)
        gathered.backward(grad[:5])
        lazy.backward(grad[:5])
        torch.testing.assert_close(x1.grad, x2.grad, atol=tol, rtol=0)
        assert x2.grad[4].abs().sum() > 0 and x2.grad[2].abs().sum() == 0


def test_variants_differ_where_they_should():
    boxes = torch.tensor([[0.0, 0.0, 28.0, 28.0], [28.0, 0.0, 56.0, 28.0]])
    masks = torch.ones(2, 1, 28, 28)  # each object fills its box; the boxes are disjoint
    pairs, labels = torch.tensor([[0, 1]]), torch.full((2, 3), 1 / 3)
    avg, uni, gau = (m.relation_masks(masks, boxes, pairs, labels)[0, 0] for m in _variants())
    torch.testing.assert_close(uni, torch.ones(28, 28))  # logical or of the two halves
    torch.testing.assert_close(avg, torch.full((28, 28), 0.5))
    # Gaussian: product of the blurred halves — zero far from the shared border, positive next to it.
    assert gau[:, :10].abs().max() == 0 and gau[:, 18:].abs().max() == 0
    assert (gau[3:-3, 13:15] > 0.1).all()
    # Where the two masks agree (same object twice), avg and union coincide; the Gaussian blurs the edges.
    same = torch.tensor([[0, 0]])
    a, u, gg = (m.relation_masks(masks, boxes, same, labels)[0, 0] for m in _variants())
    torch.testing.assert_close(a, u)
    assert gg[14, 14].item() == pytest.approx(1.0, abs=1e-5) and gg[0, 14] < 0.9


def test_gaussian_with_tiny_sigma_is_the_plain_product():
    *_, gau = _variants(c=2, s=8)
    torch.nn.init.constant_(gau.param_map.bias, -40.0)  # σ = exp(−20) → delta kernels, ρ = tanh(−40) clamped
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(3, 2, 8, 8, generator=g)
    boxes = torch.tensor([[0.0, 0, 8, 8], [4.0, 2, 12, 10], [1.0, 1, 3, 5]])
    pairs = torch.tensor([[0, 1], [2, 0], [1, 2]])
    # A delta kernel's full convolution is the mask with a 3-cell zero ring, covering the box grown by 3 cells.
    grown = boxes + torch.tensor([-3.0, -3.0, 3.0, 3.0]) * (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) / 8
    pasted = paste_into_union(F.pad(masks, (3, 3, 3, 3)), boxes, pairs, out_size=8, mask_boxes=grown)
    got = gau.relation_masks(masks, boxes, pairs, torch.rand(3, 3))
    torch.testing.assert_close(got, pasted[0] * pasted[1])
    # Away from the box borders that is just the product of the pasted masks themselves.
    plain = paste_into_union(masks, boxes, pairs)
    torch.testing.assert_close(got[0, :, 2:6, 3:5], (plain[0] * plain[1])[0, :, 2:6, 3:5])


def test_gaussian_union_frame_matches_pair_by_pair_route():
    """Blur each object alone (ordinary full conv), paste it with its grown box, multiply — pair by pair."""
    *_, gau = _variants(c=2, s=8)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        gau.param_map.weight.normal_(generator=g)
    masks, labels = torch.rand(3, 2, 8, 8, generator=g), torch.rand(3, 3, generator=g).softmax(1)
    boxes = torch.tensor([[0.0, 0, 8, 8], [4.0, 2, 20, 10], [1.0, 1, 3, 5]])
    pairs = torch.tensor([[0, 1], [2, 0], [1, 2], [1, 0]])
    got = gau.relation_masks(masks, boxes, pairs, labels)
    v = gau.param_map(labels)
    k = gaussian_kernels(torch.exp(0.5 * v[:, 0]), torch.exp(0.5 * v[:, 1]), torch.tanh(v[:, 2]))
    for r, (i, j) in enumerate(pairs.tolist()):
        blurred, grown = [], []
        for o in (i, j):
            blurred.append(F.conv2d(masks[o : o + 1], k[o].expand(2, 1, 7, 7), padding=6, groups=2))
            cell = (boxes[o, 2:] - boxes[o, :2]) / 8
            grown.append(torch.cat([boxes[o, :2] - 3 * cell, boxes[o, 2:] + 3 * cell]))
        pasted = paste_into_union(
            torch.cat(blurred),
            boxes[[i, j]],
            torch.tensor([[0, 1]]),
            out_size=8,
            mask_boxes=torch.stack(grown),
        )
        torch.testing.assert_close(got[r], pasted[0, 0] * pasted[1, 0])
    # Blur spills past the box.
    # (pair 1 = object 2 in box (1, 1, 3, 5) with object 0 = the union; union cell (row 2, col 3) has centre
    # (3.5, 2.5), outside object 2's box: pasting alone gives 0 there, the blurred paste does not.)
    assert (paste_into_union(masks, boxes, pairs)[0, 1, :, 2, 3] == 0).all()
    assert (got[1, :, 2, 3] > 0.01).all()


def test_own_box_frame_reproduces_reference_products():
    avg, uni, gau = _variants(c=2, s=8, frame="own_box")
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(3, 2, 8, 8, generator=g)
    boxes = torch.tensor([[0.0, 0, 8, 8], [40.0, 2, 60, 10], [1.0, 1, 3, 5]])
    pairs = torch.tensor([[0, 1], [2, 0]])
    s, o = masks[pairs[:, 0]], masks[pairs[:, 1]]
    torch.testing.assert_close(avg.relation_masks(masks, boxes, pairs), (s + o) / 2)
    torch.testing.assert_close(uni.relation_masks(masks, boxes, pairs), torch.maximum(s, o))
    kernels = gaussian_kernels(
        torch.ones(2), torch.ones(2), torch.zeros(2)
    )  # the zero-init map: σ = 1, ρ = 0
    expected = blur_per_sample(s, kernels) * blur_per_sample(o, kernels)
    torch.testing.assert_close(gau.relation_masks(masks, boxes, pairs, torch.rand(3, 3)), expected)


def test_reference_sigmoid_option():
    kw = dict(in_channels=2, num_mask_channels=1, hidden_dim=8, out_dim=4, roi_size=8, pool_size=2)
    masks, boxes, pairs = (
        torch.rand(2, 1, 8, 8),
        torch.tensor([[0.0, 0, 8, 8], [2.0, 2, 9, 9]]),
        torch.tensor([[0, 1]]),
    )
    plain = AvgEdgeGrounding(**kw).relation_masks(masks, boxes, pairs)
    ref = AvgEdgeGrounding(sigmoid_relation_masks=True, **kw).relation_masks(masks, boxes, pairs)
    torch.testing.assert_close(ref, plain.sigmoid())
    assert ref.min() >= 0.5 and plain.max() <= 1


def test_gaussian_params_per_object_and_joint():
    kw = dict(in_channels=2, num_mask_channels=1, num_label_classes=3, hidden_dim=8, out_dim=4, roi_size=8)
    joint = GaussianEdgeGrounding(joint_pair_params=True, **kw)
    assert joint.param_map.in_features == 6 and joint.param_map.out_features == 6
    with torch.no_grad():
        joint.param_map.bias.copy_(torch.tensor([0.0, 2 * math.log(2), 0.5, 2 * math.log(3), 0.0, -0.5]))
    sx, sy, rho = joint.kernel_params(torch.rand(4, 3), torch.tensor([[0, 1], [2, 3], [1, 0]]))
    # Subjects' parameters (first 3 outputs) for the R pairs, then objects' (last 3).
    torch.testing.assert_close(sx, torch.tensor([1.0, 1, 1, 3, 3, 3]))
    torch.testing.assert_close(sy, torch.tensor([2.0, 2, 2, 1, 1, 1]))
    torch.testing.assert_close(rho, torch.tanh(torch.tensor([0.5, 0.5, 0.5, -0.5, -0.5, -0.5])))
    per_obj = GaussianEdgeGrounding(**kw)
    with torch.no_grad():
        per_obj.param_map.weight.copy_(torch.eye(3))  # v = label distribution itself
    lp = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.2], [0.0, 2.0, -0.2]])
    sx, sy, rho = per_obj.kernel_params(lp, torch.tensor([[1, 2]]))
    torch.testing.assert_close(sx, torch.tensor([math.e, 1.0]))
    torch.testing.assert_close(sy, torch.tensor([1.0, math.e]))
    torch.testing.assert_close(rho, torch.tanh(torch.tensor([0.2, -0.2])))
    with pytest.raises(ValueError, match="label_probs"):
        per_obj.kernel_params(torch.rand(3, 5), torch.tensor([[1, 2]]))


@pytest.mark.parametrize("joint", [False, True])
def test_gradients_reach_sigma_and_rho(joint):
    torch.manual_seed(0)
    f = GaussianEdgeGrounding(
        3, 4, 5, hidden_dim=8, out_dim=4, roi_size=8, pool_size=2, joint_pair_params=joint
    )
    g = torch.Generator().manual_seed(4)
    masks = torch.rand(3, 4, 8, 8, generator=g)
    boxes = torch.tensor([[0.0, 0, 8, 8], [4.0, 2, 12, 10], [1.0, 1, 6, 5]])
    pairs = torch.tensor([[0, 1], [1, 2], [2, 0]])
    out = f(
        torch.randn(3, 3, 8, 8, generator=g), masks, boxes, pairs, torch.rand(3, 5, generator=g).softmax(1)
    )
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    grad = (
        f.param_map.weight.grad.view(-1, 3, f.param_map.in_features)
        if joint
        else f.param_map.weight.grad[None]
    )
    # Rows v_σx, v_σy and v_ρ of the linear map (for subject and object when joint) all receive gradient.
    assert (grad.abs().sum(-1) > 0).all()
    assert (f.param_map.bias.grad.abs() > 0).all()


EDGE_CLASSES = {"gaussian": GaussianEdgeGrounding, "avg": AvgEdgeGrounding, "union": UnionEdgeGrounding,
                 "none": NoEdgeGrounding}  # fmt: skip


@pytest.mark.parametrize("kind", ["gaussian", "avg", "union", "none"])
def test_forward_batched_equals_pair_by_pair(kind):
    torch.manual_seed(0)
    # the builder's common call: every f_E takes the same size keywords
    f = EDGE_CLASSES[kind](
        in_channels=3,
        num_mask_channels=2,
        num_label_classes=4,
        hidden_dim=8,
        out_dim=5,
        roi_size=8,
        pool_size=4,
    )
    g = torch.Generator().manual_seed(5)
    masks, labels = torch.rand(4, 2, 8, 8, generator=g), torch.rand(4, 4, generator=g).softmax(1)
    boxes = torch.tensor([[0.0, 0, 8, 8], [4.0, 2, 12, 10], [1.0, 1, 6, 5], [0.0, 0, 30, 3]])
    pairs = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 1], [0, 2]])
    union = torch.randn(5, 3, 8, 8, generator=g)
    out = f(union, masks, boxes, pairs, labels)
    assert out.shape == (5, 5) and (out >= 0).all()
    for r in range(5):
        torch.testing.assert_close(
            out[r : r + 1], f(union[r : r + 1], masks, boxes, pairs[r : r + 1], labels)
        )
    empty = f(union[:0], masks, boxes, pairs[:0], labels)
    assert empty.shape == (0, 5)
    if kind == "none":
        torch.testing.assert_close(out, f(union))  # masks are ignored
    else:  # masks matter
        assert not torch.allclose(out, f(union, masks.flip(-1), boxes, pairs, labels))


def test_every_edge_config_option_builds_its_class_with_the_common_call():
    """conf/model/grounding/edge/*.yaml: each option is a `_target_` partial taking the builder's size keywords;
    an option that does not exist is Hydra's own error."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parent.parent / "conf"
    sizes = dict(in_channels=2, num_mask_channels=1, num_label_classes=3, roi_size=8)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for kind, cls in EDGE_CLASSES.items():
            cfg = compose(
                "train", overrides=[f"model/grounding/edge={kind}", "model.grounding.mask_frame=own_box"]
            )
            f = instantiate(cfg.model.grounding.edge)(**sizes)
            assert type(f) is cls and f.out_dim == cfg.model.grounding.out_dim
            assert getattr(f, "mask_frame", "own_box") == "own_box"
        with pytest.raises(MissingConfigException, match="max"):
            compose("train", overrides=["model/grounding/edge=max"])


# ----------------------------------------------------------------------------------------------------- f_N
def test_node_grounding_uses_masks_and_baseline_passes_box_features():
    torch.manual_seed(0)
    f = NodeGrounding(in_channels=3, num_mask_channels=5, hidden_dim=16, out_dim=6, roi_size=8, pool_size=2)
    feats, masks = torch.randn(4, 3, 8, 8), torch.rand(4, 5, 8, 8)
    out = f(feats, masks)
    assert out.shape == (4, 6) and (out >= 0).all()
    assert not torch.allclose(out, f(feats, 1 - masks))
    # Each object sees only its own maps.
    torch.testing.assert_close(f(feats[1:2], masks[1:2]), out[1:2])
    assert f(feats[:0], masks[:0]).shape == (0, 6)
    full = NodeGrounding(3, 5, hidden_dim=16, out_dim=6, roi_size=8, pool_size=8)  # reference: no pooling
    assert full.head.fc1.in_features == 3 * 64 and full(feats, masks).shape == (4, 6)
    with pytest.raises(ValueError, match="masks"):
        f(feats, masks[:, :4])
    box = torch.randn(4, 6)
    assert NoNodeGrounding(box_feature_dim=6)(feats, masks, box) is box
    with pytest.raises(ValueError, match="box_features"):
        NoNodeGrounding(box_feature_dim=7)(feats, masks, box)


@pytest.mark.parametrize("frame", ["union", "own_box"])
def test_joint_params_with_block_weights_equal_per_object(frame):
    """Linear(2C → 6) with weights blockdiag(W, W) is Linear(C → 3) applied to each member: both paths agree."""
    kw = dict(in_channels=2, num_mask_channels=3, num_label_classes=4, hidden_dim=8, out_dim=4, roi_size=8)
    per_obj = GaussianEdgeGrounding(mask_frame=frame, sigmoid_relation_masks=True, **kw)
    joint = GaussianEdgeGrounding(mask_frame=frame, sigmoid_relation_masks=True, joint_pair_params=True, **kw)
    g = torch.Generator().manual_seed(6)
    w, b = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    with torch.no_grad():
        per_obj.param_map.weight.copy_(w)
        per_obj.param_map.bias.copy_(b)
        joint.param_map.weight.copy_(torch.block_diag(w, w))
        joint.param_map.bias.copy_(torch.cat([b, b]))
    masks, labels = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 4, generator=g).softmax(1)
    boxes = torch.tensor([[0.0, 0, 8, 8], [4.0, 2, 12, 10], [1.0, 1, 6, 5]])
    pairs = torch.tensor([[0, 1], [1, 2], [2, 0], [1, 0]])
    a = per_obj.relation_masks(masks, boxes, pairs, labels)
    torch.testing.assert_close(a, joint.relation_masks(masks, boxes, pairs, labels))
    assert a.min() >= 0.5  # the reference's extra sigmoid


@pytest.mark.parametrize("cls", [AvgEdgeGrounding, UnionEdgeGrounding, GaussianEdgeGrounding])
def test_pair_mask_dropout_zeroes_whole_pairs_in_training_only(cls):
    """``pair_mask_dropout=p``: in training each unordered pair's m_{j,j'} reaches the head whole or all zero
    (about a share p of them zero); in evaluation, and with p = 0, the head sees m_{j,j'} unchanged and p = 0 draws
    no random number."""
    kw = dict(in_channels=2, num_mask_channels=1, hidden_dim=8, out_dim=4, roi_size=8, pool_size=2)
    if cls is GaussianEdgeGrounding:
        kw["num_label_classes"] = 3
    torch.manual_seed(0)
    n = 24
    xy = torch.rand(n, 2) * 60
    boxes = torch.cat([xy, xy + 8 + torch.rand(n, 2) * 30], 1)
    masks, labels = torch.rand(n, 1, 8, 8), torch.rand(n, 3).softmax(1)
    pairs = torch.tensor(
        [(i, j) for i in range(n) for j in range(n) if i < j]
    )  # unordered: one head row each
    feats = torch.rand(pairs.shape[0], 2, 8, 8)
    seen = []

    def run(module):
        seen.clear()
        handle = module.head.register_forward_hook(lambda m, args, out: seen.append(args[1].detach().clone()))
        module(feats, masks, boxes, pairs, labels)
        handle.remove()
        return seen[0]

    module = cls(pair_mask_dropout=0.5, **kw)
    m = module.relation_masks(masks, boxes, pairs, labels).detach()
    module.train()
    dropped = run(module)
    zero = dropped.flatten(1).abs().amax(1) == 0
    whole = (dropped == m).flatten(1).all(1)
    assert bool((zero | whole).all())  # whole pairs, never parts of one
    nonzero = m.flatten(1).amax(1) > 0  # (the Gaussian product is exactly 0 for pairs far apart)
    assert int(nonzero.sum()) >= 80 and 0.35 < float(zero[nonzero].float().mean()) < 0.65
    module.eval()
    assert torch.equal(run(module), m)

    plain = cls(**kw)
    plain.load_state_dict(module.state_dict())
    plain.train()
    state = torch.random.get_rng_state()
    assert torch.equal(run(plain), m) and torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="pair_mask_dropout"):
        cls(pair_mask_dropout=1.0, **kw)


def test_pair_mask_dropout_from_the_config():
    """``model.grounding.pair_mask_dropout`` reaches every mask edge grounding (0 by default, the paper)."""
    from hydra import compose, initialize_config_dir

    from .conftest import REPO

    for edge in ("avg", "union", "gaussian"):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            default = compose("train", overrides=[f"model/grounding/edge={edge}"])
            set_ = compose(
                "train", overrides=[f"model/grounding/edge={edge}", "model.grounding.pair_mask_dropout=0.3"]
            )
        assert default.model.grounding.edge.pair_mask_dropout == 0.0
        assert set_.model.grounding.edge.pair_mask_dropout == 0.3
