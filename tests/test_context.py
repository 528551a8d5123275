"""Stage-2 context encoders: layouts, label NMS, spanning tree, binary trees, TreeLSTMs, MOTIF, VCTree and the
Transformer."""

from __future__ import annotations

import math

import pytest
import torch

from sgseg.models.context import (
    MotifContext,
    SequenceLayout,
    TransformerContext,
    VCTreeContext,
    greedy_spanning_tree,
    to_binary_forest,
)
from sgseg.models.context.base import encode_boxes, label_nms
from sgseg.models.context.vctree import BiTreeLSTM, DownTreeLSTM, TreeLabelDecoder, UpTreeLSTM

D, C, E, H, P = 6, 5, 4, 8, 3  # tiny: node width, object logits, embed, hidden, position embedding


def make_batch(counts: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image_index = torch.cat([torch.full((c,), b, dtype=torch.long) for b, c in enumerate(counts)])
    n = image_index.numel()
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    return dict(
        node_features=torch.randn(n, D, generator=g),
        boxes=boxes,
        image_index=image_index,
        image_sizes=torch.tensor([[100, 120]] * len(counts)),
        label_logits=torch.randn(n, C, generator=g),
        gt_labels=torch.randint(1, C, (n,), generator=g),
    )


def make_model(cls, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(D, C, embed_dim=E, hidden_dim=H, pos_dim=P, dropout=0.0, **kw)


# ------------------------------------------------------------------------------------------- layout


def test_sequence_layout_hand_worked():
    image_index = torch.tensor([0, 0, 1, 0, 1])
    key = torch.tensor([5.0, 1.0, 3.0, 2.0, 0.0])
    lay = SequenceLayout(image_index, key)
    # image 0: objects 1, 3, 0 (keys 1, 2, 5); image 1: objects 4, 2 (keys 0, 3)
    assert lay.pos.tolist() == [2, 0, 1, 1, 0]
    assert lay.slot.tolist() == [0, 0, 1, 0, 1]
    assert lay.lengths.tolist() == [3, 2]
    assert lay.batch_sizes.tolist() == [2, 2, 1]
    # packed data, time-major: t0 (obj1, obj4), t1 (obj3, obj2), t2 (obj0)
    assert lay.packed_row.tolist() == [4, 0, 3, 2, 1]
    x = torch.arange(5.0)[:, None]
    assert lay.pack(x).data.flatten().tolist() == [1, 4, 3, 2, 0]
    assert torch.equal(lay.unpack(lay.pack(x).data), x)
    assert torch.equal(lay.unpad(lay.pad(x)), x)


def test_packed_lstm_equals_per_image_lstm():
    """Independent route: run the LSTM on each image's x-sorted sequence alone."""
    torch.manual_seed(0)
    image_index = torch.tensor([1, 0, 1, 1, 2, 0, 1])  # not grouped, image sizes 2 / 4 / 1
    key = torch.randn(7)
    x = torch.randn(7, 3)
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    lay = SequenceLayout(image_index, key)
    got = lay.unpack(lstm(lay.pack(x))[0].data)
    for b in range(3):
        idx = (image_index == b).nonzero().flatten()
        idx = idx[torch.argsort(key[idx])]
        ref = lstm(x[idx][:, None])[0][:, 0]
        assert torch.allclose(got[idx], ref, atol=1e-6)


def test_encode_boxes_values():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    info = encode_boxes(boxes, torch.tensor([0]), torch.tensor([[100, 200]]))  # h = 100, w = 200
    expected = [20 / 200, 40 / 100, 20 / 200, 40 / 100, 10 / 200, 20 / 100, 30 / 200, 60 / 100, 800 / 20000]
    assert torch.allclose(info[0], torch.tensor(expected))


def test_label_nms_hand_worked():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 10.0]]
    )  # A, B (IoU 0.9 with A), C far; image 1: D, E identical
    image_index = torch.tensor([0, 0, 0, 1, 1])
    probs = torch.tensor(
        [
            [0.0, 0.9, 0.1, 0.0],  # A: class 1
            [0.0, 0.8, 0.15, 0.05],  # B: class 1 suppressed by A → class 2
            [0.0, 0.7, 0.2, 0.1],  # C: class 1 (no overlap)
            [0.0, 0.6, 0.3, 0.1],  # D: class 1 first
            [0.0, 0.5, 0.1, 0.4],  # E: class 1 suppressed → class 3
        ]
    )
    labels = label_nms(probs, boxes, image_index, threshold=0.3)
    assert labels.tolist() == [1, 2, 1, 1, 3]
    # without overlap (threshold above every IoU) every box keeps its argmax
    assert label_nms(probs, boxes, image_index, threshold=1.01).tolist() == [1, 1, 1, 1, 1]


