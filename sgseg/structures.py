"""Typed containers that cross stage boundaries, and the one dimension glossary of the project.

Where this sits: every stage (data → detector → masks → grounding → context → relation → evaluation)
hands one of these dataclasses to the next. They hold *flat batch tensors* plus an ``image_index`` — never
lists of per-image tensors — and only split per image at the evaluation boundary
(:meth:`RelationPredictions.per_image`).

Dimension glossary (used in every docstring of the project)
-----------------------------------------------------------
``B``      images in the batch
``N``      objects (boxes) in the whole batch
``R``      relation pairs (ordered subject/object pairs) in the whole batch
``C_obj``  VG object logits = 151 (index 0 = background)
``C_coco`` COCO object logits = 81 (index 0 = background); 80 mask channels (no background)
``C_rel``  predicate logits = 51 (index 0 = background / no relation)
``C_vg``   VG mask channels = 150 (no background)
``D``      feature channels
``M``      mask side in box-relative frames (28)
``H, W``   padded image size of the batch (all images of a batch share this frame)

Frames: ``boxes`` are xyxy in *resized-image* pixels unless a docstring says otherwise; box-relative
masks (``M × M``) cover their box exactly, as in Mask R-CNN.

Shape checks in ``__post_init__`` are cheap (no data-dependent syncs): they compare ``.shape`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from sgseg.ops.boxes import local_index


def _check(cond: bool, cls: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{cls}: {msg}")


def _check_len(cls: str, n: int, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None:
            _check(
                t.shape[0] == n, cls, f"`{name}` has {t.shape[0]} rows, expected {n} (one per row of boxes)"
            )


def _check_boxes(cls: str, name: str, boxes: Tensor) -> None:
    _check(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        cls,
        f"`{name}` must be Float[N, 4], got {tuple(boxes.shape)}",
    )


class _Movable:
    """``.to(device)`` for every tensor field of a dataclass."""

    def to(self, device: torch.device | str):
        changes = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                changes[f.name] = v.to(device)
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass
class ImageBatch(_Movable):
    """Images of a batch, padded into one frame.

    tensors: Float[B, 3, H, W] normalised images, zero-padded at the bottom/right.
    image_sizes: Long[B, 2] (h, w) of each image inside the padded frame (after resize, before padding).
    original_sizes: Long[B, 2] (h, w) of each image as stored on disk (to map boxes back for evaluation).
    image_ids: Long[B] dataset image ids.
    """

    tensors: Tensor
    image_sizes: Tensor
    original_sizes: Tensor
    image_ids: Tensor

    def __post_init__(self) -> None:
        c = "ImageBatch"
        _check(
            self.tensors.dim() == 4,
            c,
            f"`tensors` must be Float[B, 3, H, W], got {tuple(self.tensors.shape)}",
        )
        b = self.tensors.shape[0]
        _check(tuple(self.image_sizes.shape) == (b, 2), c, "`image_sizes` must be Long[B, 2]")
        _check(tuple(self.original_sizes.shape) == (b, 2), c, "`original_sizes` must be Long[B, 2]")
        _check(tuple(self.image_ids.shape) == (b,), c, "`image_ids` must be Long[B]")

    @property
    def num_images(self) -> int:
        return self.tensors.shape[0]


@dataclass
class Targets(_Movable):
    """Ground truth of a batch, for VG (boxes + scene graphs) and COCO (boxes + masks) alike.

    boxes: Float[N, 4] xyxy, resized-image pixels.
    labels: Long[N] in 1..C (150 for VG, 80 for COCO).
    image_index: Long[N] in 0..B-1, which image each box belongs to (non-decreasing).
    relations: Long[R, 3] rows (subject, object, predicate 1..50); subject/object are *flat* indices into
        ``boxes`` (both in the same image). Empty (0, 3) for COCO.
    masks: optional UInt8[N, H, W] instance masks in the padded batch frame (COCO only).
    """

    boxes: Tensor
    labels: Tensor
    image_index: Tensor
    relations: Tensor
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        c = "Targets"
        _check_boxes(c, "boxes", self.boxes)
        n = self.boxes.shape[0]
        _check_len(c, n, labels=self.labels, image_index=self.image_index, masks=self.masks)
        _check(
            self.relations.dim() == 2 and self.relations.shape[1] == 3,
            c,
            f"`relations` must be Long[R, 3], got {tuple(self.relations.shape)}",
        )
        if self.masks is not None:
            _check(self.masks.dim() == 3, c, f"`masks` must be UInt8[N, H, W], got {tuple(self.masks.shape)}")

    @property
    def rel_image_index(self) -> Tensor:
        """Long[R]: image of each relation (that of its subject)."""
        return self.image_index[self.relations[:, 0]]


@dataclass
class Detections(_Movable):
    """Boxes with VG label distributions and RoI features, from the detector (or GT boxes pushed through it).

    boxes: Float[N, 4] xyxy, resized-image pixels.
    image_index: Long[N].
    label_logits: Float[N, C_obj] VG logits (151, index 0 background).
    labels: Long[N] in 1..150 (argmax over foreground, or the GT label in PredCls).
    scores: Float[N] object scores in [0, 1] (softmax prob of ``labels``; 1 for GT labels in PredCls).
    box_features: Float[N, D] the box head's output (the paper's z_j before grounding).
    class_boxes: optional Float[N, C_obj, 4] the class-specific box regression of each detection, one box per
        class (SGDet detections only; the SGDet post-processing takes the box of the final label).
    """

    boxes: Tensor
    image_index: Tensor
    label_logits: Tensor
    labels: Tensor
    scores: Tensor
    box_features: Tensor
    class_boxes: Tensor | None = None

    def __post_init__(self) -> None:
        c = "Detections"
        _check_boxes(c, "boxes", self.boxes)
        n = self.boxes.shape[0]
        _check_len(
            c,
            n,
            image_index=self.image_index,
            label_logits=self.label_logits,
            labels=self.labels,
            scores=self.scores,
            box_features=self.box_features,
            class_boxes=self.class_boxes,
        )
        _check(self.label_logits.dim() == 2, c, "`label_logits` must be Float[N, C_obj]")
        _check(self.box_features.dim() == 2, c, "`box_features` must be Float[N, D]")
        if self.class_boxes is not None:
            _check(
                self.class_boxes.shape[1:] == (self.label_logits.shape[1], 4),
                c,
                f"`class_boxes` must be Float[N, C_obj, 4], got {tuple(self.class_boxes.shape)}",
            )

    def __len__(self) -> int:
        return self.boxes.shape[0]


@dataclass
class InstanceMasks(_Movable):
    """Box-relative mask logits for a set of boxes.

    logits: Float[N, C, M, M] (C = 80 COCO channels from the detector, or C_vg = 150 after transfer).
    boxes: Float[N, 4] the boxes the M × M grids cover (xyxy, resized-image pixels).
    image_index: Long[N].
    """

    logits: Tensor
    boxes: Tensor
    image_index: Tensor

    def __post_init__(self) -> None:
        c = "InstanceMasks"
        _check(
            self.logits.dim() == 4 and self.logits.shape[-1] == self.logits.shape[-2],
            c,
            f"`logits` must be Float[N, C, M, M], got {tuple(self.logits.shape)}",
        )
        _check_boxes(c, "boxes", self.boxes)
        _check_len(c, self.logits.shape[0], boxes=self.boxes, image_index=self.image_index)

    @property
    def probs(self) -> Tensor:
        return self.logits.sigmoid()


@dataclass
class RelationPredictions(_Movable):
    """Scene-graph predictions of a batch, in the evaluator's vocabulary.

    boxes: Float[N, 4] object boxes, xyxy, resized-image pixels.
    image_index: Long[N].
    labels: Long[N] predicted object labels 1..150; scores: Float[N] object scores.
    obj_logits: Float[N, C_obj] object logits (for the object loss in SGCls/SGDet).
    pair_index: Long[R, 2] flat (subject, object) indices into the objects, both in one image.
    rel_logits: Float[R, C_rel] predicate logits (index 0 = background).
    """

    boxes: Tensor
    image_index: Tensor
    labels: Tensor
    scores: Tensor
    obj_logits: Tensor
    pair_index: Tensor
    rel_logits: Tensor

    def __post_init__(self) -> None:
        c = "RelationPredictions"
        _check_boxes(c, "boxes", self.boxes)
        n = self.boxes.shape[0]
        _check_len(
            c,
            n,
            image_index=self.image_index,
            labels=self.labels,
            scores=self.scores,
            obj_logits=self.obj_logits,
        )
        _check(
            self.pair_index.dim() == 2 and self.pair_index.shape[1] == 2,
            c,
            f"`pair_index` must be Long[R, 2], got {tuple(self.pair_index.shape)}",
        )
        _check(self.rel_logits.dim() == 2, c, "`rel_logits` must be Float[R, C_rel]")
        _check_len(c, self.pair_index.shape[0], rel_logits=self.rel_logits)

    @property
    def rel_image_index(self) -> Tensor:
        return self.image_index[self.pair_index[:, 0]]

    def per_image(self, num_images: int) -> list[dict[str, Tensor]]:
        """Split into the evaluator's per-image dicts, rows ranked as the protocol expects.

        Each dict has ``boxes``, ``labels``, ``scores``, ``rel_pairs`` (indices local to the image) and
        ``rel_scores`` (softmax over C_rel), rows sorted by descending
        ``max_{c>=1} rel_scores[c] · scores[subject] · scores[object]``.
        Boxes stay in this object's frame (map them with :func:`sgseg.ops.boxes.boxes_to_original` first).
        """
        out = []
        rel_probs = self.rel_logits.softmax(-1)
        rel_img = self.rel_image_index
        for b in range(num_images):
            obj = (self.image_index == b).nonzero().flatten()
            local = local_index(obj, self.boxes.shape[0])
            rows = (rel_img == b).nonzero().flatten()
            pairs = local[self.pair_index[rows]]
            probs = rel_probs[rows]
            scores = self.scores[obj]
            boxes = self.boxes[obj]
            rank = probs[:, 1:].max(1).values * scores[pairs[:, 0]] * scores[pairs[:, 1]]
            order = rank.argsort(descending=True, stable=True)
            out.append(
                {
                    "boxes": boxes,
                    "labels": self.labels[obj],
                    "scores": scores,
                    "rel_pairs": pairs[order],
                    "rel_scores": probs[order],
                }
            )
        return out
