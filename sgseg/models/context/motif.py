"""MOTIF context encoder (Zellers et al. 2018, as in the scene-graph benchmark's ``LSTMContext``).

Where this sits: stage 2, after node grounding; see :mod:`sgseg.models.context.base`. Objects of each image
form one left-to-right sequence (sorted by box centre x). A BiLSTM over [visual feature, label embedding, box
position embedding] gives the object context z^o_j; an LSTM decoder walks the same sequence to predict labels
(SGCls/SGDet; teacher forcing with GT labels in training, greedy at test, plus per-class label NMS at SGDet
test); a second BiLSTM over [decoded-label embedding, visual feature, z^o_j] gives the edge context.
All images of a batch run together as one packed sequence batch.

Order: left to right, as the paper describes. (The reference's ``sort_by_score`` sorts centre x descending,
i.e. right to left; only the unidirectional label decoder can tell the two apart.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.context.base import ContextEncoder, SequenceLayout, encode_boxes, teacher_labels

# True: the label decoder projects its rows for all steps at once (float rounding of the split sum; a stage-2
# speed-up, sgseg.models.speedups); False: the whole [row, label embedding] input projected step by step
DECODER_INPUT_ONCE = True


class HighwayLSTMCell(nn.Module):
    """LSTM cell with a highway connection from the input (reference ``DecoderRNN.lstm_equations``).

    h' = g ⊙ o ⊙ tanh(c') + (1 − g) ⊙ W_x x, with gates from one input projection (6H) and one state
    projection (5H).
    """

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.input_linearity = nn.Linear(input_dim, 6 * hidden_dim)
        self.state_linearity = nn.Linear(hidden_dim, 5 * hidden_dim)
        nn.init.zeros_(self.input_linearity.bias)
        nn.init.zeros_(self.state_linearity.bias)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.step(self.input_linearity(x), h, c)

    def step(self, px: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` from the input projection ``px`` = ``input_linearity(x)`` (Float[B, 6H])."""
        ph = self.state_linearity(h)
        i, f, u, o, g = (px[:, : 5 * self.hidden_dim] + ph).chunk(5, dim=1)
        c_new = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f) * c
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        g = torch.sigmoid(g)
        return g * h_new + (1 - g) * px[:, 5 * self.hidden_dim :], c_new


