"""Frequency bias: a trainable log p(predicate | subject class, object class) table (MOTIF's FREQ baseline).

Where this sits: stage 2, inside :class:`sgseg.models.relation.predictor.RelationPredictor`, which adds the row
of the (subject label, object label) pair to its relation logits. The table is initialised from train-split
statistics computed elsewhere (``sgseg.data.statistics``) and passed in as tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def log_predicate_distribution(
    fg_matrix: Tensor, bg_matrix: Tensor | None = None, eps: float = 1e-3
) -> Tensor:
    """Float[C_obj, C_obj, C_rel]: log(p(predicate | subject class, object class) + eps), as the reference.

    fg_matrix: Long[C_obj, C_obj, C_rel] train counts of (subject label, object label, predicate);
    bg_matrix: Long[C_obj, C_obj] counts of label pairs that could have had a relation (reference: overlapping
    GT box pairs) or None (= zeros). The reference adds 1 to ``bg_matrix`` (so a never-seen pair gets a uniform-ish
    row instead of 0/0), writes it into the background column 0, normalises over predicates and takes
    ``log(p + eps)``.
    """
    if fg_matrix.dim() != 3 or fg_matrix.shape[0] != fg_matrix.shape[1]:
        raise ValueError(f"fg_matrix must be Long[C_obj, C_obj, C_rel], got {tuple(fg_matrix.shape)}")
    fg = fg_matrix.double().clone()
    bg = torch.zeros(fg.shape[:2], dtype=torch.float64) if bg_matrix is None else bg_matrix.double()
    if bg.shape != fg.shape[:2]:
        raise ValueError(
            f"bg_matrix must be Long[C_obj, C_obj] = {tuple(fg.shape[:2])}, got {tuple(bg.shape)}"
        )
    fg[:, :, 0] = bg + 1
    return torch.log(fg / fg.sum(2, keepdim=True) + eps).float()


class FrequencyBias(nn.Module):
    """Trainable embedding of C_obj · C_obj rows of C_rel predicate logits, indexed by (subject, object) label.

    Build it with :meth:`from_statistics` to start from the train statistics; the plain constructor starts
    from zeros (no prior).
    """

    def __init__(self, num_obj_classes: int, num_predicates: int) -> None:
        super().__init__()
        self.num_obj_classes = num_obj_classes
        self.num_predicates = num_predicates
        self.obj_baseline = nn.Embedding(num_obj_classes * num_obj_classes, num_predicates)
        nn.init.zeros_(self.obj_baseline.weight)

    @classmethod
    def from_statistics(
        cls, fg_matrix: Tensor, bg_matrix: Tensor | None = None, eps: float = 1e-3
    ) -> FrequencyBias:
        """Initialised with :func:`log_predicate_distribution` (fg_matrix Long[C_obj, C_obj, C_rel])."""
        table = log_predicate_distribution(fg_matrix, bg_matrix, eps)
        c_obj, _, c_rel = table.shape
        module = cls(c_obj, c_rel)
        with torch.no_grad():
            module.obj_baseline.weight.copy_(table.reshape(c_obj * c_obj, c_rel))
        return module

    def forward(self, subject_labels: Tensor, object_labels: Tensor) -> Tensor:
        """subject_labels, object_labels: Long[R] in 0..C_obj-1 → Float[R, C_rel] bias logits."""
        return self.obj_baseline(subject_labels * self.num_obj_classes + object_labels)

    def index_with_probability(self, subject_probs: Tensor, object_probs: Tensor) -> Tensor:
        """Expected bias under soft labels: Float[R, C_obj] × Float[R, C_obj] → Float[R, C_rel]."""
        joint = subject_probs[:, :, None] * object_probs[:, None, :]
        return joint.flatten(1) @ self.obj_baseline.weight