# ------------------------------------------------------------------------------------------- trees


def test_greedy_spanning_tree_hand_worked():
    s0 = torch.tensor(
        [[0.0, 0.9, 0.1, 0.2], [0.3, 0.0, 0.8, 0.1], [0.2, 0.4, 0.0, 0.05], [0.6, 0.5, 0.7, 0.0]]
    )  # row means .3 .3 .1625 .45 → root 3; then 3→2 (.7), 3→0 (.6), 0→1 (.9)
    s1 = torch.full((4, 4), 99.0)  # padding cells must be ignored
    s1[:2, :2] = torch.tensor([[0.0, 0.1], [0.5, 0.0]])  # root 1 (mean .25), then 1→0
    parent, order = greedy_spanning_tree(torch.stack([s0, s1]), torch.tensor([4, 2]))
    assert parent.tolist() == [[3, 0, 3, -1], [1, -1, -1, -1]]
    assert order.tolist() == [[2, 3, 1, 0], [1, 0, -1, -1]]


def test_binary_forest_hand_worked():
    # tree 1: 0 → (1, 2, 3), 2 → (4, 5); tree 2: 6 → 7. Sibling order by `order`.
    parent = torch.tensor([-1, 0, 0, 0, 2, 2, -1, 6])
    order = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    f = to_binary_forest(parent, order)
    assert f.left.tolist() == [1, -1, 4, -1, -1, -1, 7, -1]
    assert f.right.tolist() == [-1, 2, 3, -1, 5, -1, -1, -1]
    assert f.parent.tolist() == [-1, 0, 1, 2, 2, 4, -1, 6]
    assert [lv.tolist() for lv in f.levels] == [[0, 6], [1, 7], [2], [3, 4], [5]]
    assert f.depth.tolist() == [0, 1, 2, 3, 3, 4, 0, 1]
    # reversing the sibling order reverses the chains: 0 → 3 → 2 → 1, 2 → 5 → 4
    f2 = to_binary_forest(parent, -order)
    assert f2.left.tolist() == [3, -1, 5, -1, -1, -1, 7, -1]
    assert f2.right.tolist() == [-1, -1, 1, 2, -1, 4, -1, -1]


def _recursive_up(m: UpTreeLSTM, x, left, right, node):
    z = torch.zeros(1, m.hidden_dim)
    lc, lh = _recursive_up(m, x, left, right, left[node]) if left[node] >= 0 else (z, z)
    rc, rh = _recursive_up(m, x, left, right, right[node]) if right[node] >= 0 else (z, z)
    xi = x[node : node + 1]
    g = xi @ m.ioffux.weight.T + m.ioffux.bias + lh @ m.ioffuh_left.weight.T + m.ioffuh_left.bias
    g = g + rh @ m.ioffuh_right.weight.T + m.ioffuh_right.bias
    hd = m.hidden_dim
    i, o, fl, fr, u, r = (g[:, k * hd : (k + 1) * hd] for k in range(6))
    c = i.sigmoid() * u.tanh() + fl.sigmoid() * lc + fr.sigmoid() * rc
    h = r.sigmoid() * (o.sigmoid() * c.tanh()) + (1 - r.sigmoid()) * (xi @ m.px.weight.T + m.px.bias)
    _recursive_up.out[node] = h[0]
    return c, h


