"""Which object pairs the relation predictor scores, and with which target predicate.

Where this sits: stage 2, between the context encoder's inputs (boxes of the batch) and edge grounding (which
computes union features only for the chosen pairs). Training samples foreground pairs (label 1..C_rel-1) and
background pairs (label 0) per image under a budget (reference ``RelationSampling``); testing scores every
ordered pair (:func:`all_pairs`), in SGDet only the overlapping ones (:func:`overlapping_pairs`). Everything
is vectorised over the flat batch: no Python loop over images.

Budgets: the reference config samples ``pairs_per_image = 64`` with ``positive_fraction = 0.25`` (≤ 16
foreground pairs per image); "up to 256 foreground pairs" corresponds to ``pairs_per_image = 1024``. SGDet
training keeps only overlapping proposal pairs as background by default (reference ``REQUIRE_BOX_OVERLAP``).

Conventions: ``pair_index`` rows are flat (subject, object) indices, both in one image; results are ordered by
image, foreground before background inside an image. Randomness comes from ``generator`` (a CPU
``torch.Generator``) so a seeded run samples the same pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgseg.ops.boxes import box_iou, paired_box_iou


def _lexsort(primary: Tensor, secondary: Tensor) -> Tensor:
    order = torch.argsort(secondary, stable=True)
    return order[torch.argsort(primary[order], stable=True)]


def _rank_in_group(group: Tensor, key: Tensor) -> Tensor:
    """Long[M]: rank of each element among those of its group, by ascending ``key`` (ties: input order)."""
    m = group.numel()
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=group.device)
    order = _lexsort(group, key)
    g = group[order]
    idx = torch.arange(m, device=group.device)
    is_start = torch.ones(m, dtype=torch.bool, device=group.device)
    is_start[1:] = g[1:] != g[:-1]
    run_start = torch.cummax(torch.where(is_start, idx, 0), 0).values
    rank = torch.empty_like(idx)
    rank[order] = idx - run_start
    return rank


def _group_product(group_a: Tensor, group_b: Tensor) -> tuple[Tensor, Tensor]:
    """All index pairs (a, b) with ``group_a[a] == group_b[b]``, ordered by a, then by b. Groups are ≥ 0."""
    device = group_a.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if group_a.numel() == 0 or group_b.numel() == 0:
        return empty, empty
    num_groups = int(torch.maximum(group_a.max(), group_b.max())) + 1
    ob = torch.argsort(group_b, stable=True)
    count_b = torch.bincount(group_b, minlength=num_groups)
    start_b = torch.cumsum(count_b, 0) - count_b
    reps = count_b[group_a]
    ia = torch.repeat_interleave(torch.arange(group_a.numel(), device=device), reps)
    offsets = torch.arange(ia.numel(), device=device) - torch.repeat_interleave(
        torch.cumsum(reps, 0) - reps, reps
    )
    ib = ob[start_b[group_a[ia]] + offsets]
    return ia, ib


def all_pairs(image_index: Tensor) -> Tensor:
    """Long[R, 2] every ordered pair (i, j), i ≠ j, of objects in the same image; rows sorted by (i, j).

    image_index: Long[N]. An image with 0 or 1 object contributes no row.
    """
    ia, ib = _group_product(image_index, image_index)
    keep = ia != ib
    return torch.stack([ia[keep], ib[keep]], 1)


def overlapping_pairs(boxes: Tensor, image_index: Tensor) -> Tensor:
    """Long[R, 2] the ordered pairs (i, j), i ≠ j, of the same image whose boxes overlap (IoU > 0), by (i, j).

    The SGDet test candidates of paper Sec. 3.3 ("we filter pairs of objects that do not have any bounding box
    overlap") and of the reference's ``TEST.RELATION.REQUIRE_OVERLAP`` (``prepare_test_pairs``: pairwise IoU
    > 0 of the detected boxes). Boxes that only touch (zero-area intersection) do not overlap, as there.
    boxes: Float[N, 4] xyxy; image_index: Long[N]. Memory O(Σ_b N_b²) (pairs inside images), never O(N²).
    """
    pairs = all_pairs(image_index)
    if pairs.shape[0] == 0:
        return pairs
    a, b = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    iw = torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])
    ih = torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])
    return pairs[(iw > 0) & (ih > 0)]


def _rand(m: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(m, generator=generator).to(device)


def _dedup_relations(relations: Tensor, num_objects: int, generator: torch.Generator | None) -> Tensor:
    """One row per (subject, object) pair; for a pair with several predicates, a uniformly random one."""
    if relations.shape[0] == 0:
        return relations
    perm = torch.randperm(relations.shape[0], generator=generator).to(relations.device)
    rel = relations[perm]
    key = rel[:, 0] * num_objects + rel[:, 1]
    order = torch.argsort(key, stable=True)
    k = key[order]
    first = torch.ones_like(k, dtype=torch.bool)
    first[1:] = k[1:] != k[:-1]
    return rel[order[first]]


def _assemble(
    fg_pairs: Tensor,
    fg_labels: Tensor,
    bg_candidates: Tensor,
    image_index: Tensor,
    pairs_per_image: int,
    num_fg_max: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Cap foreground at ``num_fg_max`` per image (random subset), fill up to ``pairs_per_image`` with random
    background candidates, order by image with foreground first."""
    device = image_index.device
    num_images = int(image_index.max()) + 1 if image_index.numel() else 1
    fg_img = image_index[fg_pairs[:, 0]]
    fg_rank = _rank_in_group(fg_img, _rand(fg_img.numel(), generator, device))
    keep = fg_rank < num_fg_max
    fg_pairs, fg_labels, fg_img, fg_rank = fg_pairs[keep], fg_labels[keep], fg_img[keep], fg_rank[keep]
    bg_budget = pairs_per_image - torch.bincount(fg_img, minlength=num_images)
    bg_img = image_index[bg_candidates[:, 0]]
    bg_rank = _rank_in_group(bg_img, _rand(bg_img.numel(), generator, device))
    keep = bg_rank < bg_budget[bg_img]
    bg_pairs, bg_img, bg_rank = bg_candidates[keep], bg_img[keep], bg_rank[keep]
    pairs = torch.cat([fg_pairs, bg_pairs])
    labels = torch.cat([fg_labels, torch.zeros(bg_pairs.shape[0], dtype=torch.long, device=device)])
    img = torch.cat([fg_img, bg_img])
    big = pairs_per_image + fg_img.numel() + 1
    within = torch.cat([fg_rank, bg_rank + big])  # foreground before background
    order = _lexsort(img, within)
    return pairs[order].reshape(-1, 2), labels[order]


