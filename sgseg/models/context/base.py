"""Shared pieces of the stage-2 context encoders (MOTIF, VCTree, Transformer): the base class with the label
bookkeeping of the three tasks, output type, layouts, embeddings, label NMS.

Where this sits: stage 2, between grounding and the relation predictor. A context encoder takes the node
features of a batch (grounded ẑ_j, or plain box features z_j for the baseline), the boxes and the detector's
label logits, and returns per-object label logits / labels / scores, the object context z^o_j (which also
feeds mask refinement) and the edge context that :class:`sgseg.models.relation.RelationPredictor` turns into
relation logits.

Everything is a flat batch tensor plus ``image_index``. Where a recurrent model needs one sequence per image,
:class:`SequenceLayout` arranges the flat rows as a packed batch of per-image sequences (and as a padded
``[S, L, ...]`` block for pairwise maps) and maps results back, without Python loops over images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from sgseg.ops.boxes import box_iou

MODES: tuple[str, ...] = ("predcls", "sgcls", "sgdet")

# Logit value for the one-hot "distributions" of GT labels in PredCls (reference ``to_onehot``): softmax of it
# is exactly one-hot in float32, so object scores are 1.
ONEHOT_LOGIT = 1000.0


@dataclass
class ContextOutput:
    """What a context encoder returns, identical in training and evaluation.

    obj_logits: Float[N, C_obj] refined object logits (PredCls: ±1000 one-hot of the GT labels).
    obj_labels: Long[N] labels used downstream (frequency bias, edge context, evaluation): GT labels in
        PredCls and under teacher forcing in training (MOTIF, VCTree; SGB's Transformer has none), decoded labels
        otherwise (SGDet test: after label NMS).
    obj_scores: Float[N] softmax prob of ``obj_labels`` under ``obj_logits`` (1 in PredCls).
    edge_context: Float[N, H_edge] per-object edge context for the relation predictor.
    object_context: Float[N, H_obj] z^o_j, the object context (input of mask refinement, paper Eq. 8).

    A context model with outputs or losses of its own returns a subclass (e.g. VCTree's ``VCTreeOutput``).
    """

    obj_logits: Tensor
    obj_labels: Tensor
    obj_scores: Tensor
    edge_context: Tensor
    object_context: Tensor

    def extra_losses(self, related_pairs: Tensor, image_index: Tensor) -> dict[str, Tensor]:
        """Loss terms of the context model itself (none here), keyed by name.

        related_pairs: Long[F, 2] flat (subject, object) indices of the pairs holding a relation; image_index:
        Long[N]."""
        return {}


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"context mode {mode!r} is not one of {MODES}; set task.name to predcls|sgcls|sgdet")


def _lexsort(primary: Tensor, secondary: Tensor) -> Tensor:
    """Permutation sorting by ``primary`` then ``secondary`` (both Float/Long[N]), stable."""
    order = torch.argsort(secondary, stable=True)
    return order[torch.argsort(primary[order], stable=True)]


class SequenceLayout:
    """One sequence per image over a flat batch of objects, for packed LSTMs and padded pair maps.

    Sequences are the non-empty images sorted by length (descending, ties by image id), which is the order
    ``PackedSequence`` needs; inside a sequence the objects are sorted by ``sort_key`` (ascending, ties by flat
    index). ``slot[n]``, ``pos[n]`` locate object n in the padded ``[S, L]`` block; ``packed_row[n]`` is its row
    in ``PackedSequence.data``.

    image_index: Long[N]; sort_key: Float[N] or None (keep the flat order inside each image).
    """

    def __init__(self, image_index: Tensor, sort_key: Tensor | None = None) -> None:
        device = image_index.device
        n = image_index.numel()
        self.num_objects = n
        key = torch.arange(n, device=device) if sort_key is None else sort_key
        order = _lexsort(image_index, key)  # objects grouped by image, sorted by key inside
        counts = (
            torch.bincount(image_index, minlength=1) if n else torch.zeros(1, dtype=torch.long, device=device)
        )
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.empty(n, dtype=torch.long, device=device)
        pos[order] = torch.arange(n, device=device) - starts[image_index[order]]
        # Longest image first; argsort of -count keeps image order among equal lengths (stable).
        img_by_len = torch.argsort(-counts, stable=True)
        num_seq = int((counts > 0).sum())
        img_by_len = img_by_len[:num_seq]
        slot_of_image = torch.full_like(counts, -1)
        slot_of_image[img_by_len] = torch.arange(num_seq, device=device)
        self.pos = pos
        self.slot = slot_of_image[image_index]
        self.lengths = counts[img_by_len].cpu()  # Long[S], descending
        self.seq_image = img_by_len  # Long[S] image id of each sequence
        self.max_len = int(self.lengths[0]) if num_seq else 0
        steps = torch.arange(self.max_len)
        self.batch_sizes = (self.lengths[None, :] > steps[:, None]).sum(1)  # Long[L] on CPU, as torch wants
        offsets = (torch.cumsum(self.batch_sizes, 0) - self.batch_sizes).to(device)
        self.step_offsets = offsets
        self.packed_row = offsets[pos] + self.slot if n else pos
        self.packed_to_flat = torch.argsort(self.packed_row)
        # flat index of every padded cell (-1 for padding), for going from [S, L] results back to objects
        self.flat_of = torch.full((num_seq, self.max_len), -1, dtype=torch.long, device=device)
        self.flat_of[self.slot, self.pos] = torch.arange(n, device=device)

    @property
    def num_sequences(self) -> int:
        return int(self.lengths.numel())

    def pack(self, x: Tensor) -> PackedSequence:
        """Float[N, D] flat rows → PackedSequence over the per-image sequences."""
        return PackedSequence(x[self.packed_to_flat], self.batch_sizes)

    def unpack(self, packed_data: Tensor) -> Tensor:
        """``PackedSequence.data`` Float[N, D] → flat rows Float[N, D] in the input order."""
        return packed_data[self.packed_row]

    def pad(self, x: Tensor, fill: float = 0.0) -> Tensor:
        """Float[N, ...] → Float[S, L, ...] (padding cells = ``fill``)."""
        out = x.new_full((self.num_sequences, self.max_len, *x.shape[1:]), fill)
        out[self.slot, self.pos] = x
        return out

    def unpad(self, y: Tensor) -> Tensor:
        """Float[S, L, ...] → Float[N, ...]."""
        return y[self.slot, self.pos]

    def valid(self) -> Tensor:
        """Bool[S, L]: which padded cells hold an object."""
        return self.flat_of >= 0


def encode_boxes(boxes: Tensor, image_index: Tensor, image_sizes: Tensor) -> Tensor:
    """Float[N, 9] box geometry relative to the image (reference ``encode_box_info``).

    (w, h, cx, cy, x1, y1, x2, y2, w·h), each divided by the image width / height (area by w·h); boxes xyxy in
    resized-image pixels; image_sizes Long[B, 2] (h, w). Width is ``x2 - x1`` (continuous pixels; the reference's
    ``+1`` belongs to integer-pixel boxes).
    """
    hw = image_sizes.to(boxes.dtype)[image_index]
    img_h, img_w = hw[:, 0:1], hw[:, 1:2]
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = boxes[:, :2] + 0.5 * wh
    scale = torch.cat([img_w, img_h], 1)
    return torch.cat(
        [
            wh / scale,
            centre / scale,
            boxes[:, :2] / scale,
            boxes[:, 2:] / scale,
            wh.prod(1, keepdim=True) / (img_w * img_h),
        ],
        1,
    )


class SafeBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that falls back to its running statistics for a training batch of ≤ 1 row.

    An image with a single object is a legal training batch; plain BatchNorm raises on it.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] <= 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def position_mlp(out_dim: int = 128) -> nn.Sequential:
    """Box-geometry embedding 9 → 32 → ``out_dim`` (reference ``pos_embed``)."""
    return nn.Sequential(
        nn.Linear(9, 32), SafeBatchNorm1d(32, momentum=0.001), nn.Linear(32, out_dim), nn.ReLU()
    )


def label_nms(probs: Tensor, boxes: Tensor, image_index: Tensor, threshold: float) -> Tensor:
    """Greedy per-class NMS over decoded label distributions (reference SGDet test post-processing).

    Repeatedly, in every image at once: take the (box, class) with the highest remaining prob among the
    unassigned boxes, give the box that class, and zero that class for every box of the image overlapping it
    with IoU ≥ ``threshold``. The reference uses per-class regressed boxes; the context encoder only sees one box
    per object, so the same box stands for every class.

    probs: Float[N, C_obj] softmax probs (column 0, background, is ignored); boxes: Float[N, 4] xyxy.
    Returns Long[N] labels in 1..C_obj-1.
    """
    n = probs.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=probs.device)
    probs = probs.detach().to(torch.float32, copy=True)  # float32 under bf16 autocast too (one dtype below)
    probs[:, 0] = -1.0  # background can never be chosen
    labels = torch.zeros(n, dtype=torch.long, device=probs.device)
    assigned = torch.zeros(n, dtype=torch.bool, device=probs.device)
    same_image = image_index[:, None] == image_index[None, :]
    overlap = (box_iou(boxes, boxes) >= threshold) & same_image
    num_images = int(image_index.max()) + 1
    flat = torch.arange(n, device=probs.device)
    for _ in range(int(torch.bincount(image_index).max())):
        best_val, best_cls = probs.max(1)
        best_val = best_val.masked_fill(assigned, -2.0)
        img_best = torch.full((num_images,), -2.0, device=probs.device).scatter_reduce(
            0, image_index, best_val, "amax"
        )
        is_cand = (~assigned) & (best_val == img_best[image_index])
        pick = torch.full((num_images,), n, device=probs.device).scatter_reduce(
            0, image_index, torch.where(is_cand, flat, n), "amin"
        )
        pick = pick[pick < n]  # lowest-index best box of every image that still has one
        cls = best_cls[pick]
        labels[pick] = cls
        rows, cols = overlap[pick].nonzero(as_tuple=True)  # boxes overlapping each pick
        probs[cols, cls[rows]] = 0.0
        assigned[pick] = True
        probs[pick] = -1.0
    return labels


class ContextEncoder(nn.Module):
    """Base of the context encoders: label embeddings, box-position embedding, label bookkeeping by mode.

    :meth:`forward` is a template: input checks, the input label embedding (GT label in PredCls, the detector's
    expected embedding otherwise), then the subclass's three steps — :meth:`encode_objects` (z^o),
    :meth:`decode_labels` (SGCls/SGDet only; PredCls keeps the GT labels with one-hot logits; SGDet test adds
    label NMS when ``nms_threshold`` is set) and :meth:`encode_edges` — and :meth:`make_output`. The COCO pass
    (:meth:`object_context`) reuses :meth:`encode_objects`. A new context model is a subclass implementing those
    steps; it exposes ``hidden_dim``, the width of both its object and its edge context.

    in_dim: D_node of the node features. num_obj_classes: C_obj (index 0 background). embed_dim: label
    embedding width. class_embeddings: optional Float[C_obj, embed_dim] word vectors (GloVe of the class
    names, :func:`sgseg.models.context.word_vectors.label_word_vectors`) to initialise both label embeddings
    and the label decoder's class rows; random normal when None. start_embedding: optional Float[embed_dim],
    the decoder's "start" row (the reference's GloVe vector of ``start``).
    num_source_classes / source_class_embeddings: C_src (with background) and optional Float[C_src, embed_dim]
    word vectors of the COCO label embedding used as the input label embedding on the COCO pass of PredCls
    (:meth:`object_context`; the reference's ``obj_embed_segmentation``); 0 = no such table.
    nms_threshold: IoU of the SGDet-test label NMS over the decoded labels (None = off).
    """

    def __init__(
        self,
        in_dim: int,
        num_obj_classes: int,
        embed_dim: int = 200,
        hidden_dim: int = 512,
        pos_dim: int = 128,
        class_embeddings: Tensor | None = None,
        start_embedding: Tensor | None = None,
        num_source_classes: int = 0,
        source_class_embeddings: Tensor | None = None,
        nms_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.nms_threshold = nms_threshold
        self.num_obj_classes = num_obj_classes
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.pos_dim = pos_dim
        # Two tables as in the reference: one for the input label distribution, one for the decoded labels
        # fed to the edge context.
        self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_classes, embed_dim)
        if class_embeddings is not None:
            if tuple(class_embeddings.shape) != (num_obj_classes, embed_dim):
                raise ValueError(
                    f"class_embeddings must be Float[{num_obj_classes}, {embed_dim}] (C_obj, embed_dim), got "
                    f"{tuple(class_embeddings.shape)}; pass word vectors of width embed_dim for every class"
                )
            with torch.no_grad():
                self.obj_embed1.weight.copy_(class_embeddings)
                self.obj_embed2.weight.copy_(class_embeddings)
        if start_embedding is not None and tuple(start_embedding.shape) != (embed_dim,):
            raise ValueError(
                f"start_embedding must be Float[{embed_dim}] (embed_dim), got {tuple(start_embedding.shape)}"
            )
        self.source_embed = nn.Embedding(num_source_classes, embed_dim) if num_source_classes else None
        if source_class_embeddings is not None:
            if self.source_embed is None or tuple(source_class_embeddings.shape) != (
                num_source_classes,
                embed_dim,
            ):
                raise ValueError(
                    f"source_class_embeddings must be Float[{num_source_classes}, {embed_dim}] (num_source_classes, "
                    f"embed_dim), got {tuple(source_class_embeddings.shape)}; set num_source_classes to C_src"
                )
            with torch.no_grad():
                self.source_embed.weight.copy_(source_class_embeddings)
        self.pos_embed = position_mlp(pos_dim)

    @staticmethod
    def init_decoder_embedding(
        table: nn.Embedding, class_embeddings: Tensor | None, start_embedding: Tensor | None
    ) -> None:
        """Fill a decoder's label table (row 0 "start", label l → row l + 1) from the word vectors, if given
        (the reference's ``obj_edge_vectors(['start'] + classes)``)."""
        with torch.no_grad():
            if start_embedding is not None:
                table.weight[0].copy_(start_embedding)
            if class_embeddings is not None:
                table.weight[1:].copy_(class_embeddings)

    # -- helpers shared by the context models ---------------------------------------------------------------
    def _check_inputs(
        self, node_features: Tensor, boxes: Tensor, image_index: Tensor, label_logits: Tensor, gt_labels, mode
    ) -> None:
        check_mode(mode)
        n = node_features.shape[0]
        name = type(self).__name__
        if node_features.dim() != 2 or node_features.shape[1] != self.in_dim:
            raise ValueError(
                f"{name}: node_features must be Float[N, {self.in_dim}], got {tuple(node_features.shape)}"
            )
        if boxes.shape != (n, 4) or image_index.shape != (n,):
            raise ValueError(f"{name}: boxes must be Float[N, 4] and image_index Long[N] with N = {n}")
        if label_logits.shape != (n, self.num_obj_classes):
            raise ValueError(
                f"{name}: label_logits must be Float[N, {self.num_obj_classes}], got {tuple(label_logits.shape)}"
            )
        if gt_labels is not None and gt_labels.shape != (n,):
            raise ValueError(f"{name}: gt_labels must be Long[N], got {tuple(gt_labels.shape)}")
        if mode == "predcls" and gt_labels is None:
            raise ValueError(
                f"{name}: mode 'predcls' needs gt_labels (the GT object labels); pass Targets.labels"
            )
        if mode != "predcls" and self.training and gt_labels is None:
            raise ValueError(
                f"{name}: training in {mode} needs gt_labels for teacher forcing (SGDet: label of the matched GT "
                "box, 0 if unmatched)"
            )

    def _input_label_embedding(self, label_logits: Tensor, gt_labels: Tensor | None, mode: str) -> Tensor:
        """Float[N, embed_dim]: embedding of the GT label (PredCls) or the expected embedding under the detector's
        softmax (SGCls/SGDet; detached, the detector is frozen)."""
        if mode == "predcls":
            return self.obj_embed1(gt_labels)
        return label_logits.detach().softmax(-1) @ self.obj_embed1.weight

    def _object_input_embedding(
        self, label_logits: Tensor, mode: str, source_labels: Tensor | None
    ) -> Tensor:
        """Input label embedding of the COCO pass (:meth:`object_context`): in PredCls the GT label path, i.e.
        the COCO label table at the GT COCO labels (``source_labels``, Long[N] 1-based); otherwise the
        detector's VG label distribution, as on VG."""
        if mode != "predcls":
            return self._input_label_embedding(label_logits, None, mode)
        if self.source_embed is None or source_labels is None:
            raise ValueError(
                f"{type(self).__name__}.object_context in predcls needs `source_labels` (the GT COCO labels) and a "
                "COCO label table (num_source_classes > 0, set by the builder from the detector's COCO classes)"
            )
        return self.source_embed(source_labels)

    # -- the subclass's steps ----------------------------------------------------------------------------
    def encode_objects(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        obj_embed: Tensor,
        label_probs: Tensor,
    ) -> tuple[Tensor, Any]:
        """The object context: (z^o Float[N, H], state handed to :meth:`decode_labels` / :meth:`encode_edges` /
        :meth:`make_output`). obj_embed: Float[N, embed_dim] input label embedding; label_probs: Float[N, C_obj]
        the input label distribution (one-hot GT in PredCls)."""
        raise NotImplementedError

    def decode_labels(
        self, state: Any, object_context: Tensor, gt_labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """SGCls/SGDet: (obj_logits Float[N, C_obj], obj_labels Long[N]); gt_labels for teacher forcing (training)."""
        raise NotImplementedError

    def encode_edges(
        self, state: Any, node_features: Tensor, object_context: Tensor, obj_labels: Tensor
    ) -> Tensor:
        """Float[N, H]: the edge context, from the final labels ``obj_labels``."""
        raise NotImplementedError

    def make_output(self, state: Any, **fields: Tensor) -> ContextOutput:
        """The output record (a subclass adds its own fields here)."""
        return ContextOutput(**fields)

    # -- the template -------------------------------------------------------------------------------------
    def forward(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        label_logits: Tensor,
        gt_labels: Tensor | None,
        mode: str,
    ) -> ContextOutput:
        """node_features: Float[N, D_node]; boxes: Float[N, 4] xyxy (resized-image pixels); image_index: Long[N];
        image_sizes: Long[B, 2] (h, w); label_logits: Float[N, C_obj] detector logits; gt_labels: Long[N] GT
        labels (PredCls input; teacher forcing in training; SGDet: matched GT label, 0 = none) or None at test;
        mode: predcls | sgcls | sgdet."""
        self._check_inputs(node_features, boxes, image_index, label_logits, gt_labels, mode)
        obj_embed = self._input_label_embedding(label_logits, gt_labels, mode)
        label_probs = self._label_probs(label_logits.to(node_features.dtype), gt_labels, mode)
        obj_ctx, state = self.encode_objects(
            node_features, boxes, image_index, image_sizes, obj_embed, label_probs
        )
        if mode == "predcls":
            obj_labels = gt_labels
            obj_logits = self._onehot_logits(gt_labels)
        else:
            obj_logits, obj_labels = self.decode_labels(state, obj_ctx, gt_labels)
            obj_labels = obj_labels.to(node_features.device)
            if mode == "sgdet" and not self.training and self.nms_threshold is not None:
                obj_labels = label_nms(obj_logits.softmax(-1), boxes, image_index, self.nms_threshold)
        edge_ctx = self.encode_edges(state, node_features, obj_ctx, obj_labels)
        return self.make_output(
            state,
            obj_logits=obj_logits,
            obj_labels=obj_labels,
            obj_scores=self._scores(obj_logits, obj_labels),
            edge_context=edge_ctx,
            object_context=obj_ctx,
        )

    def object_context(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        label_logits: Tensor,
        mode: str,
        source_labels: Tensor | None = None,
    ) -> Tensor:
        """Float[N, H]: the object context z^o alone (no label decoding, no edge context), with gradients — the
        COCO pass of mask refinement (paper Eq. 9/11), as the reference's ``segmentation_step``.

        label_logits: Float[N, C_obj] the detector's VG logits on the COCO boxes; mode: the run's task;
        source_labels: Long[N] GT COCO labels (1-based; PredCls input label path). The input label distribution
        is the detector's VG one here (the GT labels of the COCO pass are COCO labels).
        """
        obj_embed = self._object_input_embedding(label_logits, mode, source_labels)
        probs = label_logits.detach().softmax(-1)
        return self.encode_objects(node_features, boxes, image_index, image_sizes, obj_embed, probs)[0]

    def _label_probs(self, label_logits: Tensor, gt_labels: Tensor | None, mode: str) -> Tensor:
        """Float[N, C_obj]: one-hot of the GT labels (PredCls), else the detector's softmax (detached)."""
        if mode == "predcls":
            return F.one_hot(gt_labels, self.num_obj_classes).to(label_logits.dtype)
        return label_logits.detach().softmax(-1)

    def _onehot_logits(self, labels: Tensor) -> Tensor:
        out = torch.full((labels.shape[0], self.num_obj_classes), -ONEHOT_LOGIT, device=labels.device)
        out[torch.arange(labels.shape[0], device=labels.device), labels] = ONEHOT_LOGIT
        return out

    @staticmethod
    def _scores(obj_logits: Tensor, obj_labels: Tensor) -> Tensor:
        if obj_logits.shape[0] == 0:
            return obj_logits.new_zeros(0)
        return obj_logits.softmax(-1).gather(1, obj_labels[:, None]).squeeze(1)


def teacher_labels(pred_logits: Tensor, gt_labels: Tensor | None, training: bool) -> Tensor:
    """Labels committed by a decoder step: the GT label under teacher forcing (training), else the argmax over
    the foreground classes. A GT label of 0 (an unmatched SGDet proposal) falls back to the prediction, as in
    the reference. pred_logits: Float[n, C_obj]; gt_labels: Long[n] or None."""
    pred = pred_logits[:, 1:].argmax(1) + 1
    if training and gt_labels is not None:
        return torch.where(gt_labels > 0, gt_labels, pred)
    return pred