def _recursive_down(m: DownTreeLSTM, x, left, right, node, pc, ph, out):
    xi = x[node : node + 1]
    g = xi @ m.iofux.weight.T + m.iofux.bias + ph @ m.iofuh.weight.T + m.iofuh.bias
    hd = m.hidden_dim
    i, o, f, u, r = (g[:, k * hd : (k + 1) * hd] for k in range(5))
    c = i.sigmoid() * u.tanh() + f.sigmoid() * pc
    h = r.sigmoid() * (o.sigmoid() * c.tanh()) + (1 - r.sigmoid()) * (xi @ m.px.weight.T + m.px.bias)
    out[node] = h[0]
    for child in (left[node], right[node]):
        if child >= 0:
            _recursive_down(m, x, left, right, child, c, h, out)


def test_treelstms_batched_by_level_equal_recursive():
    torch.manual_seed(0)
    parent = torch.tensor([-1, 0, 0, 0, 2, 2, -1, 6, -1])  # three trees, one a single node
    order = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 0])
    forest = to_binary_forest(parent, order)
    left, right = forest.left.tolist(), forest.right.tolist()
    x = torch.randn(9, 5)
    up, down = UpTreeLSTM(5, 3), DownTreeLSTM(5, 3)
    with torch.no_grad():  # non-trivial biases so every term is exercised
        for p in list(up.parameters()) + list(down.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    roots = [0, 6, 8]
    _recursive_up.out = torch.zeros(9, 3)
    for r in roots:
        _recursive_up(up, x, left, right, r)
    assert torch.allclose(up(x, forest), _recursive_up.out, atol=1e-6)
    ref_down = torch.zeros(9, 3)
    for r in roots:
        _recursive_down(down, x, left, right, r, torch.zeros(1, 3), torch.zeros(1, 3), ref_down)
    assert torch.allclose(down(x, forest), ref_down, atol=1e-6)
    bi = BiTreeLSTM(5, 6, num_layers=1)
    bi.up[0].load_state_dict(up.state_dict())
    bi.down[0].load_state_dict(down.state_dict())
    assert torch.allclose(bi(x, forest), torch.cat([_recursive_up.out, ref_down], 1), atol=1e-6)


def test_tree_label_decoder_passes_parent_labels():
    """Greedy decoding per node, recursively, with the parent's committed label embedded."""
    torch.manual_seed(1)
    parent = torch.tensor([-1, 0, 0, 1, -1])
    order = torch.arange(5)
    forest = to_binary_forest(parent, order)
    dec = TreeLabelDecoder(4, 3, num_obj_classes=6, embed_dim=2, dropout=0.0).eval()
    x = torch.randn(5, 4)
    logits, labels = dec(x, forest, None)
    ref_logits = torch.zeros(5, 6)

    def visit(node, pc, ph, plabel_row):
        xi = torch.cat([x[node : node + 1], dec.embed.weight[plabel_row : plabel_row + 1]], 1)
        c, h = dec.lstm.cell(xi, pc, ph)
        ref_logits[node] = dec.out(h)[0]
        lab = int(ref_logits[node, 1:].argmax()) + 1
        for child in (int(forest.left[node]), int(forest.right[node])):
            if child >= 0:
                visit(child, c, h, lab + 1)

    with torch.no_grad():
        for r in (0, 4):
            visit(r, torch.zeros(1, 3), torch.zeros(1, 3), 0)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    assert torch.equal(labels, ref_logits[:, 1:].argmax(1) + 1)
    # teacher forcing: committed labels are the GT ones (0 = no GT → own prediction)
    dec.train()
    gt = torch.tensor([3, 0, 2, 5, 1])
    _, tf = dec(x, forest, gt)
    assert tf[[0, 2, 3, 4]].tolist() == [3, 2, 5, 1] and 1 <= int(tf[1]) < 6


# ------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("cls", [MotifContext, VCTreeContext, TransformerContext])
@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
@pytest.mark.parametrize("counts", [[3, 0, 1, 4], [1], [2], [0]])
def test_context_contract(cls, mode, counts):
    m = make_model(cls, nms_threshold=0.3)
    b = make_batch(counts)
    n = b["image_index"].numel()
    for training in (True, False):
        m.train(training)
        gt = b["gt_labels"] if (training or mode == "predcls") else None
        out = m(**{**b, "gt_labels": gt}, mode=mode)
        assert out.obj_logits.shape == (n, C) and out.obj_logits.dtype == torch.float32
        assert out.obj_labels.shape == (n,) and out.obj_labels.dtype == torch.long
        assert (
            out.obj_scores.shape == (n,)
            and out.edge_context.shape == (n, H)
            and out.object_context.shape == (n, H)
        )
        assert bool(((out.obj_labels >= 1) & (out.obj_labels < C)).all())
        assert torch.allclose(
            out.obj_scores, out.obj_logits.softmax(-1).gather(1, out.obj_labels[:, None])[:, 0]
        )
        if mode == "predcls" or (training and cls is not TransformerContext):
            assert torch.equal(out.obj_labels, b["gt_labels"])  # GT / teacher forcing
        if mode == "predcls":
            assert torch.equal(out.obj_scores, torch.ones(n))
        if mode == "sgcls" and (
            not training or cls is TransformerContext
        ):  # (SGB's Transformer: no teacher forcing)
            assert torch.equal(out.obj_labels, out.obj_logits[:, 1:].argmax(1) + 1)  # greedy decoding
        if mode == "sgdet" and not training and n:  # labels after the per-class label NMS
            nms = label_nms(out.obj_logits.softmax(-1), b["boxes"], b["image_index"], 0.3)
            assert torch.equal(out.obj_labels, nms)
        if cls is VCTreeContext:
            num_pairs = sum(c * (c - 1) for c in counts)
            assert out.tree_logits.shape == (num_pairs,) and out.tree_pair_index.shape == (num_pairs, 2)
            pi = out.tree_pair_index
            assert bool((b["image_index"][pi[:, 0]] == b["image_index"][pi[:, 1]]).all())
            assert bool((pi[:, 0] != pi[:, 1]).all())
        if training and n:
            loss = out.edge_context.sum() + out.obj_logits.sum() * (mode != "predcls")
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def _permuted(b, perm):
    return {k: (v[perm] if k not in ("image_sizes",) else v) for k, v in b.items()}


@pytest.mark.parametrize("cls", [MotifContext, VCTreeContext, TransformerContext])
@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_context_permutation_equivariant(cls, mode):
    """Shuffling the input rows shuffles every per-object output the same way (eval mode)."""
    m = make_model(cls).eval()
    b = make_batch([5, 3, 4], seed=3)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(7))
    gt = b["gt_labels"]
    out = m(**{**b, "gt_labels": gt}, mode=mode)
    outp = m(**{**_permuted(b, perm), "gt_labels": gt[perm]}, mode=mode)
    for name in ("obj_logits", "obj_labels", "edge_context", "object_context"):
        assert torch.allclose(getattr(out, name)[perm], getattr(outp, name), atol=1e-5), name
    if cls is VCTreeContext:
        inv = torch.argsort(perm)
        parent = out.tree_parent[perm]  # parent (old index) of each new row
        assert torch.equal(torch.where(parent >= 0, inv[parent.clamp(min=0)], -1), outp.tree_parent)


