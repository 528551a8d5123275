"""VCTree context encoder (Tang et al. 2019, as in the scene-graph benchmark's ``VCTreeLSTMContext``).

Where this sits: stage 2, after node grounding; see :mod:`sgseg.models.context.base`. Per image, a small MLP
on detached visual features, label embeddings and box geometry scores every ordered pair (i, j); a greedy
maximum spanning tree (Prim from the node with the highest mean score) turns the scores into a tree, which is
converted to a binary tree (left child = first child, right child = next sibling). Bidirectional TreeLSTMs
over that binary tree give the object context z^o_j and, after an object-label decoder (a root-to-leaves
TreeLSTM, SGCls/SGDet only), the edge context. The pair scores are trained with BCE against the GT adjacency
(:func:`sgseg.models.relation.losses.tree_score_loss`).

Batching: the spanning trees of all images grow together (one node per image per step) on a padded
``[S, L, L]`` score block, and the TreeLSTMs process all nodes at the same binary-tree depth across all
trees of the batch in one step, so the Python loops run over depth, never over images or nodes.

Departures from the reference, on purpose: the decoder embeds the GT label of the parent in training (teacher
forcing, as MOTIF) where the reference samples a label from its own prediction; overlap features are
normalised by the image area instead of a fixed 1024²; the class co-occurrence prior is passed in
(``pair_prior``, :func:`sgseg.data.statistics.cooccurrence_prior`), not read from a dataset; the tree BCE
averages over the ordered pairs i ≠ j of an image (SGB: over all n × n cells, diagonal included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.context.base import (
    ContextEncoder,
    ContextOutput,
    SafeBatchNorm1d,
    SequenceLayout,
    encode_boxes,
    teacher_labels,
)
from sgseg.models.relation.losses import tree_score_loss
from sgseg.ops.boxes import box_iou

# ---------------------------------------------------------------------------------------------------------
# Tree construction
# ---------------------------------------------------------------------------------------------------------


def greedy_spanning_tree(scores: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy maximum spanning tree of every padded score block (reference ``generate_forest`` / ``gen_tree``).

    scores: Float[S, L, L], ``scores[s, i, j]`` = score of i being the parent of j; lengths: Long[S] objects per
    block (cells ≥ length are padding). The root is the node with the highest row mean (over the valid columns,
    diagonal included, as the reference); then, repeatedly, the best (selected i, unselected j) edge adds j as a
    child of i. Ties go to the lowest (i, j) in row-major order.

    Returns parent Long[S, L] (position of the parent, -1 for the root and padding) and order Long[S, L] (the
    step at which each node joined: 0 for the root; -1 for padding) — children of a node are ordered by it.
    """
    s_n, l_n = scores.shape[:2]
    device = scores.device
    scores = scores.detach()
    parent = torch.full((s_n, l_n), -1, dtype=torch.long, device=device)
    order = torch.full((s_n, l_n), -1, dtype=torch.long, device=device)
    if s_n == 0 or l_n == 0:
        return parent, order
    lengths = lengths.to(device)
    valid = torch.arange(l_n, device=device)[None, :] < lengths[:, None]  # Bool[S, L]
    node_score = (scores * valid[:, None, :]).sum(-1) / lengths[:, None].clamp(min=1)
    root = node_score.masked_fill(~valid, float("-inf")).argmax(1)
    rows = torch.arange(s_n, device=device)
    selected = torch.zeros_like(valid)
    selected[rows, root] = True
    order[rows, root] = 0
    for step in range(1, l_n):
        active = lengths > step
        cand = selected[:, :, None] & (valid & ~selected)[:, None, :]
        best = scores.masked_fill(~cand, float("-inf")).flatten(1).argmax(1)
        i, j = best // l_n, best % l_n
        r, i, j = rows[active], i[active], j[active]
        parent[r, j] = i
        order[r, j] = step
        selected[r, j] = True
    return parent, order


