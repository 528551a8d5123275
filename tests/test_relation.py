"""Stage-2 relation head: frequency bias, predictor, pair sampling, losses, and a tiny end-to-end fit."""

from __future__ import annotations

import math

import torch

from sgseg.models.context import MotifContext, VCTreeContext
from sgseg.models.relation import (
    FrequencyBias,
    RelationPredictor,
    all_pairs,
    log_predicate_distribution,
    object_loss,
    relation_loss,
    sample_gt_pairs,
    sample_sgdet_pairs,
    tree_score_loss,
    tree_score_targets,
)

# ------------------------------------------------------------------------------------------- frequency bias


def test_frequency_bias_from_hand_statistics():
    fg = torch.zeros(2, 2, 3, dtype=torch.long)
    fg[1, 1] = torch.tensor([0, 3, 1])  # (1, 1): predicate 1 three times, predicate 2 once
    fg[0, 1, 2] = 2
    bg = torch.tensor([[0, 1], [4, 3]])
    eps = 1e-3
    table = log_predicate_distribution(fg, bg, eps)
    # (1, 1): bg + 1 = 4 → counts (4, 3, 1) / 8
    assert torch.allclose(table[1, 1], torch.log(torch.tensor([4 / 8, 3 / 8, 1 / 8]) + eps))
    # (0, 1): bg + 1 = 2 → (2, 0, 2) / 4
    assert torch.allclose(table[0, 1], torch.log(torch.tensor([0.5, 0.0, 0.5]) + eps))
    # (0, 0): never seen → all mass on background
    assert torch.allclose(table[0, 0], torch.log(torch.tensor([1.0, 0.0, 0.0]) + eps), atol=1e-6)
    fb = FrequencyBias.from_statistics(fg, bg, eps)
    out = fb(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 0]))
    assert torch.allclose(out, torch.stack([table[1, 1], table[0, 1], table[1, 0]]))
    # (1, 0): bg 4 + 1 = 5 and no predicate → log(1 + eps) on background
    assert math.isclose(float(out[2, 0].detach()), math.log(1 + eps), rel_tol=1e-6)
    assert fb.obj_baseline.weight.requires_grad  # trainable
    # soft labels: a one-hot distribution indexes the same row
    soft = fb.index_with_probability(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(soft[0], table[1, 1])
    # no bg matrix: zeros + 1
    assert torch.allclose(
        log_predicate_distribution(fg)[1, 1], torch.log(torch.tensor([0.2, 0.6, 0.2]) + eps)
    )


# ------------------------------------------------------------------------------------------- predictor


def test_relation_predictor_hand_worked():
    """H = pooling = union = 1, C_rel = 2: logits = (2 e_s + 3 e_o) · u · (1, −1) + (0, 0.5) + freq bias."""
    fb = FrequencyBias(3, 2)
    with torch.no_grad():
        fb.obj_baseline.weight.copy_(torch.arange(18.0).reshape(9, 2) / 10)
    pred = RelationPredictor(1, 1, 1, num_obj_classes=3, num_predicates=2, freq_bias=fb)
    with torch.no_grad():
        pred.post_emb.weight.copy_(torch.tensor([[2.0], [3.0]]))
        pred.post_emb.bias.zero_()
        pred.post_cat.weight.copy_(torch.tensor([[1.0, 1.0]]))
        pred.post_cat.bias.zero_()
        pred.rel_compress.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        pred.rel_compress.bias.copy_(torch.tensor([0.0, 0.5]))
    edge = torch.tensor([[1.0], [2.0]])
    pairs = torch.tensor([[0, 1], [1, 0]])
    union = torch.tensor([[1.0], [2.0]])
    labels = torch.tensor([1, 2])
    out = pred(edge, pairs, union, labels)
    # pair (0, 1): f = (2·1 + 3·2)·1 = 8; freq row 1·3 + 2 = 5 → (1.0, 1.1)
    # pair (1, 0): f = (2·2 + 3·1)·2 = 14; freq row 2·3 + 1 = 7 → (1.4, 1.5)
    expected = torch.tensor([[8 + 1.0, -8 + 0.5 + 1.1], [14 + 1.4, -14 + 0.5 + 1.5]])
    assert torch.allclose(out, expected, atol=1e-6)
    # R = 0
    empty = pred(edge, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 1), labels)
    assert empty.shape == (0, 2)


