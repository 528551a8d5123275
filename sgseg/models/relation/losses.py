"""Stage-2 scene-graph losses (L_sg of paper Eq. 11): relation CE, object CE, VCTree tree-score BCE.

Where this sits: called by the stage-2 LightningModule on the outputs of the context encoder and the relation
predictor. Pure functions; every one returns a 0-d tensor connected to its input's graph even when there is
nothing to score (N = 0 objects or R = 0 pairs), so ``loss.backward()`` always works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def relation_loss(rel_logits: Tensor, rel_labels: Tensor) -> Tensor:
    """Mean cross-entropy over the sampled pairs. rel_logits: Float[R, C_rel]; rel_labels: Long[R] (0 = bg)."""
    if rel_logits.shape[0] == 0:
        return rel_logits.sum() * 0.0
    return F.cross_entropy(rel_logits, rel_labels)


def object_loss(obj_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the refined object logits. obj_logits: Float[N, C_obj]; labels: Long[N] (SGDet:
    label of the matched GT box, 0 = background)."""
    if obj_logits.shape[0] == 0:
        return obj_logits.sum() * 0.0
    return F.cross_entropy(obj_logits, labels)


def tree_score_targets(tree_pair_index: Tensor, positive_pairs: Tensor, num_objects: int) -> Tensor:
    """Float[P] symmetric GT adjacency of each scored pair: 1 if (i, j) or (j, i) is among ``positive_pairs``.

    tree_pair_index: Long[P, 2] flat indices; positive_pairs: Long[F, 2] related pairs (GT relations in
    GT-box modes, foreground-matched proposal pairs in SGDet); num_objects: N.
    """
    if tree_pair_index.shape[0] == 0 or positive_pairs.shape[0] == 0:
        return torch.zeros(tree_pair_index.shape[0], device=tree_pair_index.device)
    pos = positive_pairs.to(tree_pair_index.device)
    keys = torch.cat([pos[:, 0] * num_objects + pos[:, 1], pos[:, 1] * num_objects + pos[:, 0]])
    query = tree_pair_index[:, 0] * num_objects + tree_pair_index[:, 1]
    return torch.isin(query, keys).float()


def tree_score_loss(
    tree_logits: Tensor, tree_pair_index: Tensor, positive_pairs: Tensor, image_index: Tensor
) -> Tensor:
    """VCTree's pair-score BCE: per image the mean BCE-with-logits against the symmetric GT adjacency, then the
    mean over images that have at least one scored pair (the reference averages per image, then over images).

    tree_logits: Float[P]; tree_pair_index: Long[P, 2] (the context's ``tree_pair_index``); positive_pairs:
    Long[F, 2] related flat pairs; image_index: Long[N].
    """
    if tree_logits.shape[0] == 0:
        return tree_logits.sum() * 0.0
    target = tree_score_targets(tree_pair_index, positive_pairs, image_index.shape[0]).to(tree_logits.dtype)
    per_pair = F.binary_cross_entropy_with_logits(tree_logits, target, reduction="none")
    img = image_index[tree_pair_index[:, 0]]
    num_images = int(image_index.max()) + 1
    sums = tree_logits.new_zeros(num_images).index_add(0, img, per_pair)
    counts = torch.bincount(img, minlength=num_images).to(tree_logits.dtype)
    has = counts > 0
    return (sums[has] / counts[has]).mean()
