"""The stage-2 speed-ups compute the same numbers as the plain code path they replace.

- ``concat_conv2d`` (grounding heads' first conv, mask-channel-only input gradient) vs ``conv(cat(...))``
  under autograd: forward bit for bit, gradients to float tolerance, and finite differences (gradcheck).
- f_E once per unordered pair vs every ordered pair: outputs and parameter gradients to float tolerance
  (the heads' conv over fewer rows may round differently), for every variant; the order-dependent reference variant (joint kernel parameters) and
  non-symmetric union features take the direct route.
- The scene-graph model pools each unordered pair's union box once and gathers f_E's output: the same bits as
  pooling every ordered pair (losses, gradients, test logits), half the union rows at test.
- The grounding heads' fixed-window pooling = ``adaptive_avg_pool2d`` bit for bit (values and gradients).
- The whole stage-2 step (losses, gradients, test logits) equals the plain path to float tolerance.
"""

from __future__ import annotations

import pytest
import torch

import sgseg.models.grounding.concat_conv as concat_conv
from sgseg.models.grounding import (
    AvgEdgeGrounding,
    GaussianEdgeGrounding,
    NoEdgeGrounding,
    UnionEdgeGrounding,
    union_boxes,
)
from sgseg.models.grounding.concat_conv import _ConcatConv2d, concat_conv2d
from sgseg.models.grounding.edge import forward_once_per_unordered_pair, unordered_pairs
from sgseg.models.grounding.node import GroundingHead
from sgseg.models.speedups import code_path

from .test_scene_graph_module import _build, _first_batch, data_dir  # noqa: F401 (data_dir: a fixture)

# the stage-2 speed-ups these tests compare (RoIAlign's SEPARABLE is tested against torchvision's kernel in
# tests/test_roi_align.py; POOL_REPEATED_BOXES_ONCE joins them for the whole step below)
GROUNDING_FLAGS = (
    "ONCE_PER_UNORDERED_PAIR",
    "MASK_ONLY_INPUT_GRAD",
    "SEPARABLE_RESAMPLE",
    "CHANNELS_LAST",
    "WINDOW_POOL",
)


def plain_path(*extra: str):
    return code_path(False, GROUNDING_FLAGS + extra)


# ------------------------------------------------------------------------------------------ concat_conv2d
@pytest.mark.parametrize(
    "features_grad,masks_grad", [(False, True), (True, True), (True, False), (False, False)]
)
def test_concat_conv_gradcheck(features_grad, masks_grad):
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(7, 5, 3, padding=1).double()
    f = torch.randn(3, 4, 6, 6, dtype=torch.float64, generator=g).requires_grad_(features_grad)
    m = torch.rand(3, 3, 6, 6, dtype=torch.float64, generator=g).requires_grad_(masks_grad)
    assert torch.autograd.gradcheck(
        lambda f, m, w, b: _ConcatConv2d.apply(f, m, w, b, 1), (f, m, conv.weight, conv.bias)
    )


def test_concat_conv_equals_plain_conv():
    g = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(64 + 19, 64, 3, padding=1)
    f = torch.randn(6, 64, 14, 14, generator=g)
    m = torch.rand(6, 19, 14, 14, generator=g)
    grad_out = torch.randn(6, 64, 14, 14, generator=g)

    def run(fast: bool, channels_last: bool = True):
        conv.zero_grad()
        mm = m.clone().requires_grad_()
        concat_conv.MASK_ONLY_INPUT_GRAD, concat_conv.CHANNELS_LAST = fast, channels_last
        try:
            y = concat_conv2d(conv, f, mm)
        finally:
            concat_conv.MASK_ONLY_INPUT_GRAD = concat_conv.CHANNELS_LAST = True
        y.backward(grad_out)
        return y.detach(), mm.grad, conv.weight.grad.clone(), conv.bias.grad.clone()

    fast, plain, nchw = run(True), run(False), run(True, channels_last=False)
    assert torch.equal(nchw[0], plain[0])  # the same single conv2d call, in the same layout
    for a, b in zip(fast, plain):  # channels-last (the CPU default): the same numbers up to rounding
        # (the weight gradient sums 1,176 products of magnitude ~1: |Δ| ≤ 2e-4 is float32 rounding)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4)
    for a, b in zip(nchw[1:], plain[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (
        fast[2].is_contiguous() and fast[1].is_contiguous()
    )  # gradients in the parameter's / input's layout
    # and the mask gradient is the mask channels' slice of the full input gradient (by hand: conv transpose)
    w_m = conv.weight[:, 64:].detach()
    by_hand = torch.nn.functional.conv_transpose2d(grad_out, w_m, padding=1)
    torch.testing.assert_close(fast[1], by_hand, rtol=1e-5, atol=1e-5)


def test_concat_conv_empty_batch_and_bad_input():
    conv = torch.nn.Conv2d(5, 2, 3, padding=1)
    m = torch.rand(0, 3, 4, 4, requires_grad=True)
    y = concat_conv2d(conv, torch.rand(0, 2, 4, 4), m)
    y.sum().backward()
    assert y.shape == (0, 2, 4, 4) and m.grad.shape == m.shape and conv.weight.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="in_channels"):
        concat_conv2d(conv, torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="stride-1"):
        concat_conv2d(
            torch.nn.Conv2d(5, 2, 3, stride=2, padding=1), torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4)
        )