def test_motif_object_context_follows_centre_x():
    """Independent route: run the object BiLSTM by hand on each image's objects sorted by box centre x."""
    m = make_model(MotifContext).eval()
    b = make_batch([4, 3], seed=5)
    out = m(**b, mode="predcls")
    with torch.no_grad():
        pos = m.pos_embed(encode_boxes(b["boxes"], b["image_index"], b["image_sizes"]))
        pre = torch.cat([b["node_features"], m.obj_embed1(b["gt_labels"]), pos], 1)
        cx = (b["boxes"][:, 0] + b["boxes"][:, 2]) / 2
        for img in range(2):
            idx = (b["image_index"] == img).nonzero().flatten()
            idx = idx[torch.argsort(cx[idx])]
            ref = m.lin_obj_h(m.obj_ctx_rnn(pre[idx][:, None])[0][:, 0])
            assert torch.allclose(out.object_context[idx], ref, atol=1e-5)
            # and the order matters: reversed input order gives a different context
            rev = m.lin_obj_h(m.obj_ctx_rnn(pre[idx.flip(0)][:, None])[0][:, 0]).flip(0)
            assert not torch.allclose(out.object_context[idx], rev, atol=1e-3)


def test_motif_decoder_batched_equals_per_image_greedy():
    m = make_model(MotifContext).eval()
    b = make_batch([4, 2, 3], seed=8)
    out = m(**{**b, "gt_labels": None}, mode="sgcls")
    with torch.no_grad():
        pos = m.pos_embed(encode_boxes(b["boxes"], b["image_index"], b["image_sizes"]))
        emb = b["label_logits"].softmax(-1) @ m.obj_embed1.weight
        pre = torch.cat([b["node_features"], emb, pos], 1)
        cx = (b["boxes"][:, 0] + b["boxes"][:, 2]) / 2
        for img in range(3):
            idx = (b["image_index"] == img).nonzero().flatten()
            idx = idx[torch.argsort(cx[idx])]
            ctx = m.lin_obj_h(m.obj_ctx_rnn(pre[idx][:, None])[0][:, 0])
            h = c = torch.zeros(1, H)
            prev = m.decoder_embed.weight[0:1]
            for k, obj in enumerate(idx.tolist()):
                h, c = m.decoder_cell(torch.cat([pre[obj : obj + 1], ctx[k : k + 1], prev], 1), h, c)
                logits = m.decoder_out(h)
                assert torch.allclose(out.obj_logits[obj], logits[0], atol=1e-5)
                lab = int(logits[0, 1:].argmax()) + 1
                assert int(out.obj_labels[obj]) == lab
                prev = m.decoder_embed.weight[lab + 1 : lab + 2]