def test_relation_predictor_projects_union_features():
    torch.manual_seed(0)
    pred = RelationPredictor(4, 6, 5, num_obj_classes=3, num_predicates=4, freq_bias=None, project_relu=True)
    edge = torch.randn(3, 4)
    pairs = all_pairs(torch.tensor([0, 0, 0]))
    union = torch.randn(6, 6)
    out = pred(edge, pairs, union, torch.tensor([1, 2, 1]))
    e = torch.relu(pred.post_emb(edge))
    ref = pred.rel_compress(
        pred.post_cat(torch.cat([e[pairs[:, 0], :4], e[pairs[:, 1], 4:]], 1)) * pred.up_dim(union)
    )
    assert out.shape == (6, 4) and torch.allclose(out, ref)


# ------------------------------------------------------------------------------------------- sampling


def test_all_pairs_hand_worked():
    pairs = all_pairs(torch.tensor([0, 0, 1, 1, 1, 2]))
    assert pairs.tolist() == [[0, 1], [1, 0], [2, 3], [2, 4], [3, 2], [3, 4], [4, 2], [4, 3]]
    assert all_pairs(torch.tensor([1, 0, 1])).tolist() == [[0, 2], [2, 0]]
    assert all_pairs(torch.zeros(0, dtype=torch.long)).shape == (0, 2)
    assert all_pairs(torch.tensor([0])).shape == (0, 2)


def test_sample_gt_pairs_hand_worked():
    # image 0: 4 objects, GT 0→1 (predicate 3, and a duplicate row with 4), 2→3 (5); image 1: one object
    image_index = torch.tensor([0, 0, 0, 0, 1])
    rels = torch.tensor([[0, 1, 3], [2, 3, 5], [0, 1, 4]])
    non_gt = {(i, j) for i in range(4) for j in range(4) if i != j} - {(0, 1), (2, 3)}
    assert len(non_gt) == 10
    seen_dup_labels = set()
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        pairs, labels = sample_gt_pairs(
            rels, image_index, pairs_per_image=6, positive_fraction=0.5, generator=g
        )
        assert pairs.shape == (6, 2) and labels.shape == (6,) and labels.dtype == torch.long
        fg = {tuple(p): int(lab) for p, lab in zip(pairs.tolist(), labels.tolist(), strict=True) if lab > 0}
        assert set(fg) == {(0, 1), (2, 3)} and fg[(2, 3)] == 5 and fg[(0, 1)] in (3, 4)
        seen_dup_labels.add(fg[(0, 1)])
        assert labels[:2].gt(0).all() and labels[2:].eq(0).all()  # foreground first
        bg = [tuple(p) for p in pairs[2:].tolist()]
        assert len(set(bg)) == 4 and set(bg) <= non_gt
    assert seen_dup_labels == {3, 4}  # a random predicate among duplicates
    # a large budget takes every background pair; a cap of 1 foreground keeps exactly one
    pairs, labels = sample_gt_pairs(rels, image_index, pairs_per_image=100, positive_fraction=0.25)
    assert {tuple(p) for p in pairs[labels == 0].tolist()} == non_gt and int((labels > 0).sum()) == 2
    pairs, labels = sample_gt_pairs(rels, image_index, pairs_per_image=4, positive_fraction=0.25)
    assert int((labels > 0).sum()) == 1 and pairs.shape == (4, 2)


def test_sample_gt_pairs_per_image_budgets_and_empty():
    image_index = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2])
    rels = torch.tensor([[0, 1, 1], [3, 4, 2], [4, 5, 2], [5, 6, 2], [6, 7, 2], [7, 3, 9]])
    pairs, labels = sample_gt_pairs(rels, image_index, pairs_per_image=8, positive_fraction=0.25)
    img = image_index[pairs[:, 0]]
    assert torch.equal(img, torch.sort(img).values)  # grouped by image
    assert bool((image_index[pairs[:, 1]] == img).all())
    assert [int(((img == b) & (labels > 0)).sum()) for b in range(3)] == [1, 2, 0]  # image 1 capped at 2
    assert [int((img == b).sum()) for b in range(3)] == [6, 8, 0]  # image 0 has only 6 ordered pairs
    # R = 0 and N = 0
    p, lab = sample_gt_pairs(torch.zeros(0, 3, dtype=torch.long), torch.tensor([0, 0]))
    assert p.tolist() == [[0, 1], [1, 0]] and lab.tolist() == [0, 0]
    p, lab = sample_gt_pairs(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert p.shape == (0, 2) and lab.shape == (0,)


def _sgdet_scene():
    gt_boxes = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10.0]])  # A (label 1) → B (label 2), predicate 3
    det_boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # p0: label 1, IoU(A) 1
            [1, 0, 10, 10],  # p1: label 1, IoU(A) 0.9
            [0, 0, 10, 10],  # p2: label 2, wrong label for A
            [20, 0, 30, 10],  # p3: label 2, IoU(B) 1
            [25, 0, 35, 10],  # p4: label 2, IoU(B) 1/3
            [20, 0, 29, 10],  # p5: label 2, IoU(B) 0.9
            [0, 0, 30, 10.0],  # p6: background proposal
        ]
    )
    det_labels = torch.tensor([1, 1, 2, 2, 2, 2, 0])
    return gt_boxes, det_boxes, det_labels


