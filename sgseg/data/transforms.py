"""Per-image transforms between the dataset loaders and collation.

Where this sits: ``VisualGenome`` / ``CocoInstances`` items (original-image pixels) → these transforms
(resize, horizontal flip) → :func:`sgseg.data.collate.collate` (padding into the flat batch layout of
``structures.py``). Everything here works on one item dict:

``image`` Uint8[3, H, W]; ``boxes`` Float[N, 4] xyxy in that image's pixels; ``labels`` Long[N];
optional ``relations`` Long[R, 3] (local subject, local object, predicate); optional ``masks`` UInt8[N, H, W].

Transforms never drop boxes or relations; they add ``orig_size`` (h, w before resizing) once.

Random draws (the training scale, the flip) come from ``rng``: the process-wide ``random`` module by default
(``augment_draws: global``), or a ``random.Random`` keyed on the item's (seed, stream, epoch, position) that
:class:`~sgseg.data.interleave.InterleavedLoader` hands to :class:`TransformedDataset` with the index
(``augment_draws: keyed``) — the same draws in any worker process, after any resumption, on any number of ranks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Item = dict[str, Any]


def flip_predicate_map(predicate_names: Sequence[str]) -> Tensor:
    """Long[C_rel]: how a horizontal flip rewrites each predicate, index 0 = background.

    predicate_names: the predicates in index order 1..C (a leading "__background__" is skipped).
    - A name with the word "left" whose mirror ("right" for "left") is also a predicate maps to the mirror,
      and back (e.g. "left of" ↔ "right of").
    - A left/right predicate whose mirror is *not* in the label space (the synthetic benchmark has "left of"
      but no "right of") stays itself, and the relation's subject and object are swapped instead
      ("A left of B" becomes "B left of A"): the value is stored negated (``-p``).
    - Every other predicate maps to itself. VG150 has no left/right predicate, so there it is the identity.
    """
    names = list(predicate_names)
    if names and names[0] == "__background__":
        names = names[1:]
    index = {n: i + 1 for i, n in enumerate(names)}
    out = torch.arange(len(names) + 1)
    for name, i in index.items():
        words = name.split()
        if "left" in words:
            mirror = " ".join("right" if w == "left" else w for w in words)
        elif "right" in words:
            mirror = " ".join("left" if w == "right" else w for w in words)
        else:
            continue
        out[i] = index.get(mirror, -i)
    return out


def _check_item(item: Item, where: str) -> None:
    img = item.get("image")
    if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"{where}: item['image'] must be a Uint8[3, H, W] tensor, got {type(img).__name__}")
    boxes = item["boxes"]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: item['boxes'] must be Float[N, 4], got {tuple(boxes.shape)}")


class Resize:
    """Resize so the shorter side is ``min_size`` (one drawn at random per call when a tuple is given) and the
    longer side at most ``max_size`` — the detection convention (multi-scale training with a tuple).

    Boxes are scaled by the same per-axis factors; masks use nearest-neighbour interpolation so they stay
    binary.
    """

    def __init__(self, min_size: int | Sequence[int], max_size: int) -> None:
        self.min_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not self.min_sizes or min(self.min_sizes) <= 0 or max_size <= 0:
            raise ValueError(f"Resize: min_size {min_size} and max_size {max_size} must be positive")
        self.max_size = max_size

    def target_size(self, h: int, w: int, min_size: int) -> tuple[int, int]:
        scale = min(min_size / min(h, w), self.max_size / max(h, w))
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, item: Item, rng: random.Random | None = None) -> Item:
        _check_item(item, "Resize")
        img = item["image"]
        h, w = img.shape[-2:]
        min_size = (rng or random).choice(self.min_sizes)
        nh, nw = self.target_size(h, w, min_size)
        out = dict(item)
        out.setdefault("orig_size", (h, w))
        if (nh, nw) == (h, w):
            return out
        out["image"] = (
            F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=item["boxes"].dtype)
        out["boxes"] = item["boxes"] * scale
        if item.get("masks") is not None and item["masks"].shape[0] > 0:
            out["masks"] = F.interpolate(item["masks"][None].float(), size=(nh, nw), mode="nearest")[0].to(
                torch.uint8
            )
        elif item.get("masks") is not None:
            out["masks"] = item["masks"].new_zeros((0, nh, nw))
        return out


class HorizontalFlip:
    """Flip with probability ``p``: image, boxes (x1' = W − x2, x2' = W − x1), masks, and left/right
    predicates through ``predicate_map`` (from :func:`flip_predicate_map`)."""

    def __init__(self, p: float = 0.5, predicate_map: Tensor | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"HorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p
        self.predicate_map = predicate_map

    def __call__(self, item: Item, rng: random.Random | None = None) -> Item:
        _check_item(item, "HorizontalFlip")
        if (rng or random).random() >= self.p:
            return item
        return hflip(item, self.predicate_map)


def hflip(item: Item, predicate_map: Tensor | None = None) -> Item:
    """Deterministic horizontal flip of one item (see :class:`HorizontalFlip`)."""
    out = dict(item)
    w = item["image"].shape[-1]
    out["image"] = item["image"].flip(-1)
    boxes = item["boxes"]
    out["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    if item.get("masks") is not None:
        out["masks"] = item["masks"].flip(-1)
    rels = item.get("relations")
    if rels is not None and predicate_map is not None and rels.shape[0] > 0:
        if int(rels[:, 2].max()) >= predicate_map.numel():
            raise ValueError(
                f"HorizontalFlip: predicate {int(rels[:, 2].max())} outside the flip map of "
                f"{predicate_map.numel()} predicates; build the map from the dataset's predicate names"
            )
        rels = rels.clone()
        mapped = predicate_map.to(rels.device)[rels[:, 2]]
        swap = mapped < 0  # a one-directional left/right predicate: swap its subject and object
        rels[swap] = rels[swap][:, [1, 0, 2]]
        rels[:, 2] = mapped.abs()
        out["relations"] = rels
    return out


class Compose:
    """Applies transforms in order; ``rng`` (when given) goes to every one of them."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: Item, rng: random.Random | None = None) -> Item:
        for t in self.transforms:
            item = t(item) if rng is None else t(item, rng=rng)
        return item


class TransformedDataset(torch.utils.data.Dataset):
    """Applies a transform to every item of a map-style dataset (keeps ``len``).

    Indexed by ``i`` the transform draws from the global ``random``; indexed by ``(i, key)`` (a keyed batch
    sampler, see :class:`~sgseg.data.interleave.InterleavedLoader`) it draws from ``random.Random(key)``, so the
    item's augmentation is a function of the key alone."""

    def __init__(self, dataset, transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int | tuple[int, str]) -> Item:
        if isinstance(i, tuple):
            index, key = i
            return self.transform(self.dataset[index], rng=random.Random(key))
        return self.transform(self.dataset[i])