def test_vctree_pair_prior_hand_worked():
    """SGB's bi_freq_prior on a hand-built statistic: W = fg.sum(-1) without background, normalised; the model
    uses W + Wᵀ. With the visual score off, logit = w_prior · prior and the tree score = σ(logit) · prior."""
    from sgseg.data.statistics import cooccurrence_prior

    fg = torch.zeros(C, C, 3, dtype=torch.long)
    fg[1, 2] = torch.tensor([0, 3, 1])  # 4 relations (1 → 2)
    fg[2, 1, 2] = 2  # 2 relations (2 → 1)
    fg[3, 4, 1] = 4  # 4 relations (3 → 4)
    fg[0, 3, 1] = 7  # background rows/columns never count
    fg[4, 0, 2] = 5
    w = cooccurrence_prior(fg)
    expected_w = torch.zeros(C, C)
    expected_w[1, 2], expected_w[2, 1], expected_w[3, 4] = 0.4, 0.2, 0.4  # of 10 foreground relations
    assert torch.allclose(w, expected_w)
    m = make_model(VCTreeContext, pair_prior=w).eval()
    assert torch.allclose(m.pair_prior.detach(), expected_w + expected_w.T)
    with torch.no_grad():
        m.vision_prior.weight.zero_()
        m.vision_prior.bias.zero_()
        m.vision_prior.weight[0, -1] = 2.0  # the prior's weight inside vision_prior
    b = make_batch([3], seed=2)
    b["gt_labels"] = torch.tensor([1, 2, 3])
    out = m(**b, mode="predcls")
    pair_prior = {(1, 2): 0.6, (2, 1): 0.6, (1, 3): 0.0, (3, 1): 0.0, (2, 3): 0.0, (3, 2): 0.0}
    lab = b["gt_labels"]
    expected = torch.tensor(
        [2.0 * pair_prior[(int(lab[i]), int(lab[j]))] for i, j in out.tree_pair_index.tolist()]
    )
    assert torch.allclose(out.tree_logits, expected, atol=1e-6)
    # the tree maximises σ(logit) · prior: root 0 (best row mean, lowest index), 1 joins 0, then 2 (all its
    # scores are 0) joins the lowest selected node
    logits, scores = (t.detach() for t in m.pair_logits(
        b["node_features"], m.obj_embed1(lab), encode_boxes(b["boxes"], b["image_index"], b["image_sizes"]),
        b["boxes"], b["image_sizes"], torch.nn.functional.one_hot(lab, C).float(), SequenceLayout(b["image_index"]),
    ))  # fmt: skip
    assert torch.allclose(scores[0, 0, 1], torch.sigmoid(torch.tensor(1.2)) * 0.6, atol=1e-6)
    assert torch.allclose(logits[0, 0, 1], torch.tensor(1.2)) and float(scores[0, 0, 2]) == 0.0
    assert out.tree_parent.tolist() == [-1, 0, 0]
    with pytest.raises(ValueError, match="no relation"):
        cooccurrence_prior(torch.zeros(C, C, 3))