def sample_gt_pairs(
    gt_relations: Tensor,
    image_index: Tensor,
    pairs_per_image: int = 64,
    positive_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Training pairs for the GT-box modes (PredCls, SGCls): reference ``gtbox_relsample``.

    Foreground: the GT related pairs (one predicate per pair: a random one among duplicates), at most
    ``int(pairs_per_image · positive_fraction)`` per image (a random subset). Background (label 0): ordered
    pairs i ≠ j of the image that carry no GT relation, a random subset filling the image up to
    ``pairs_per_image``.

    gt_relations: Long[R, 3] (subject, object, predicate ≥ 1), flat indices into the GT boxes; image_index:
    Long[N] of the GT boxes. Returns pair_index Long[R', 2] and rel_labels Long[R'].
    """
    n = image_index.numel()
    rel = _dedup_relations(gt_relations.reshape(-1, 3).long(), n, generator)
    candidates = all_pairs(image_index)
    gt_keys = rel[:, 0] * n + rel[:, 1]
    bg = candidates[~torch.isin(candidates[:, 0] * n + candidates[:, 1], gt_keys)]
    return _assemble(
        rel[:, :2],
        rel[:, 2],
        bg,
        image_index,
        pairs_per_image,
        int(pairs_per_image * positive_fraction),
        generator,
    )


def sample_sgdet_pairs(
    det_boxes: Tensor,
    det_labels: Tensor,
    det_image_index: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_image_index: Tensor,
    gt_relations: Tensor,
    iou_threshold: float = 0.5,
    max_pairs_per_rel: int = 4,
    pairs_per_image: int = 64,
    positive_fraction: float = 0.25,
    require_overlap: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Training pairs for SGDet: reference ``detect_relsample`` (neural-motifs ``rel_assignments``).

    A proposal matches a GT box of its image when the labels agree and IoU ≥ ``iou_threshold``. For each GT
    relation (deduplicated as in :func:`sample_gt_pairs`), every ordered pair of distinct proposals matching its
    subject and object is a candidate with that predicate; at most ``max_pairs_per_rel`` of them are kept, drawn
    without replacement with probability ∝ IoU(subject) · IoU(object). Foreground is then capped per image as
    in :func:`sample_gt_pairs`. Background: ordered pairs of proposals with label > 0 (and, with
    ``require_overlap``, overlapping boxes that are not identical) that are no foreground candidate.

    det_boxes: Float[P, 4] xyxy; det_labels: Long[P] (0 = background proposal; the reference uses the labels the
    box head assigned from GT); det_image_index: Long[P]; gt_boxes: Float[G, 4]; gt_labels: Long[G];
    gt_image_index: Long[G]; gt_relations: Long[R, 3] flat into the GT boxes. IoU in continuous pixels.
    Returns pair_index Long[R', 2] into the proposals and rel_labels Long[R'].
    """
    device = det_boxes.device
    p = det_boxes.shape[0]
    rel = _dedup_relations(gt_relations.reshape(-1, 3).long(), gt_labels.numel(), generator)
    ious = box_iou(gt_boxes, det_boxes)  # [G, P]
    is_match = (
        (gt_labels[:, None] == det_labels[None, :])
        & (det_labels[None, :] > 0)
        & (gt_image_index[:, None] == det_image_index[None, :])
        & (ious >= iou_threshold)
    )
    # candidate foreground triplets: (relation r, subject proposal h, object proposal t)
    r_h, h = is_match[rel[:, 0]].nonzero(as_tuple=True)
    r_t, t = is_match[rel[:, 1]].nonzero(as_tuple=True)
    ia, ib = _group_product(r_h, r_t)
    r, h, t = r_h[ia], h[ia], t[ib]
    keep = h != t
    r, h, t = r[keep], h[keep], t[keep]
    weight = ious[rel[r, 0], h] * ious[rel[r, 1], t]
    # Exponential race: the k smallest Exp(1)/w are a weighted draw without replacement (same law as
    # numpy's choice(p=w/Σw, replace=False) used by the reference).
    race = -torch.log(_rand(r.numel(), generator, device).clamp(min=1e-12)) / weight.clamp(min=1e-12)
    picked = _rank_in_group(r, race) < max_pairs_per_rel
    fg_pairs = torch.stack([h, t], 1)
    fg_keys = h * p + t  # every candidate leaves the background pool, picked or not (reference)
    fg_pairs, fg_labels = fg_pairs[picked], rel[r[picked], 2]

    candidates = all_pairs(det_image_index)
    ci, cj = candidates[:, 0], candidates[:, 1]
    ok = (det_labels[ci] > 0) & (det_labels[cj] > 0) & ~torch.isin(ci * p + cj, fg_keys)
    if require_overlap:
        pair_iou = paired_box_iou(det_boxes[ci], det_boxes[cj])
        ok &= (pair_iou > 0) & (pair_iou < 1)
    return _assemble(
        fg_pairs,
        fg_labels,
        candidates[ok],
        det_image_index,
        pairs_per_image,
        int(pairs_per_image * positive_fraction),
        generator,
    )
