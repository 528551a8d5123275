"""Transformer context encoder (the context of the scene-graph benchmark's ``TransformerPredictor``).

Where this sits: stage 2, after node grounding, a third choice next to MOTIF and VCTree
(``model/context=transformer``); see :mod:`sgseg.models.context.base` for the contract. The objects of each image
attend to each other: a stack of self-attention encoder layers over [visual feature, label embedding, box
position embedding] (projected to H) gives the object context z^o_j; a linear layer on z^o_j gives the object
logits (SGCls/SGDet; no recursive decoder, so labels are the argmax — in training too, as SGB); a second stack
over [visual feature, z^o_j, embedding of the final label] gives the edge context. The relation head and the
frequency bias are the shared ones.

Batching: the flat rows are laid out as a padded ``[S, L, H]`` block, one row per image
(:class:`~sgseg.models.context.base.SequenceLayout`); padded keys are masked out of every attention, padded
rows are zeroed after each sub-layer (as SGB), so one image's outputs never depend on another image's objects.

The encoder layer is SGB's (after "Attention is all you need"): multi-head attention with per-head key/value
width ``key_dim`` / ``value_dim`` (64) — independent of H, so ``torch.nn.MultiheadAttention`` (head width
H / heads) does not fit in general — then residual + LayerNorm (post-norm), then a position-wise feed-forward
H → ``inner_dim`` → H with ReLU, residual + LayerNorm; dropout 0.1 on the attention weights and on both
sub-layer outputs. The attention itself is ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.context.base import ContextEncoder, SequenceLayout, encode_boxes


class SelfAttention(nn.Module):
    """Multi-head self-attention + dropout + residual + LayerNorm (SGB ``MultiHeadAttention``).

    d_model: H; num_heads: h; key_dim / value_dim: per-head widths d_k / d_v; dropout: on the attention weights
    and on the output projection.
    """

    def __init__(self, d_model: int, num_heads: int, key_dim: int, value_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.dropout_p = dropout
        self.w_q = nn.Linear(d_model, num_heads * key_dim)
        self.w_k = nn.Linear(d_model, num_heads * key_dim)
        self.w_v = nn.Linear(d_model, num_heads * value_dim)
        for lin, width in ((self.w_q, key_dim), (self.w_k, key_dim), (self.w_v, value_dim)):
            nn.init.normal_(lin.weight, mean=0.0, std=math.sqrt(2.0 / (d_model + width)))
        self.out = nn.Linear(num_heads * value_dim, d_model)
        nn.init.xavier_normal_(self.out.weight)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x: Float[S, L, H]; valid: Bool[S, L] (False = padding, never attended to). Returns Float[S, L, H]."""
        s, length, _ = x.shape
        h = self.num_heads
        q = self.w_q(x).view(s, length, h, self.key_dim).transpose(1, 2)  # [S, h, L, d_k]
        k = self.w_k(x).view(s, length, h, self.key_dim).transpose(1, 2)
        v = self.w_v(x).view(s, length, h, self.value_dim).transpose(1, 2)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :], dropout_p=self.dropout_p if self.training else 0.0
        )  # scale 1/sqrt(d_k), SGB's temperature
        att = att.transpose(1, 2).reshape(s, length, h * self.value_dim)
        return self.norm(self.dropout(self.out(att)) + x)