def test_vctree_tree_is_the_spanning_tree_of_its_scores():
    m = make_model(VCTreeContext).eval()
    b = make_batch([5, 1, 3], seed=4)
    out = m(**b, mode="sgcls")
    ii = b["image_index"]
    roots = (out.tree_parent < 0).nonzero().flatten()
    assert ii[roots].tolist() == [0, 1, 2]  # one root per image
    kids = (out.tree_parent >= 0).nonzero().flatten()
    assert torch.equal(ii[out.tree_parent[kids]], ii[kids])
    # each greedy step took the best edge from the grown tree: re-run Prim on the returned logits (image 0)
    idx = (ii == 0).nonzero().flatten()
    lay = {int(v): k for k, v in enumerate(idx)}
    score = torch.full((5, 5), 0.0)
    for (a, c), v in zip(out.tree_pair_index.tolist(), out.tree_logits.sigmoid().tolist(), strict=True):
        if a in lay and c in lay:
            score[lay[a], lay[c]] = v
    root = lay[int(roots[0])]
    grown = {root}
    for _ in range(4):
        best = max((score[a, c], a, c) for a in grown for c in range(5) if c not in grown)
        _, a, c = best
        assert int(out.tree_parent[idx[c]]) == int(idx[a])
        grown.add(c)
    assert math.isfinite(float(out.tree_logits.detach().sum()))


# ------------------------------------------------------------------------------------------- GloVe label tables


def test_label_tables_equal_the_glove_rows(shared_data):
    """The baselines' label tables start at the word vectors: the real 300-d GloVe class file (191 rows, ``_``
    for spaces) through the same functions the builder calls, into MOTIF and VCTree."""
    import json

    from sgseg.models.context.word_vectors import label_word_vectors, start_word_vector
    from sgseg.models.masks.similarity import _needed_words, load_word_vectors

    names = json.loads((shared_data / "class-names.json").read_text())
    vg, coco = names["vg150_objects"], names["coco80_objects"]
    path = shared_data / "class-embeddings.glove840b.300d.txt"
    vectors = load_word_vectors(path, _needed_words(vg + coco) + ["start"])
    rows = {}
    for line in path.read_text().splitlines():
        key, *vals = line.split(" ")
        rows[key] = torch.tensor([float(v) for v in vals])
    vg_rows = torch.stack([rows[n.replace(" ", "_")] for n in vg])
    coco_rows = torch.stack([rows[n.replace(" ", "_")] for n in coco])
    classes = label_word_vectors(vg, vectors)
    assert classes.shape == (151, 300)
    start = start_word_vector(vectors, 300)  # no `start` in this file: N(0, 1), fixed by the seed
    assert torch.equal(start, start_word_vector(vectors, 300))
    kw = dict(class_embeddings=classes, start_embedding=start, num_source_classes=81,
              source_class_embeddings=label_word_vectors(coco, vectors))  # fmt: skip
    for cls in (MotifContext, VCTreeContext):
        m = cls(8, 151, embed_dim=300, hidden_dim=16, pos_dim=4, **kw)
        decoder = m.decoder_embed if cls is MotifContext else m.decoder.embed
        for table in (m.obj_embed1.weight[1:], m.obj_embed2.weight[1:], decoder.weight[2:]):
            assert torch.allclose(table, vg_rows, atol=1e-6)
        assert torch.equal(decoder.weight[0], start) and torch.equal(decoder.weight[1], classes[0])
        assert torch.allclose(m.source_embed.weight[1:], coco_rows, atol=1e-6)
    with pytest.raises(ValueError, match="embed_dim"):
        MotifContext(8, 151, embed_dim=200, hidden_dim=16, pos_dim=4, class_embeddings=classes)


# ------------------------------------------------------------------------------------------- Transformer