def _rel_err(a, b) -> float:
    """|a − b| / |b| over the whole tensor (Frobenius norms)."""
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_concat_conv_under_cpu_bf16_autocast_runs_the_custom_backward_in_bf16():
    """Under CPU bf16 autocast the custom Function runs (mask-only input gradient) in bf16: output bf16 as
    autocast's conv2d gives it, gradients in their inputs' dtypes, all equal to the plain autocast route up to
    bf16 rounding and near the float32 numbers; the features get no gradient."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 6, 3, padding=1)
    f = torch.rand(5, 16, 10, 10)
    m = torch.rand(5, 8, 10, 10, requires_grad=True)
    g = torch.randn(5, 6, 10, 10)
    runs = {}
    for route in ("custom", "plain", "fp32"):
        conv.zero_grad()
        m.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=route != "fp32"):
            y = concat_conv2d(conv, f, m) if route != "plain" else conv(torch.cat([f, m], 1))
        (y.float() * g).sum().backward()
        runs[route] = (y.detach(), m.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
        if route == "custom":
            assert type(y.grad_fn).__name__ == "_ConcatConv2dBackward"
            assert y.dtype == torch.bfloat16 and m.grad.dtype == torch.float32
            assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.is_contiguous()
    for i, name in enumerate(("output", "mask grad", "weight grad", "bias grad")):
        assert _rel_err(runs["custom"][i], runs["plain"][i]) < 1e-2, name
        assert _rel_err(runs["custom"][i], runs["fp32"][i]) < 2e-2, name
        assert _rel_err(runs["custom"][i], runs["fp32"][i]) > 0, name  # really bf16, not float32


def test_bf16_convs_switch_grounding_and_refinement_heads(monkeypatch):
    """``BF16_CONVS`` (the config's ``cpu_bf16_convs``): the heads' convs run in bf16, their outputs and every
    parameter's gradient stay float32 and near the float32 numbers; switched off, the float32 numbers bit for
    bit."""
    from sgseg.models.masks.refine import MaskRefinement

    torch.manual_seed(0)
    head = GroundingHead(16, 8, hidden_dim=32, out_dim=16, roi_size=14, pool_size=7)
    refine = MaskRefinement(16, 12, 5, hidden=8, num_convs=2, roi_size=7)
    torch.nn.init.normal_(refine.predictor.weight, std=0.1)  # zero-initialised: give the output some signal
    f, m = torch.randn(6, 16, 14, 14), torch.rand(6, 8, 14, 14, requires_grad=True)
    rf, ctx = torch.randn(6, 16, 7, 7), torch.randn(6, 12)
    runs = {}
    for flag in (False, True, None):  # None: off again, after the bf16 run
        monkeypatch.setattr(concat_conv, "BF16_CONVS", bool(flag))
        for mod in (head, refine):
            mod.zero_grad()
        m.grad = None
        out_h, out_r = head(f, m), refine(rf, ctx)
        (out_h.square().sum() + out_r.sigmoid().sum()).backward()
        assert out_h.dtype == out_r.dtype == torch.float32
        grads = [p.grad.clone() for p in [*head.parameters(), *refine.parameters()]]
        assert all(gr.dtype == torch.float32 for gr in grads)
        runs[flag] = [out_h.detach(), out_r.detach(), m.grad.clone(), *grads]
    for a, b, c in zip(runs[True], runs[False], runs[None]):
        assert torch.equal(b, c)
        # bf16 keeps 8 significant bits (0.4 % a value); sums with cancellation lose more (the mask gradient
        # here: 3.7 %, the outputs 0.2-0.5 %)
        assert 0 < _rel_err(a, b) < 6e-2
    monkeypatch.setattr(concat_conv, "BF16_CONVS", True)  # the switch is CPU-only: a no-op context elsewhere
    assert concat_conv.cpu_bf16_convs(torch.device("cuda")).__class__.__name__ == "nullcontext"


# ------------------------------------------------------------------------------------- unordered pairs
def test_unordered_pairs_by_hand():
    pairs = torch.tensor([[0, 1], [1, 0], [2, 0], [1, 2], [0, 2], [3, 3], [2, 1]])
    first, inverse = unordered_pairs(pairs)
    # {0,1}: rows 0,1; {0,2}: rows 2,4; {1,2}: rows 3,6; {3,3}: row 5 — keys sorted: {0,1} {0,2} {1,2} {3,3}
    assert first.tolist() == [0, 2, 3, 5]
    assert inverse.tolist() == [0, 0, 1, 2, 1, 3, 2]
    e_first, e_inverse = unordered_pairs(torch.zeros(0, 2, dtype=torch.long))
    assert e_first.numel() == 0 and e_inverse.numel() == 0


def test_once_per_unordered_pair_calls_fn_on_distinct_pairs_only():
    pairs = torch.tensor([[0, 1], [1, 0], [2, 0], [0, 2], [1, 2]])
    feats = torch.rand(3, 2)[torch.tensor([0, 0, 1, 1, 2])]  # reverse rows share their feature
    seen = []

    def fn(f, p):
        seen.append(p.shape[0])
        return f * 10 + p.sum(1, keepdim=True)

    out = forward_once_per_unordered_pair(fn, feats, pairs)
    assert seen == [3]
    assert torch.equal(out, feats * 10 + pairs.sum(1, keepdim=True))
    # different features for a reverse pair: fn runs on all rows as given
    seen.clear()
    other = feats.clone()
    other[1] += 1
    assert torch.equal(forward_once_per_unordered_pair(fn, other, pairs), fn(other, pairs)) and seen == [5, 5]


# ------------------------------------------------------------------------------------------- f_E variants
def _scene(seed: int = 0, n: int = 5, c: int = 3, d: int = 4, s: int = 8):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 20], 1)
    masks = torch.rand(n, c, s, s, generator=g)
    labels = torch.rand(n, 4, generator=g).softmax(1)
    ordered = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j])
    pairs = ordered[torch.randperm(ordered.shape[0], generator=g)[:15]]
    # union features as the model makes them: one per union box, so (j, j') and (j', j) share theirs
    ub = union_boxes(boxes, pairs)
    feats = torch.sin(ub.sum(1).view(-1, 1, 1, 1) + torch.arange(d * s * s).view(1, d, s, s) * 0.01)
    return feats, masks, boxes, pairs, labels


def _edge_modules():
    kw = dict(in_channels=4, hidden_dim=8, out_dim=6, roi_size=8, pool_size=4)
    mk = dict(kw, num_mask_channels=3)
    return {
        "none": NoEdgeGrounding(**kw),
        "avg": AvgEdgeGrounding(**mk),
        "union": UnionEdgeGrounding(**mk),
        "gaussian": GaussianEdgeGrounding(num_label_classes=4, **mk),
        "gaussian_own_box": GaussianEdgeGrounding(num_label_classes=4, mask_frame="own_box", **mk),
        "gaussian_joint": GaussianEdgeGrounding(num_label_classes=4, joint_pair_params=True, **mk),
    }


@pytest.mark.parametrize("name", ["none", "avg", "union", "gaussian", "gaussian_own_box", "gaussian_joint"])
def test_fast_paths_give_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    module = _edge_modules()[name]
    if isinstance(module, GaussianEdgeGrounding):
        with torch.no_grad():  # non-trivial, order-dependent kernels for the joint variant
            module.param_map.weight.normal_(0, 0.5)
    feats, masks, boxes, pairs, labels = _scene()
    assert unordered_pairs(pairs)[0].numel() < pairs.shape[0]  # the scene does hold reverse pairs
    grad_out = torch.randn(pairs.shape[0], 6)

    def run():
        module.zero_grad()
        out = module(feats, masks, boxes, pairs, labels)
        out.backward(grad_out)
        return out.detach(), {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}

    fast_out, fast_grads = run()
    with plain_path():
        plain_out, plain_grads = run()
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == plain_grads.keys() and fast_grads
    for k in fast_grads:
        torch.testing.assert_close(fast_grads[k], plain_grads[k], rtol=1e-5, atol=1e-6, msg=k)
    if name == "gaussian_joint":
        assert not module.symmetric
    else:  # the reverse of a pair gets the same feature on the symmetric variants
        fwd = module(feats, masks, boxes, pairs, labels)
        first, inverse = unordered_pairs(pairs)
        torch.testing.assert_close(fwd, fwd[first][inverse], rtol=0, atol=0)


def test_grounding_head_backward_reaches_masks_only_when_needed():
    head = GroundingHead(4, 3, hidden_dim=8, out_dim=6, roi_size=8, pool_size=4)
    f, m = torch.rand(2, 4, 8, 8), torch.rand(2, 3, 8, 8, requires_grad=True)
    head(f, m).sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0 and f.grad is None


# ---------------------------------------------------------------------------------- RoIAlign of repeated boxes
def test_roi_features_pool_repeated_boxes_once_with_the_same_result():
    from tests.test_detector import images_of, tiny_detector

    det = tiny_detector().eval()
    g = torch.Generator().manual_seed(3)
    images = images_of(torch.rand(2, 3, 96, 128, generator=g), [(96, 128), (80, 100)])
    with torch.no_grad():
        feats = det.features(images)
        boxes = torch.tensor([[4.0, 6, 60, 50], [10, 12, 90, 70], [0, 0, 30, 20], [2.5, 3, 40, 77]])
        index = torch.tensor([0, 0, 1, 1])
        pairs = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 2], [0, 1]])
        ub = union_boxes(boxes, pairs)  # rows 0, 1, 4 are the same box, rows 2, 3 too
        got = det.roi_features(feats, images, ub, index[pairs[:, 0]], 7)
        one_by_one = torch.cat([det.roi_features(feats, images, ub[i : i + 1], index[pairs[i : i + 1, 0]], 7)
                                for i in range(5)])  # fmt: skip
        # the same box in another image is another box
        other = det.roi_features(feats, images, ub[:2], torch.tensor([0, 1]), 7)
    assert torch.equal(got, one_by_one)
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[4]) and not torch.equal(other[0], other[1])


# ------------------------------------------------------------------------------------- the whole stage-2 model
def _step_and_test(model, module, batch, mode: str, before_test=None):
    """One training forward + backward (seeded: the same sampled pairs and dropout) and a test forward:
    (losses, parameter gradients, test predictions)."""
    torch.manual_seed(0)
    model.train()
    model.zero_grad()
    losses = module.losses(batch)
    sum(losses.values()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.eval()
    if before_test is not None:
        before_test()
    with torch.no_grad():
        predictions = model(*batch["vg"], mode).predictions
    return {k: v.detach() for k, v in losses.items()}, grads, predictions


@pytest.mark.parametrize("mode,edge", [("predcls", "gaussian"), ("sgcls", "gaussian"), ("sgcls", "none")])
def test_stage2_step_equals_the_plain_path(data_dir, mode, edge):  # noqa: F811
    from sgseg.lit.scene_graph_module import SceneGraphModule

    cfg, dm, model, inputs = _build(data_dir, f"model/grounding/edge={edge}")
    module = SceneGraphModule(model, mode, len(inputs.object_classes) + 1, len(inputs.predicates) + 1)
    batch = _first_batch(dm)

    def step():
        losses, grads, predictions = _step_and_test(model, module, batch, mode)
        return losses, grads, predictions.rel_logits

    fast = step()
    with plain_path("POOL_REPEATED_BOXES_ONCE", "DECODER_INPUT_ONCE"):
        plain = step()
    assert fast[0].keys() == plain[0].keys()
    # a conv over U distinct pairs instead of R rows may round differently (oneDNN blocks by batch size)
    for k in fast[0]:
        torch.testing.assert_close(fast[0][k], plain[0][k], rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(fast[2], plain[2], rtol=1e-4, atol=1e-4)
    assert fast[1].keys() == plain[1].keys() and len(fast[1]) > 10
    for k in fast[1]:
        torch.testing.assert_close(fast[1][k], plain[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_refinement_head_channels_last_equals_nchw(monkeypatch):
    """MaskRefinement on CPU runs its convs channels-last (CHANNELS_LAST): outputs and gradients equal the NCHW
    route up to float rounding, and come back in NCHW."""
    from sgseg.models.masks.refine import MaskRefinement

    torch.manual_seed(0)
    head = MaskRefinement(16, 12, 5, hidden=8, num_convs=2, roi_size=7)
    torch.nn.init.normal_(head.predictor.weight, std=0.1)  # zero-initialised: give the output some signal
    x, ctx = torch.randn(9, 16, 7, 7), torch.randn(9, 12, requires_grad=True)
    runs = {}
    for flag in (False, True):
        monkeypatch.setattr(concat_conv, "CHANNELS_LAST", flag)
        head.zero_grad()
        ctx.grad = None
        y = head(x, ctx)
        y.sigmoid().sum().backward()
        runs[flag] = (y.detach(), ctx.grad.clone(), head.convs[0].weight.grad.clone())
        assert y.is_contiguous() and head.convs[0].weight.grad.is_contiguous()
    for a, b in zip(runs[True], runs[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert runs[True][0].abs().sum() > 0


@pytest.mark.parametrize("mode,edge", [("predcls", "gaussian"), ("sgcls", "none")])
def test_union_boxes_pooled_once_per_unordered_pair(data_dir, mode, edge, monkeypatch):  # noqa: F811
    """SceneGraphModel pools each unordered pair's union box once and runs f_E on those rows only, gathering
    f_E's output back to the ordered pairs: the same bits as pooling every ordered pair and letting the edge
    grounding deduplicate (the previous route), with half the union-box rows."""
    import sgseg.models.scene_graph as sg_mod
    from sgseg.lit.scene_graph_module import SceneGraphModule

    cfg, dm, model, inputs = _build(data_dir, f"model/grounding/edge={edge}")
    module = SceneGraphModule(model, mode, len(inputs.object_classes) + 1, len(inputs.predicates) + 1)
    batch = _first_batch(dm)
    rows: list[int] = []
    pool = model.detector.roi_features

    def spy(features, images, boxes, image_index, size):
        if size == model.roi_size and boxes.shape[0] != image_index.shape[0]:
            raise AssertionError("boxes and image_index disagree")
        rows.append(boxes.shape[0])
        return pool(features, images, boxes, image_index, size)

    monkeypatch.setattr(model.detector, "roi_features", spy)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        model.load_state_dict(initial)
        losses, grads, out = _step_and_test(model, module, batch, mode, before_test=rows.clear)
        return losses, grads, out.rel_logits, out.pair_index, list(rows)

    once = step()
    with monkeypatch.context() as m:  # every ordered pair pooled; f_E deduplicates inside
        m.setattr(sg_mod, "unordered_pairs", lambda p: (torch.arange(p.shape[0]), torch.arange(p.shape[0])))
        every = step()
    assert {k: float(v) for k, v in once[0].items()} == {k: float(v) for k, v in every[0].items()}
    assert once[1].keys() == every[1].keys() and all(torch.equal(once[1][k], every[1][k]) for k in once[1])
    assert torch.equal(once[2], every[2]) and torch.equal(once[3], every[3])
    # at test every ordered pair of an image is scored (one chunk here): each unordered pair's union box is
    # pooled once instead of twice; the objects' own RoI calls are the same in both
    n_pairs = once[3].shape[0]
    assert n_pairs > 0 and n_pairs % 2 == 0
    assert sum(every[4]) - sum(once[4]) == n_pairs // 2


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("side,size", [(28, 7), (28, 14), (28, 28), (14, 7), (28, 5)])
def test_pool_to_equals_adaptive_avg_pool(side, size, channels_last):
    """The grounding head's pooling: fixed windows when they tile the map, the same bits forward and back as
    ``adaptive_avg_pool2d`` (and ``adaptive_avg_pool2d`` itself otherwise: 28 → 5)."""
    from sgseg.models.grounding.node import pool_to

    x0 = torch.randn(5, 6, side, side, generator=torch.Generator().manual_seed(side + size))
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    g = torch.randn(5, 6, size, size, generator=torch.Generator().manual_seed(1))
    out = {}
    for name, fn in (("ours", pool_to), ("adaptive", torch.nn.functional.adaptive_avg_pool2d)):
        x = x0.clone().requires_grad_()
        y = fn(x, size)
        y.backward(g)
        out[name] = (y.detach(), x.grad)
    assert out["ours"][0].shape == (5, 6, size, size)
    assert torch.equal(out["ours"][0], out["adaptive"][0]) and torch.equal(out["ours"][1], out["adaptive"][1])
    if side % size == 0:  # and it is the window average, by hand
        k = side // size
        by_hand = x0.reshape(5, 6, size, k, size, k).double().mean((3, 5))
        torch.testing.assert_close(out["ours"][0].double(), by_hand, rtol=1e-6, atol=1e-6)


def test_code_path_sets_the_named_flags_and_restores_them():
    import importlib

    from sgseg.models.speedups import FLAGS, SWITCHES

    def values():
        return {flag: getattr(importlib.import_module(mod), flag) for mod, flag in SWITCHES}

    before = values()
    others = {"POOL_REPEATED_BOXES_ONCE", "SEPARABLE", "DECODER_INPUT_ONCE"}
    assert set(before) == set(FLAGS) == set(GROUNDING_FLAGS) | others
    with plain_path("POOL_REPEATED_BOXES_ONCE", "DECODER_INPUT_ONCE"):
        inside = values()
    assert inside == {f: (False if f != "SEPARABLE" else before[f]) for f in FLAGS}
    assert values() == before
    with pytest.raises(RuntimeError), code_path(False):  # restored after an exception too
        assert not any(values().values())
        raise RuntimeError
    assert values() == before
    with pytest.raises(ValueError, match="NOT_A_FLAG"), code_path(True, ["NOT_A_FLAG"]):
        pass


@pytest.mark.parametrize("training", [True, False])
def test_motif_decoder_input_projected_once_equals_step_by_step(training):
    """``DECODER_INPUT_ONCE``: the label decoder's logits, committed labels and every gradient equal the
    step-by-step projection of [row, previous label's embedding] up to float rounding (teacher forcing in
    training, greedy labels at test), over sequences of different lengths."""
    from sgseg.models.context.base import SequenceLayout
    from sgseg.models.context.motif import MotifContext

    torch.manual_seed(0)
    ctx = MotifContext(12, 7, embed_dim=6, hidden_dim=10, pos_dim=4, dropout=0.0).double()
    ctx.train(training)
    x = torch.randn(9, 12 + 6 + 4 + 10, dtype=torch.float64, requires_grad=True)
    gt = torch.randint(1, 7, (9,))
    layout = SequenceLayout(torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2]), torch.rand(9))
    runs = {}
    for flag in (True, False):
        with code_path(flag, ["DECODER_INPUT_ONCE"]):
            ctx.zero_grad()
            x.grad = None
            logits, labels = ctx.decode(x, layout, gt if training else None)
            (logits * torch.linspace(-1, 1, 7, dtype=torch.float64)).square().sum().backward()
            runs[flag] = (logits.detach(), labels, x.grad.clone(),
                          *[p.grad.clone() for p in ctx.decoder_cell.parameters()])  # fmt: skip
    assert torch.equal(runs[True][1], runs[False][1])
    for a, b in zip(runs[True], runs[False]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert runs[True][0].abs().sum() > 0 and runs[True][3].abs().sum() > 0


def test_bench_stage2_ablation_column_switches_off_one_flag_only():
    """``scripts/bench_stage2.py --ablate FLAG``: its ``-FLAG`` column runs the current path with only FLAG off
    (and ``before`` the plain path, ``after`` the current one); every flag is restored afterwards."""
    import importlib
    import importlib.util
    from pathlib import Path

    from sgseg.models.speedups import FLAGS, SWITCHES

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_stage2.py"
    spec = importlib.util.spec_from_file_location("bench_stage2", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def values():
        return {flag: getattr(importlib.import_module(mod), flag) for mod, flag in SWITCHES}

    before = values()
    for flag in ("CHANNELS_LAST", "SEPARABLE", "ONCE_PER_UNORDERED_PAIR"):
        with bench.path_switches(f"-{flag}"):
            assert values() == {f: f != flag for f in FLAGS}
            assert not concat_conv.BF16_CONVS
        assert values() == before
    with bench.path_switches("before"):
        assert not any(values().values())
    with bench.path_switches("after"):
        assert all(values().values())
    with bench.path_switches("bf16"):
        assert all(values().values()) and concat_conv.BF16_CONVS
    assert values() == before and not concat_conv.BF16_CONVS
