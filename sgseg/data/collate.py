"""Collation of transformed items into the flat batch layout of ``structures.py``.

Where this sits: dataset item dicts (after :mod:`sgseg.data.transforms`) → :func:`collate` →
``(ImageBatch, Targets)`` consumed by the detector and the scene-graph model.

- Images are converted to Float[0, 1], zero-padded at the bottom/right to a common frame whose sides are
  multiples of ``size_divisible`` (FPN strides).
- Boxes, labels and masks are concatenated over the batch with ``image_index``; relation subject/object
  indices are shifted from per-image to flat indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sgseg.structures import ImageBatch, Targets


def collate(items: Sequence[dict[str, Any]], size_divisible: int = 32) -> tuple[ImageBatch, Targets]:
    """Collate item dicts into ``(ImageBatch, Targets)``.

    Each item: ``image`` Uint8[3, h, w], ``boxes`` Float[n, 4] xyxy, ``labels`` Long[n], ``image_id`` int,
    optional ``relations`` Long[r, 3] (local indices), ``masks`` UInt8[n, h, w], ``orig_size`` (h0, w0).
    """
    if len(items) == 0:
        raise ValueError("collate: got an empty list of items")
    sizes = [tuple(it["image"].shape[-2:]) for it in items]
    hmax = max(s[0] for s in sizes)
    wmax = max(s[1] for s in sizes)
    hpad = int(math.ceil(hmax / size_divisible) * size_divisible)
    wpad = int(math.ceil(wmax / size_divisible) * size_divisible)
    images = torch.zeros((len(items), 3, hpad, wpad), dtype=torch.float32)
    has_masks = [it.get("masks") is not None for it in items]
    if any(has_masks) and not all(has_masks):
        raise ValueError("collate: some items carry `masks` and some do not; do not mix VG and COCO items")

    boxes, labels, image_index, relations, masks = [], [], [], [], []
    offset = 0
    for b, it in enumerate(items):
        h, w = sizes[b]
        images[b, :, :h, :w] = it["image"].float() / 255.0
        n = it["boxes"].shape[0]
        if it["labels"].shape[0] != n:
            raise ValueError(
                f"collate: image {it.get('image_id')}: {n} boxes but {it['labels'].shape[0]} labels"
            )
        boxes.append(it["boxes"].float())
        labels.append(it["labels"].long())
        image_index.append(torch.full((n,), b, dtype=torch.long))
        rels = it.get("relations")
        if rels is not None and rels.shape[0] > 0:
            if int(rels[:, :2].max()) >= n or int(rels[:, :2].min()) < 0:
                raise ValueError(
                    f"collate: image {it.get('image_id')}: relation refers to object "
                    f"{int(rels[:, :2].max())} but the image has {n} boxes"
                )
            rels = rels.long().clone()
            rels[:, :2] += offset
            relations.append(rels)
        if has_masks[b]:
            m = torch.zeros((n, hpad, wpad), dtype=torch.uint8)
            m[:, :h, :w] = it["masks"]
            masks.append(m)
        offset += n

    image_batch = ImageBatch(
        tensors=images,
        image_sizes=torch.tensor(sizes, dtype=torch.long),
        original_sizes=torch.tensor([tuple(it.get("orig_size", s)) for it, s in zip(items, sizes)]),
        image_ids=torch.tensor([int(it["image_id"]) for it in items], dtype=torch.long),
    )
    targets = Targets(
        boxes=torch.cat(boxes) if boxes else torch.zeros((0, 4)),
        labels=torch.cat(labels),
        image_index=torch.cat(image_index),
        relations=torch.cat(relations) if relations else torch.zeros((0, 3), dtype=torch.long),
        masks=torch.cat(masks) if all(has_masks) else None,
    )
    return image_batch, targets