def _small_transformer(seed: int = 0, **kw) -> TransformerContext:
    torch.manual_seed(seed)
    sizes = dict(num_obj_layers=2, num_edge_layers=1, num_heads=2, key_dim=4, value_dim=3, inner_dim=16)
    return TransformerContext(
        D, C, embed_dim=E, hidden_dim=H, pos_dim=P, dropout=0.0, **{**sizes, **kw}
    ).eval()


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_transformer_padding_keeps_images_apart(mode):
    """An image's outputs do not change when another image of the batch changes (its objects, their number),
    and equal those of the image alone: padded keys are masked out, padded rows zeroed."""
    m = _small_transformer()
    b = make_batch([3, 5], seed=1)
    alone = {k: (v[:3] if k != "image_sizes" else v[:1]) for k, v in b.items()}
    other = make_batch([3, 2], seed=9)
    changed = {k: (torch.cat([b[k][:3], other[k][3:]]) if k != "image_sizes" else b[k]) for k in b}
    gt = b["gt_labels"]
    with torch.no_grad():
        out = m(**b, mode=mode)
        out_changed = m(
            **{**changed, "gt_labels": changed["gt_labels"] if mode == "predcls" else None}, mode=mode
        )
        out_alone = m(**{**alone, "gt_labels": gt[:3] if mode == "predcls" else None}, mode=mode)
    for name in ("obj_logits", "obj_labels", "edge_context", "object_context"):
        a = getattr(out, name)[:3]
        torch.testing.assert_close(getattr(out_changed, name)[:3], a, msg=name)
        torch.testing.assert_close(getattr(out_alone, name), a, msg=name)
    # and the other image does see its own objects: changing them changes its outputs
    assert not torch.allclose(out.object_context[3:5], out_changed.object_context[3:5])


def test_transformer_layer_equals_torch_multihead_attention():
    """One encoder layer against an independent route: torch.nn.MultiheadAttention with the same weights
    (h · d_k = H here, where torch's layout fits), then post-norm residual, feed-forward, post-norm, padding zeroed."""
    from sgseg.models.context.transformer import EncoderLayer

    torch.manual_seed(0)
    heads, dk = 2, 4
    layer = EncoderLayer(H, 16, heads, dk, dk, dropout=0.0).eval()
    mha = torch.nn.MultiheadAttention(H, heads, batch_first=True)
    a = layer.attention
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]))
        mha.out_proj.weight.copy_(a.out.weight)
        mha.out_proj.bias.copy_(a.out.bias)
    x = torch.randn(2, 4, H)
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    with torch.no_grad():
        got = layer(x, valid)
        att, _ = mha(x, x, x, key_padding_mask=~valid)
        keep = valid[..., None].float()
        y = a.norm(att + x) * keep
        ref = layer.norm(layer.ff(y) + y) * keep
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1, 2:], torch.zeros(2, H))
    # by hand for one query: softmax(q·k / sqrt(d_k)) over the image's own two objects, head 0
    q, k = a.w_q(x[1]), a.w_k(x[1])
    w = torch.softmax(q[0, :dk] @ k[:2, :dk].T / dk**0.5, 0)
    _, weights = mha(x[1:], x[1:], x[1:], key_padding_mask=~valid[1:], average_attn_weights=False)
    torch.testing.assert_close(weights[0, 0, 0, :2], w.detach(), atol=1e-6, rtol=1e-5)
    assert float(weights[0, 0, 0, 2:].abs().sum()) == 0.0


def test_transformer_vg150_sizes_are_sgbs():
    """experiment=transformer_resnext: SGB's 4 object / 2 edge layers, 8 heads, k = v = 64, inner 2048, dropout 0.1."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).parent.parent / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=transformer_resnext", "detector.checkpoint=/tmp/x.pt"])
    m = instantiate(cfg.model.context)(in_dim=16, num_obj_classes=151)
    assert (len(m.obj_encoder.layers), len(m.edge_encoder.layers), m.hidden_dim) == (4, 2, 512)
    att = m.obj_encoder.layers[0].attention
    assert (att.num_heads, att.key_dim, att.value_dim, att.dropout_p) == (8, 64, 64, 0.1)
    assert m.obj_encoder.layers[0].ff[0].out_features == 2048 and m.nms_threshold == 0.3