class EncoderLayer(nn.Module):
    """Self-attention then position-wise feed-forward (H → inner → H, ReLU), each post-norm residual; padded rows
    are zeroed after each (SGB ``EncoderLayer``)."""

    def __init__(
        self, d_model: int, inner_dim: int, num_heads: int, key_dim: int, value_dim: int, dropout: float
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(d_model, num_heads, key_dim, value_dim, dropout)
        self.ff = nn.Sequential(
            nn.Linear(d_model, inner_dim), nn.ReLU(), nn.Linear(inner_dim, d_model), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        keep = valid[..., None].to(x.dtype)
        x = self.attention(x, valid) * keep
        return self.norm(self.ff(x) + x) * keep


class TransformerEncoder(nn.Module):
    """``num_layers`` :class:`EncoderLayer` over the objects of each image; flat rows in, flat rows out."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        inner_dim: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, inner_dim, num_heads, key_dim, value_dim, dropout)
            for _ in range(num_layers)
        )

    def forward(self, x: Tensor, layout: SequenceLayout) -> Tensor:
        """x: Float[N, H] flat rows; layout: the per-image layout of those rows. Returns Float[N, H]."""
        if x.shape[0] == 0:
            return x
        y, valid = layout.pad(x), layout.valid()
        for layer in self.layers:
            y = layer(y, valid)
        return layout.unpad(y)


class TransformerContext(ContextEncoder):
    """Object and edge context from self-attention over the objects of each image (SGB ``TransformerContext``).

    in_dim: D_node; num_obj_classes: C_obj; embed_dim: label embedding width (GloVe, 200 on VG); hidden_dim: H,
    the width of both encoders and both outputs (SGB 512); num_obj_layers / num_edge_layers: encoder depths
    (SGB 4 / 2); num_heads (8), key_dim / value_dim (64 each, per head), inner_dim (2048), dropout (0.1): see
    :class:`EncoderLayer`; nms_threshold: SGDet-test label NMS IoU (SGB's LATER_NMS_PREDICTION_THRES 0.3; None =
    off); pos_dim: box embedding width (128). class_embeddings, num_source_classes, source_class_embeddings: word
    vectors of the label tables (see :class:`~sgseg.models.context.base.ContextEncoder`); start_embedding is part
    of the common builder call and unused (there is no recursive decoder).

    Output widths: ``object_context`` Float[N, H], ``edge_context`` Float[N, H].
    """

    def __init__(
        self,
        in_dim: int,
        num_obj_classes: int,
        embed_dim: int = 200,
        hidden_dim: int = 512,
        num_obj_layers: int = 4,
        num_edge_layers: int = 2,
        num_heads: int = 8,
        key_dim: int = 64,
        value_dim: int = 64,
        inner_dim: int = 2048,
        dropout: float = 0.1,
        nms_threshold: float | None = 0.3,
        pos_dim: int = 128,
        class_embeddings: Tensor | None = None,
        start_embedding: Tensor | None = None,
        num_source_classes: int = 0,
        source_class_embeddings: Tensor | None = None,
    ) -> None:
        super().__init__(
            in_dim, num_obj_classes, embed_dim, hidden_dim, pos_dim, class_embeddings, None,
            num_source_classes, source_class_embeddings, nms_threshold,
        )  # fmt: skip
        # SGB's bbox_embed (no BatchNorm, dropout 0.1), in place of MOTIF's position MLP
        self.pos_embed = nn.Sequential(
            nn.Linear(9, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, pos_dim), nn.ReLU(), nn.Dropout(0.1)
        )
        sizes = {"d_model": hidden_dim, "inner_dim": inner_dim, "num_heads": num_heads, "key_dim": key_dim,
                 "value_dim": value_dim, "dropout": dropout}  # fmt: skip
        self.lin_obj = nn.Linear(in_dim + embed_dim + pos_dim, hidden_dim)
        self.obj_encoder = TransformerEncoder(num_obj_layers, **sizes)
        self.out_obj = nn.Linear(hidden_dim, num_obj_classes)
        self.lin_edge = nn.Linear(in_dim + hidden_dim + embed_dim, hidden_dim)
        self.edge_encoder = TransformerEncoder(num_edge_layers, **sizes)

    def encode_objects(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        obj_embed: Tensor,
        label_probs: Tensor,
    ) -> tuple[Tensor, SequenceLayout]:
        """(z^o Float[N, H], the per-image layout); the input label distribution is not used beyond obj_embed."""
        layout = SequenceLayout(image_index)
        pos = self.pos_embed(encode_boxes(boxes, image_index, image_sizes))
        x = self.lin_obj(torch.cat([node_features, obj_embed, pos], 1))
        return self.obj_encoder(x, layout), layout

    def decode_labels(
        self, state: SequenceLayout, object_context: Tensor, gt_labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Logits from z^o; labels = the best foreground class (no teacher forcing: SGB feeds its predictions to
        the edge context in training too; the object CE still trains the logits)."""
        logits = self.out_obj(object_context)
        return logits, logits[:, 1:].argmax(1) + 1

    def encode_edges(
        self, state: SequenceLayout, node_features: Tensor, object_context: Tensor, obj_labels: Tensor
    ) -> Tensor:
        x = self.lin_edge(torch.cat([node_features, object_context, self.obj_embed2(obj_labels)], 1))
        return self.edge_encoder(x, state)