@dataclass
class BinaryForest:
    """Left-child/right-sibling binary trees over the N objects of a batch (one tree per image).

    left, right: Long[N] child indices (-1 = none); parent: Long[N] binary parent (-1 = root; a right child's
    parent is its previous sibling); levels: node indices at each binary depth, roots first;
    level_pos: Long[N] position of each node inside its level.
    """

    left: Tensor
    right: Tensor
    parent: Tensor
    levels: list[Tensor]
    level_pos: Tensor

    @property
    def depth(self) -> Tensor:
        d = torch.empty_like(self.left)
        for k, nodes in enumerate(self.levels):
            d[nodes] = k
        return d


def to_binary_forest(parent: Tensor, order: Tensor) -> BinaryForest:
    """Left-child/right-sibling conversion (reference ``arbForest_to_biForest``).

    parent: Long[N] parent in the arbitrary tree (-1 = root); order: Long[N] rank used to order siblings
    (ascending: the first child becomes the left child, each next sibling the right child of the previous).
    """
    n = parent.numel()
    device = parent.device
    left = torch.full((n,), -1, dtype=torch.long, device=device)
    right = torch.full((n,), -1, dtype=torch.long, device=device)
    bparent = torch.full((n,), -1, dtype=torch.long, device=device)
    kids = (parent >= 0).nonzero().flatten()
    if kids.numel():
        k_order = torch.argsort(order[kids], stable=True)
        kids = kids[k_order[torch.argsort(parent[kids][k_order], stable=True)]]  # grouped by parent, by order
        kp = parent[kids]
        first = torch.ones_like(kp, dtype=torch.bool)
        first[1:] = kp[1:] != kp[:-1]
        left[kp[first]] = kids[first]
        bparent[kids[first]] = kp[first]
        prev = kids[:-1][~first[1:]]
        nxt = kids[1:][~first[1:]]
        right[prev] = nxt
        bparent[nxt] = prev
    levels = []
    level_pos = torch.zeros(n, dtype=torch.long, device=device)
    frontier = (parent < 0).nonzero().flatten()
    while frontier.numel():
        levels.append(frontier)
        level_pos[frontier] = torch.arange(frontier.numel(), device=device)
        nxt = torch.cat([left[frontier], right[frontier]])
        frontier = torch.sort(nxt[nxt >= 0]).values
    return BinaryForest(left, right, bparent, levels, level_pos)


def _gather_state(
    level_state: Tensor | None, index: Tensor, level_pos: Tensor, width: int, like: Tensor
) -> Tensor:
    """Rows of ``level_state`` (Float[n_level, width]) for the nodes ``index`` (Long[m], -1 → zeros)."""
    if level_state is None:
        return like.new_zeros(index.numel(), width)
    padded = torch.cat([level_state.new_zeros(1, width), level_state], 0)
    return padded[torch.where(index >= 0, level_pos[index.clamp(min=0)] + 1, 0)]


# ---------------------------------------------------------------------------------------------------------
# TreeLSTMs, batched by depth
# ---------------------------------------------------------------------------------------------------------