def test_sample_sgdet_pairs_matching():
    gt_boxes, det_boxes, det_labels = _sgdet_scene()
    args = (det_boxes, det_labels, torch.zeros(7, dtype=torch.long))
    gt = (gt_boxes, torch.tensor([1, 2]), torch.zeros(2, dtype=torch.long), torch.tensor([[0, 1, 3]]))
    pairs, labels = sample_sgdet_pairs(*args, *gt, pairs_per_image=100, require_overlap=False)
    fg = {tuple(p) for p in pairs[labels > 0].tolist()}
    assert fg == {(0, 3), (0, 5), (1, 3), (1, 5)} and set(labels[labels > 0].tolist()) == {3}
    bg = {tuple(p) for p in pairs[labels == 0].tolist()}
    assert len(bg) == 6 * 5 - 4 and not (bg & fg) and all(6 not in p for p in bg)
    # at most 2 proposal pairs per GT relation
    pairs, labels = sample_sgdet_pairs(
        *args, *gt, max_pairs_per_rel=2, pairs_per_image=100, require_overlap=False
    )
    assert (
        int((labels > 0).sum()) == 2 and int((labels == 0).sum()) == 26
    )  # unpicked candidates stay out of bg
    # a stricter IoU threshold drops p1 and p5
    pairs, labels = sample_sgdet_pairs(
        *args, *gt, iou_threshold=0.95, pairs_per_image=100, require_overlap=False
    )
    assert {tuple(p) for p in pairs[labels > 0].tolist()} == {(0, 3)}
    # require_overlap: only overlapping, non-identical proposal pairs are background
    pairs, labels = sample_sgdet_pairs(*args, *gt, pairs_per_image=100, require_overlap=True)
    bg = {tuple(p) for p in pairs[labels == 0].tolist()}
    assert (0, 2) not in bg and (0, 1) in bg and (3, 4) in bg and (0, 4) not in bg


def test_sample_sgdet_pairs_weighted_by_iou():
    """One pick per relation, drawn ∝ IoU_s · IoU_o: weights 1, .9, .9, .81 over 400 identical images."""
    gt_boxes, det_boxes, det_labels = _sgdet_scene()
    k = 400
    det_ii = torch.arange(k).repeat_interleave(7)
    gt_ii = torch.arange(k).repeat_interleave(2)
    rels = torch.stack([torch.arange(k) * 2, torch.arange(k) * 2 + 1, torch.full((k,), 3)], 1)
    pairs, labels = sample_sgdet_pairs(
        det_boxes.repeat(k, 1),
        det_labels.repeat(k),
        det_ii,
        gt_boxes.repeat(k, 1),
        torch.tensor([1, 2]).repeat(k),
        gt_ii,
        rels,
        max_pairs_per_rel=1,
        pairs_per_image=2,
        positive_fraction=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    fg = pairs[labels > 0] % 7
    assert fg.shape == (k, 2)
    freq = {p: 0 for p in [(0, 3), (0, 5), (1, 3), (1, 5)]}
    for p in fg.tolist():
        freq[tuple(p)] += 1
    w = torch.tensor([1.0, 0.9, 0.9, 0.81])
    expected = (w / w.sum() * k).tolist()
    for (p, count), e in zip(freq.items(), expected, strict=True):
        assert abs(count - e) < 4 * math.sqrt(e), (p, count, e)


# ------------------------------------------------------------------------------------------- losses


def test_relation_and_object_loss_values_and_empty():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)
    loss = relation_loss(logits, torch.tensor([1, 0]))
    assert math.isclose(float(loss.detach()), (math.log(4 / 3) + math.log(2)) / 2, rel_tol=1e-6)
    obj = object_loss(logits, torch.tensor([1, 1])).detach()
    assert math.isclose(float(obj), (math.log(4 / 3) + math.log(2)) / 2, rel_tol=1e-6)
    for fn in (relation_loss, object_loss):
        empty = torch.zeros(0, 5, requires_grad=True)
        out = fn(empty, torch.zeros(0, dtype=torch.long))
        assert float(out.detach()) == 0.0
        out.backward()
        assert empty.grad.shape == (0, 5)


