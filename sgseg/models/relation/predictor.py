"""Relation predictor shared by MOTIF and VCTree: edge context + union features + frequency bias → predicates.

Where this sits: stage 2, after the context encoder (:mod:`sgseg.models.context`) and edge grounding. For every
sampled pair (s, o) it projects the subject's edge context to a "head" and the object's to a "tail" vector,
fuses [head_s ‖ tail_o] to the pooling width, multiplies it elementwise with the (projected) union-box feature
of the pair — ẑ_{s,o} from edge grounding, or the plain union RoI feature for the baseline — and classifies.
The frequency bias row of (label_s, label_o) is added to the logits (reference ``MotifPredictor`` /
``VCTreePredictor``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.relation.frequency import FrequencyBias


class RelationPredictor(nn.Module):
    """Pairwise predicate classifier.

    edge_dim: H of the context's ``edge_context``; union_dim: D_edge of the pair features; pooling_dim: fusion
    width (reference 4096; a Linear maps union features to it when union_dim differs); num_obj_classes: C_obj;
    num_predicates: C_rel; freq_bias: a :class:`FrequencyBias` (None: no bias); project_relu: ReLU after the
    head/tail projection (the reference VCTree predictor has it, MOTIF's has not).
    """

    def __init__(
        self,
        edge_dim: int,
        union_dim: int,
        pooling_dim: int,
        num_obj_classes: int,
        num_predicates: int,
        freq_bias: FrequencyBias | None = None,
        project_relu: bool = False,
    ) -> None:
        super().__init__()
        if freq_bias is not None and (
            freq_bias.num_obj_classes != num_obj_classes or freq_bias.num_predicates != num_predicates
        ):
            raise ValueError(
                f"freq_bias is for {freq_bias.num_obj_classes} object / {freq_bias.num_predicates} predicate "
                f"classes but the predictor for {num_obj_classes} / {num_predicates}; build both from the same data"
            )
        self.edge_dim = edge_dim
        self.num_obj_classes = num_obj_classes
        self.num_predicates = num_predicates
        self.project_relu = project_relu
        self.post_emb = nn.Linear(edge_dim, 2 * edge_dim)
        self.post_cat = nn.Linear(2 * edge_dim, pooling_dim)
        self.up_dim = nn.Linear(union_dim, pooling_dim) if union_dim != pooling_dim else nn.Identity()
        self.rel_compress = nn.Linear(pooling_dim, num_predicates)
        self.freq_bias = freq_bias
        # reference layer_init: a wide normal for the head/tail projection, xavier elsewhere, zero biases
        nn.init.normal_(self.post_emb.weight, std=10.0 * math.sqrt(1.0 / edge_dim))
        for lin in (self.post_emb, self.post_cat, self.rel_compress, self.up_dim):
            if isinstance(lin, nn.Linear):
                if lin is not self.post_emb:
                    nn.init.xavier_normal_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(
        self, edge_context: Tensor, pair_index: Tensor, union_features: Tensor, obj_labels: Tensor
    ) -> Tensor:
        """edge_context: Float[N, H]; pair_index: Long[R, 2] flat (subject, object); union_features:
        Float[R, D_edge]; obj_labels: Long[N] (the context's ``obj_labels``). Returns rel_logits Float[R, C_rel]."""
        if pair_index.dim() != 2 or pair_index.shape[1] != 2:
            raise ValueError(f"pair_index must be Long[R, 2], got {tuple(pair_index.shape)}")
        if union_features.shape[0] != pair_index.shape[0]:
            raise ValueError(
                f"union_features has {union_features.shape[0]} rows but pair_index {pair_index.shape[0]}; compute "
                "the edge features for exactly the sampled pairs"
            )
        edge = self.post_emb(edge_context)
        if self.project_relu:
            edge = F.relu(edge)
        head, tail = edge[:, : self.edge_dim], edge[:, self.edge_dim :]
        s, o = pair_index[:, 0], pair_index[:, 1]
        fused = self.post_cat(torch.cat([head[s], tail[o]], 1)) * self.up_dim(union_features)
        rel_logits = self.rel_compress(fused)
        if self.freq_bias is not None:
            rel_logits = rel_logits + self.freq_bias(obj_labels[s], obj_labels[o])
        return rel_logits