class UpTreeLSTM(nn.Module):
    """Leaves-to-root binary TreeLSTM with a highway output (reference ``BiTreeLSTM_Foreward``).

    gates = W_x x + W_l h_left + W_r h_right → (i, o, f_l, f_r, u, r); c = i⊙u + f_l⊙c_left + f_r⊙c_right;
    h = r ⊙ o⊙tanh(c) + (1 − r) ⊙ P x. Missing children contribute zero states.
    """

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.px = nn.Linear(in_dim, hidden_dim)
        self.ioffux = nn.Linear(in_dim, 6 * hidden_dim)
        self.ioffuh_left = nn.Linear(hidden_dim, 6 * hidden_dim)
        self.ioffuh_right = nn.Linear(hidden_dim, 6 * hidden_dim)
        with torch.no_grad():
            for lin in (self.px, self.ioffux, self.ioffuh_left, self.ioffuh_right):
                lin.bias.zero_()
            # forget gates start half open (reference)
            self.ioffuh_left.bias[2 * hidden_dim : 4 * hidden_dim] = 0.5
            self.ioffuh_right.bias[2 * hidden_dim : 4 * hidden_dim] = 0.5

    def cell(self, x: Tensor, lc: Tensor, lh: Tensor, rc: Tensor, rh: Tensor) -> tuple[Tensor, Tensor]:
        g = self.ioffux(x) + self.ioffuh_left(lh) + self.ioffuh_right(rh)
        i, o, fl, fr, u, r = g.chunk(6, dim=1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * lc + torch.sigmoid(fr) * rc
        h = torch.sigmoid(o) * torch.tanh(c)
        r = torch.sigmoid(r)
        return c, r * h + (1 - r) * self.px(x)

    def forward(self, x: Tensor, forest: BinaryForest, dropout_mask: Tensor | None = None) -> Tensor:
        """x: Float[N, in_dim] → Float[N, hidden_dim]."""
        hd = self.hidden_dim
        depth = len(forest.levels)
        hs: list[Tensor | None] = [None] * depth
        cs: list[Tensor | None] = [None] * depth
        for d in reversed(range(depth)):
            nodes = forest.levels[d]
            below_h = hs[d + 1] if d + 1 < depth else None
            below_c = cs[d + 1] if d + 1 < depth else None
            li, ri = forest.left[nodes], forest.right[nodes]
            c, h = self.cell(
                x[nodes],
                _gather_state(below_c, li, forest.level_pos, hd, x),
                _gather_state(below_h, li, forest.level_pos, hd, x),
                _gather_state(below_c, ri, forest.level_pos, hd, x),
                _gather_state(below_h, ri, forest.level_pos, hd, x),
            )
            if dropout_mask is not None:
                h = h * dropout_mask
            hs[d], cs[d] = h, c
        return _levels_to_flat(hs, forest, x, hd)


class DownTreeLSTM(nn.Module):
    """Root-to-leaves binary TreeLSTM with a highway output (reference ``BiTreeLSTM_Backward``).

    gates = W_x x + W_h h_parent → (i, o, f, u, r); c = i⊙u + f⊙c_parent; h = r ⊙ o⊙tanh(c) + (1 − r) ⊙ P x.
    """

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.px = nn.Linear(in_dim, hidden_dim)
        self.iofux = nn.Linear(in_dim, 5 * hidden_dim)
        self.iofuh = nn.Linear(hidden_dim, 5 * hidden_dim)
        with torch.no_grad():
            for lin in (self.px, self.iofux, self.iofuh):
                lin.bias.zero_()
            self.iofuh.bias[2 * hidden_dim : 3 * hidden_dim] = 1.0  # forget gate open at start (reference)

    def cell(self, x: Tensor, pc: Tensor, ph: Tensor) -> tuple[Tensor, Tensor]:
        g = self.iofux(x) + self.iofuh(ph)
        i, o, f, u, r = g.chunk(5, dim=1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f) * pc
        h = torch.sigmoid(o) * torch.tanh(c)
        r = torch.sigmoid(r)
        return c, r * h + (1 - r) * self.px(x)

    def forward(self, x: Tensor, forest: BinaryForest, dropout_mask: Tensor | None = None) -> Tensor:
        """x: Float[N, in_dim] → Float[N, hidden_dim]."""
        hd = self.hidden_dim
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for d, nodes in enumerate(forest.levels):
            p = forest.parent[nodes]
            above_h = hs[d - 1] if d else None
            above_c = cs[d - 1] if d else None
            c, h = self.cell(
                x[nodes],
                _gather_state(above_c, p, forest.level_pos, hd, x),
                _gather_state(above_h, p, forest.level_pos, hd, x),
            )
            if dropout_mask is not None:
                h = h * dropout_mask
            hs.append(h)
            cs.append(c)
        return _levels_to_flat(hs, forest, x, hd)


def _levels_to_flat(hs: list, forest: BinaryForest, like: Tensor, width: int) -> Tensor:
    if not forest.levels:
        return like.new_zeros(0, width)
    flat = torch.cat(hs, 0)
    return flat[torch.argsort(torch.cat(forest.levels))]


def _dropout_mask(like: Tensor, width: int, p: float, training: bool) -> Tensor | None:
    """One mask shared by every node (reference: the same mask for the whole forest)."""
    if not training or p <= 0:
        return None
    return torch.bernoulli(like.new_full((1, width), 1 - p)) / (1 - p)


class BiTreeLSTM(nn.Module):
    """Stacked bidirectional TreeLSTM: each layer = [UpTreeLSTM ‖ DownTreeLSTM] with out_dim / 2 each
    (reference ``MultiLayer_BTreeLSTM``). x: Float[N, in_dim] → Float[N, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError(
                f"BiTreeLSTM out_dim must be even (two directions of out_dim / 2), got {out_dim}"
            )
        self.dropout = dropout
        self.half = out_dim // 2
        self.up = nn.ModuleList(
            [UpTreeLSTM(in_dim if k == 0 else out_dim, self.half) for k in range(num_layers)]
        )
        self.down = nn.ModuleList(
            [DownTreeLSTM(in_dim if k == 0 else out_dim, self.half) for k in range(num_layers)]
        )

    def forward(self, x: Tensor, forest: BinaryForest) -> Tensor:
        for up, down in zip(self.up, self.down, strict=True):
            x = torch.cat(
                [
                    up(x, forest, _dropout_mask(x, self.half, self.dropout, self.training)),
                    down(x, forest, _dropout_mask(x, self.half, self.dropout, self.training)),
                ],
                1,
            )
        return x


class TreeLabelDecoder(nn.Module):
    """Root-to-leaves TreeLSTM that predicts object labels, each node seeing its binary parent's committed
    label embedding (the root sees a "start" embedding) — reference ``DecoderTreeLSTM`` (backward)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, num_obj_classes: int, embed_dim: int, dropout: float
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.embed = nn.Embedding(num_obj_classes + 1, embed_dim)  # row 0 "start", label l → row l + 1
        self.lstm = DownTreeLSTM(in_dim + embed_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, num_obj_classes)

    def forward(self, x: Tensor, forest: BinaryForest, gt_labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: Float[N, in_dim]; gt_labels: Long[N] (teacher forcing in training) or None.
        Returns obj_logits Float[N, C_obj] and committed labels Long[N]."""
        hd = self.hidden_dim
        mask = _dropout_mask(x, hd, self.dropout, self.training)
        hs, cs, logits, labels, embeds = [], [], [], [], []
        for d, nodes in enumerate(forest.levels):
            p = forest.parent[nodes]
            if d == 0:
                parent_embed = self.embed.weight[0:1].expand(nodes.numel(), -1)
            else:
                parent_embed = _gather_state(embeds[d - 1], p, forest.level_pos, self.embed.embedding_dim, x)
            c, h = self.lstm.cell(
                torch.cat([x[nodes], parent_embed], 1),
                _gather_state(cs[d - 1] if d else None, p, forest.level_pos, hd, x),
                _gather_state(hs[d - 1] if d else None, p, forest.level_pos, hd, x),
            )
            if mask is not None:
                h = h * mask
            step_logits = self.out(h)
            step_labels = teacher_labels(
                step_logits, gt_labels[nodes] if gt_labels is not None else None, self.training
            )
            hs.append(h)
            cs.append(c)
            logits.append(step_logits)
            labels.append(step_labels)
            embeds.append(self.embed(step_labels + 1))
        if not forest.levels:
            return x.new_zeros(0, self.out.out_features), torch.zeros(0, dtype=torch.long, device=x.device)
        inv = torch.argsort(torch.cat(forest.levels))
        return torch.cat(logits)[inv], torch.cat(labels)[inv]


# ---------------------------------------------------------------------------------------------------------
# The context encoder
# ---------------------------------------------------------------------------------------------------------


def overlap_features(boxes_padded: Tensor, valid: Tensor, image_area: Tensor) -> Tensor:
    """Float[S, L, 6] per-object overlap statistics against the boxes of its image (reference
    ``get_overlap_info``): #intersecting boxes, Σ intersection / image area, Σ IoU, the two sums divided by
    the count, box area / image area. Sums include the box itself.

    boxes_padded: Float[S, L, 4]; valid: Bool[S, L]; image_area: Float[S].
    """
    lt = torch.maximum(boxes_padded[:, :, None, :2], boxes_padded[:, None, :, :2])
    rb = torch.minimum(boxes_padded[:, :, None, 2:], boxes_padded[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1) * valid[:, None, :]
    iou = box_iou(boxes_padded, boxes_padded) * valid[:, None, :]
    area = (boxes_padded[..., 2:] - boxes_padded[..., :2]).clamp(min=0).prod(-1)
    a = image_area[:, None]
    count = (inter > 0).sum(-1).to(boxes_padded.dtype)
    s_inter = inter.sum(-1) / a
    s_iou = iou.sum(-1)
    return torch.stack(
        [count, s_inter, s_iou, s_inter / (count + 1e-9), s_iou / (count + 1e-9), area / a], -1
    )


@dataclass
class VCTreeOutput(ContextOutput):
    """VCTree's output: :class:`~sgseg.models.context.base.ContextOutput` plus its tree.

    tree_logits: Float[P] pair scores before the sigmoid, one per row of ``tree_pair_index``; trained with
        :func:`sgseg.models.relation.losses.tree_score_loss` (:meth:`extra_losses`, key ``tree``).
    tree_pair_index: Long[P, 2] flat (i, j) indices, i ≠ j, same image — all ordered pairs.
    tree_parent: Long[N] parent of each object in the greedy spanning tree (-1 = root).
    """

    tree_logits: Tensor
    tree_pair_index: Tensor
    tree_parent: Tensor

    def extra_losses(self, related_pairs: Tensor, image_index: Tensor) -> dict[str, Tensor]:
        """``tree``: BCE of the pair scores against "related" (SGB's ``rel_binarys``)."""
        return {"tree": tree_score_loss(self.tree_logits, self.tree_pair_index, related_pairs, image_index)}


class VCTreeContext(ContextEncoder):
    """VCTree object/edge context over a learned per-image spanning tree.

    in_dim: D_node; num_obj_classes: C_obj; embed_dim: label embedding width (reference 200); hidden_dim: H of
    the TreeLSTMs and both outputs (even; reference 512); num_obj_layers / num_edge_layers: TreeLSTM depths;
    dropout: TreeLSTM dropout (reference 0.2; between layers only when stacked, and in the decoder);
    score_dim: width of the pair-score MLP's reduced inputs (reference 128); pair_prior: optional
    Float[C_obj, C_obj] class co-occurrence prior W (SGB's ``bi_freq_prior``: train relation counts per
    (subject, object) class pair, background row/column 0, normalised to sum 1 —
    :func:`sgseg.data.statistics.cooccurrence_prior`); symmetrised here to W + Wᵀ and trainable, as SGB. With it
    the pair logit is vision_prior([sub ⊙ obj, sub, obj, prior_ij]) with prior_ij = l_iᵀ (W + Wᵀ) l_j, and the
    score the spanning tree maximises is σ(logit) · prior_ij (SGB's ``vc_scores``; the BCE is on the logit,
    SGB's ``bi_preds``); without it the score is σ(logit).
    nms_threshold: SGDet-test label NMS IoU (None = off, as the reference VCTree); class_embeddings,
    start_embedding, num_source_classes, source_class_embeddings: word vectors of the label tables (see
    :class:`~sgseg.models.context.base.ContextEncoder`).
    """

    def __init__(
        self,
        in_dim: int,
        num_obj_classes: int,
        embed_dim: int = 200,
        hidden_dim: int = 512,
        num_obj_layers: int = 1,
        num_edge_layers: int = 1,
        dropout: float = 0.2,
        score_dim: int = 128,
        pair_prior: Tensor | None = None,
        nms_threshold: float | None = None,
        pos_dim: int = 128,
        class_embeddings: Tensor | None = None,
        start_embedding: Tensor | None = None,
        num_source_classes: int = 0,
        source_class_embeddings: Tensor | None = None,
    ) -> None:
        super().__init__(
            in_dim, num_obj_classes, embed_dim, hidden_dim, pos_dim, class_embeddings, start_embedding,
            num_source_classes, source_class_embeddings, nms_threshold,
        )  # fmt: skip
        obj_in = in_dim + embed_dim + pos_dim
        # pair-score network (reference vctree_score_net)
        self.overlap_embed = nn.Sequential(
            nn.Linear(6, score_dim), SafeBatchNorm1d(score_dim, momentum=0.001), nn.ReLU()
        )
        self.box_embed = nn.Sequential(
            nn.Linear(9, score_dim), SafeBatchNorm1d(score_dim, momentum=0.001), nn.ReLU()
        )
        self.obj_reduce = nn.Linear(in_dim, score_dim)
        self.emb_reduce = nn.Linear(embed_dim, score_dim)
        self.score_pre = nn.Linear(4 * score_dim, hidden_dim)
        self.score_sub = nn.Linear(hidden_dim, hidden_dim)
        self.score_obj = nn.Linear(hidden_dim, hidden_dim)
        self.vision_prior = nn.Linear(3 * hidden_dim + 1, 1)
        for lin in (self.obj_reduce, self.emb_reduce, self.score_pre, self.score_sub, self.score_obj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        if pair_prior is not None:
            if tuple(pair_prior.shape) != (num_obj_classes, num_obj_classes):
                raise ValueError(
                    f"pair_prior must be Float[{num_obj_classes}, {num_obj_classes}] (C_obj × C_obj), got "
                    f"{tuple(pair_prior.shape)}"
                )
            prior = pair_prior.float()
            self.pair_prior = nn.Parameter(prior + prior.T)
        else:
            self.register_parameter("pair_prior", None)

        self.obj_ctx_rnn = BiTreeLSTM(
            obj_in, hidden_dim, num_obj_layers, dropout if num_obj_layers > 1 else 0.0
        )
        self.decoder = TreeLabelDecoder(obj_in + hidden_dim, hidden_dim, num_obj_classes, embed_dim, dropout)
        self.init_decoder_embedding(self.decoder.embed, class_embeddings, start_embedding)
        self.edge_ctx_rnn = BiTreeLSTM(
            embed_dim + in_dim + hidden_dim,
            hidden_dim,
            num_edge_layers,
            dropout if num_edge_layers > 1 else 0.0,
        )

    def pair_logits(
        self,
        node_features: Tensor,
        obj_embed: Tensor,
        box_info: Tensor,
        boxes: Tensor,
        image_sizes: Tensor,
        label_probs: Tensor,
        layout: SequenceLayout,
    ) -> tuple[Tensor, Tensor]:
        """Pair logits and tree scores, Float[S, L, L] each: entry [s, i, j] scores i as the parent of j
        (padded cells: garbage). The logits are what the tree BCE trains; the scores what the tree maximises."""
        hsz = self.hidden_dim
        valid = layout.valid()
        hw = image_sizes.to(boxes.dtype)[layout.seq_image]
        overlap = layout.unpad(overlap_features(layout.pad(boxes), valid, hw[:, 0] * hw[:, 1]))
        inp = torch.cat(
            [
                self.obj_reduce(node_features.detach()),
                self.emb_reduce(obj_embed.detach()),
                self.box_embed(box_info),
                self.overlap_embed(overlap),
            ],
            1,
        )
        roi = F.relu(self.score_pre(inp))
        sub = layout.pad(F.relu(self.score_sub(roi)))  # [S, L, H]
        obj = layout.pad(F.relu(self.score_obj(roi)))
        # vision_prior(cat(sub_j ⊙ obj_i, sub_j, obj_i, prior_ij)) split into its linear parts, so the [S, L, L, 3H]
        # pair tensor is never built.
        w = self.vision_prior.weight[0]
        vis = (
            (obj * w[:hsz]) @ sub.transpose(1, 2)
            + (sub @ w[hsz : 2 * hsz])[:, None, :]
            + (obj @ w[2 * hsz : 3 * hsz])[:, :, None]
            + self.vision_prior.bias
        )
        if self.pair_prior is None:
            return vis, torch.sigmoid(vis)
        dist = layout.pad(label_probs.detach())  # [S, L, C]
        prior = dist @ self.pair_prior.T @ dist.transpose(1, 2)  # [s, i, j] = p_iᵀ Wᵀ p_j = p_jᵀ W p_i
        logits = vis + w[3 * hsz] * prior
        return logits, torch.sigmoid(logits) * prior

    def encode_objects(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        obj_embed: Tensor,
        label_probs: Tensor,
    ):
        """Pair scores → spanning tree → binary forest → object-context BiTreeLSTM.

        Returns (obj_ctx Float[N, H], state = (obj_pre, forest, tree_parent, tree_logits, tree_pair_index));
        label_probs feed the tree's co-occurrence prior."""
        n = node_features.shape[0]
        device = node_features.device
        layout = SequenceLayout(image_index)
        box_info = encode_boxes(boxes, image_index, image_sizes)
        obj_pre = torch.cat([node_features, obj_embed, self.pos_embed(box_info)], 1)
        pair, score = self.pair_logits(
            node_features, obj_embed, box_info, boxes, image_sizes, label_probs, layout
        )
        parent_pos, join = greedy_spanning_tree(score, layout.lengths)
        has_parent = parent_pos >= 0
        tree_parent = torch.full((n,), -1, dtype=torch.long, device=device)
        cells = has_parent.nonzero(as_tuple=True)
        tree_parent[layout.flat_of[cells]] = layout.flat_of[cells[0], parent_pos[cells]]
        forest = to_binary_forest(tree_parent, layout.unpad(join) if n else tree_parent)
        # every ordered pair i ≠ j of an image, for the BCE against the GT adjacency
        off_diag = layout.valid()[:, :, None] & layout.valid()[:, None, :]
        off_diag &= ~torch.eye(layout.max_len, dtype=torch.bool, device=device)[None]
        s, i, j = off_diag.nonzero(as_tuple=True)
        tree_pair_index = torch.stack([layout.flat_of[s, i], layout.flat_of[s, j]], 1)
        tree_logits = pair[s, i, j]
        obj_ctx = self.obj_ctx_rnn(obj_pre, forest)
        return obj_ctx, (obj_pre, forest, tree_parent, tree_logits, tree_pair_index)

    def decode_labels(self, state, object_context: Tensor, gt_labels: Tensor | None) -> tuple[Tensor, Tensor]:
        obj_pre, forest = state[0], state[1]
        return self.decoder(torch.cat([obj_pre, object_context], 1), forest, gt_labels)

    def encode_edges(
        self, state, node_features: Tensor, object_context: Tensor, obj_labels: Tensor
    ) -> Tensor:
        """The edge-context BiTreeLSTM over [label embedding, visual feature, z^o], on the same forest."""
        edge_in = torch.cat([self.obj_embed2(obj_labels), node_features, object_context], 1)
        return self.edge_ctx_rnn(edge_in, state[1])

    def make_output(self, state, **fields: Tensor) -> VCTreeOutput:
        _, _, tree_parent, tree_logits, tree_pair_index = state
        return VCTreeOutput(
            **fields, tree_logits=tree_logits, tree_pair_index=tree_pair_index, tree_parent=tree_parent
        )