def test_tree_score_loss_hand_worked():
    image_index = torch.tensor([0, 0, 1, 1])
    pair_index = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 2]])
    logits = torch.tensor([0.0, 0.0, 2.0, -2.0], requires_grad=True)
    positive = torch.tensor([[0, 1]])  # symmetric: both (0,1) and (1,0) are positives
    assert tree_score_targets(pair_index, positive, 4).tolist() == [1.0, 1.0, 0.0, 0.0]
    loss = tree_score_loss(logits, pair_index, positive, image_index)
    img0 = math.log(2)
    img1 = (math.log(1 + math.exp(2)) + math.log(1 + math.exp(-2))) / 2
    assert math.isclose(float(loss.detach()), (img0 + img1) / 2, rel_tol=1e-6)
    loss.backward()
    empty = torch.zeros(0, requires_grad=True)
    out = tree_score_loss(empty, torch.zeros(0, 2, dtype=torch.long), positive, image_index)
    assert float(out.detach()) == 0.0
    out.backward()


# ------------------------------------------------------------------------------------------- end to end


def _toy_batch(g: torch.Generator, num_images: int = 6, per_image: int = 4, c_obj: int = 5):
    ii = torch.arange(num_images).repeat_interleave(per_image)
    n = ii.numel()
    labels = torch.randint(1, c_obj, (n,), generator=g)
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10], 1)
    proto = torch.randn(c_obj, 6, generator=torch.Generator().manual_seed(123))
    feats = proto[labels] + 0.1 * torch.randn(n, 6, generator=g)
    return ii, labels, boxes, feats


def test_tiny_models_learn_label_determined_predicates():
    """Predicate = table[subject label, object label] (0 = no relation): a few Adam steps cut the loss."""
    table = torch.tensor(
        [[0, 0, 0, 0, 0], [0, 1, 2, 0, 3], [0, 3, 0, 1, 2], [0, 2, 3, 1, 0], [0, 0, 1, 2, 3]]
    )
    for cls in (MotifContext, VCTreeContext):
        torch.manual_seed(0)
        ctx = cls(6, 5, embed_dim=8, hidden_dim=16, pos_dim=4, dropout=0.0)
        pred = RelationPredictor(16, 12, 16, num_obj_classes=5, num_predicates=4, freq_bias=None)
        opt = torch.optim.Adam(list(ctx.parameters()) + list(pred.parameters()), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(25):
            ii, labels, boxes, feats = _toy_batch(g)
            pairs = all_pairs(ii)
            target = table[labels[pairs[:, 0]], labels[pairs[:, 1]]]
            out = ctx(
                feats, boxes, ii, torch.tensor([[64, 64]] * 6), torch.randn(ii.numel(), 5), labels, "predcls"
            )
            # a union-box feature sees both objects: without that, head/tail fusion is additive in s and o
            union = torch.cat([feats[pairs[:, 0]], feats[pairs[:, 1]]], 1)
            rel_logits = pred(out.edge_context, pairs, union, out.obj_labels)
            loss = relation_loss(rel_logits, target)
            loss = loss + sum(out.extra_losses(pairs[target > 0], ii).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
        assert last < 0.25 * first, (cls.__name__, first, last)


def test_sample_sgdet_pairs_empty_inputs():
    gt_boxes, det_boxes, det_labels = _sgdet_scene()
    z = torch.zeros(0, dtype=torch.long)
    # no proposals
    pairs, labels = sample_sgdet_pairs(
        torch.zeros(0, 4),
        z,
        z,
        gt_boxes,
        torch.tensor([1, 2]),
        torch.zeros(2, dtype=torch.long),
        torch.tensor([[0, 1, 3]]),
    )
    assert pairs.shape == (0, 2) and labels.shape == (0,)
    # no GT relation (and no GT box): background only
    pairs, labels = sample_sgdet_pairs(
        det_boxes,
        det_labels,
        torch.zeros(7, dtype=torch.long),
        torch.zeros(0, 4),
        z,
        z,
        torch.zeros(0, 3, dtype=torch.long),
        require_overlap=False,
    )
    assert pairs.shape == (30, 2) and bool((labels == 0).all())