class MotifContext(ContextEncoder):
    """MOTIF object/edge context over objects sorted by box centre x.

    in_dim: D_node; num_obj_classes: C_obj; embed_dim: label embedding width (reference 200, GloVe);
    hidden_dim: H of every LSTM and of both outputs (reference 512); num_obj_layers / num_edge_layers: BiLSTM
    depths (reference defaults 1 / 1); dropout: between stacked LSTM layers and the decoder's recurrent dropout
    (reference 0.2); nms_threshold: IoU of the SGDet-test label NMS (reference 0.3; None
    turns it off); class_embeddings, start_embedding, num_source_classes, source_class_embeddings: word
    vectors of the label tables (see :class:`~sgseg.models.context.base.ContextEncoder`).

    Output widths: ``object_context`` Float[N, H], ``edge_context`` Float[N, H].
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
        nms_threshold: float | None = 0.3,
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
        self.dropout = dropout
        obj_in = in_dim + embed_dim + pos_dim
        self.obj_ctx_rnn = nn.LSTM(
            obj_in,
            hidden_dim,
            num_obj_layers,
            dropout=dropout if num_obj_layers > 1 else 0.0,
            bidirectional=True,
        )
        self.lin_obj_h = nn.Linear(2 * hidden_dim, hidden_dim)
        # Decoder: its label embedding has a "start" row 0 before the C_obj classes (label l → row l + 1).
        self.decoder_embed = nn.Embedding(num_obj_classes + 1, embed_dim)
        self.init_decoder_embedding(self.decoder_embed, class_embeddings, start_embedding)
        self.decoder_cell = HighwayLSTMCell(obj_in + hidden_dim + embed_dim, hidden_dim)
        self.decoder_out = nn.Linear(hidden_dim, num_obj_classes)
        self.edge_ctx_rnn = nn.LSTM(
            embed_dim + in_dim + hidden_dim,
            hidden_dim,
            num_edge_layers,
            dropout=dropout if num_edge_layers > 1 else 0.0,
            bidirectional=True,
        )
        self.lin_edge_h = nn.Linear(2 * hidden_dim, hidden_dim)

    def encode_objects(
        self,
        node_features: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        image_sizes: Tensor,
        obj_embed: Tensor,
        label_probs: Tensor,
    ) -> tuple[Tensor, tuple[SequenceLayout, Tensor]]:
        """The object-context BiLSTM: (z^o Float[N, H], (layout, its input [visual, label embedding, position]))."""
        layout = SequenceLayout(image_index, 0.5 * (boxes[:, 0] + boxes[:, 2]))
        pos = self.pos_embed(encode_boxes(boxes, image_index, image_sizes))
        obj_pre = torch.cat([node_features, obj_embed, pos], 1)
        if node_features.shape[0] == 0:
            obj_ctx = node_features.new_zeros(0, self.hidden_dim)
        else:
            obj_ctx = self.lin_obj_h(layout.unpack(self.obj_ctx_rnn(layout.pack(obj_pre))[0].data))
        return obj_ctx, (layout, obj_pre)

    def decode_labels(
        self, state: tuple[SequenceLayout, Tensor], object_context: Tensor, gt_labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        layout, obj_pre = state
        return self.decode(torch.cat([obj_pre, object_context], 1), layout, gt_labels)

    def decode(
        self, decoder_input: Tensor, layout: SequenceLayout, gt_labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Run the label decoder step by step over the packed sequences.

        decoder_input: Float[N, D] flat rows; gt_labels: Long[N] (teacher forcing, training only) or None.
        Returns obj_logits Float[N, C_obj] and the committed labels Long[N] (flat order).
        """
        n = decoder_input.shape[0]
        if n == 0:
            return decoder_input.new_zeros(0, self.num_obj_classes), torch.zeros(0, dtype=torch.long)
        packed = decoder_input[layout.packed_to_flat]
        packed_gt = gt_labels[layout.packed_to_flat] if gt_labels is not None else None
        s = layout.num_sequences
        h = packed.new_zeros(s, self.hidden_dim)
        c = packed.new_zeros(s, self.hidden_dim)
        prev_embed = self.decoder_embed.weight[0:1].expand(s, -1)
        # Recurrent dropout: one mask per sequence, fixed over time (reference get_dropout_mask).
        mask = None
        if self.training and self.dropout > 0:
            mask = torch.bernoulli(packed.new_full((s, self.hidden_dim), 1 - self.dropout)) / (
                1 - self.dropout
            )
        logits, labels = [], []
        cell = self.decoder_cell
        if DECODER_INPUT_ONCE:
            # the input projection of [row, previous label's embedding] split by columns: the rows' part for
            # every step in one product (and one weight-gradient product), only the embedding's part per step
            d = packed.shape[1]
            w = cell.input_linearity.weight
            packed_proj = F.linear(packed, w[:, :d], cell.input_linearity.bias)
            w_embed = w[:, d:].contiguous()  # sliced once: one gradient accumulator for all steps
        start = 0
        for (
            bs
        ) in layout.batch_sizes.tolist():  # sequences are sorted by length, so the active ones are a prefix
            h, c, prev_embed = h[:bs], c[:bs], prev_embed[:bs]
            if DECODER_INPUT_ONCE:
                px = packed_proj[start : start + bs] + F.linear(prev_embed, w_embed)
                h, c = cell.step(px, h, c)
            else:
                h, c = cell(torch.cat([packed[start : start + bs], prev_embed], 1), h, c)
            if mask is not None:
                h = h * mask[:bs]
            step_logits = self.decoder_out(h)
            step_labels = teacher_labels(
                step_logits, packed_gt[start : start + bs] if packed_gt is not None else None, self.training
            )
            prev_embed = self.decoder_embed(step_labels + 1)
            logits.append(step_logits)
            labels.append(step_labels)
            start += bs
        return layout.unpack(torch.cat(logits)), layout.unpack(torch.cat(labels))

    def encode_edges(
        self,
        state: tuple[SequenceLayout, Tensor],
        node_features: Tensor,
        object_context: Tensor,
        obj_labels: Tensor,
    ) -> Tensor:
        """The edge-context BiLSTM over [decoded-label embedding, visual feature, z^o]."""
        layout = state[0]
        if node_features.shape[0] == 0:
            return node_features.new_zeros(0, self.hidden_dim)
        edge_in = torch.cat([self.obj_embed2(obj_labels), node_features, object_context], 1)
        return self.lin_edge_h(layout.unpack(self.edge_ctx_rnn(layout.pack(edge_in))[0].data))
