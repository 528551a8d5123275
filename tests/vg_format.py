"""Test helper: write tiny Visual Genome datasets in the exact files of the VG150 preprocessing.

The loaders under test read the real formats, so tests build small copies of them: ``VG-SGG-with-attri.h5``
(split, img_to_* ranges, labels, boxes_1024/512 in centre format, global relationships, predicates,
attributes), the dicts json (built-in VG150 names), ``image_data.json`` (with the four corrupt ids of the
real release interleaved, which the loader must drop) and solid-colour JPEGs under ``VG_100K/``.

Boxes given as ``boxes_xyxy`` (0-based original-image pixels) are encoded like the preprocessing's
``encode_box`` (IMP ``vg_to_imdb``): region x = x1 + 1 (VG is 1-indexed), ``x = floor(s·(x - 1))``,
``w = ceil(s·w)``, clamps, then centre ``cx = x + floor(w / 2)``, with s = 1024 / max(W, H).
``boxes_1024`` rows (cx, cy, w, h) can be given instead to test the decoding on exact numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from sgseg.data.label_spaces import VG150_OBJECT_CLASSES, VG150_PREDICATES
from sgseg.data.visual_genome import CORRUPT_IMAGE_IDS

CORRUPT_IDS = tuple(sorted(CORRUPT_IMAGE_IDS))  # in the order the real image_data.json lists them


def encode_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int, size: int = 1024) -> list:
    """One xyxy box (0-based pixels) → (cx, cy, w, h) at a longer side of ``size``, as the preprocessing."""
    scale = size / max(width, height)
    x, y = math.floor(scale * x1), math.floor(scale * y1)
    w, h = math.ceil(scale * (x2 - x1)), math.ceil(scale * (y2 - y1))
    x, y = max(x, 0), max(y, 0)
    x, y = min(x, size - 2), min(y, size - 2)
    if x + w >= size:
        w = size - x
    if y + h >= size:
        h = size - y
    return [x + w // 2, y + h // 2, w, h]


def write_dicts(
    path: Path, objects: Sequence[str] = VG150_OBJECT_CLASSES, predicates=VG150_PREDICATES
) -> None:
    """A dicts json with the keys of ``VG-SGG-dicts-with-attri.json`` (string indices, 1-based)."""
    info = {
        "label_to_idx": {n: i for i, n in enumerate(objects, 1)},
        "idx_to_label": {str(i): n for i, n in enumerate(objects, 1)},
        "predicate_to_idx": {n: i for i, n in enumerate(predicates, 1)},
        "idx_to_predicate": {str(i): n for i, n in enumerate(predicates, 1)},
        "attribute_to_idx": {"white": 1},
        "idx_to_attribute": {"1": "white"},
        "object_count": {n: 1 for n in objects},
        "predicate_count": {n: 1 for n in predicates},
    }
    path.write_text(json.dumps(info))


def write_vg_dataset(
    root: str | Path,
    images: Sequence[dict],
    *,
    h5_name: str = "VG-SGG-with-attri.h5",
    image_dir: str = "VG_100K",
    write_images: bool = True,
    insert_corrupt_ids: bool = True,
    first_image_id: int = 1,
) -> dict:
    """Write a VG-format dataset under ``root``; returns ``{"image_ids": [...], "h5": Path}``.

    images: one dict per h5 row with ``width``, ``height``, ``labels`` (1..150), ``boxes_xyxy`` (original
    pixels) or ``boxes_1024`` ((cx, cy, w, h) rows), optional ``relations`` [(s, o, predicate)] with local
    indices, ``split`` (0 train, 2 test; default 0), ``image_id`` (default: consecutive, skipping the corrupt
    ids). An image with no labels gets ``img_to_first_box = -1``; no relations, ``img_to_first_rel = -1``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = len(images)
    split = np.zeros(n, dtype=np.int32)
    first_box = np.full(n, -1, dtype=np.int32)
    last_box = np.full(n, -1, dtype=np.int32)
    first_rel = np.full(n, -1, dtype=np.int32)
    last_rel = np.full(n, -1, dtype=np.int32)
    labels, boxes1024, boxes512, rels, preds = [], [], [], [], []
    image_ids: list[int] = []
    next_id = first_image_id
    for i, im in enumerate(images):
        image_id = im.get("image_id")
        if image_id is None:
            while next_id in CORRUPT_IDS:
                next_id += 1
            image_id = next_id
            next_id += 1
        image_ids.append(int(image_id))
        split[i] = im.get("split", 0)
        w, h = im["width"], im["height"]
        lab = list(im["labels"])
        if "boxes_1024" in im:
            b1024 = [list(b) for b in im["boxes_1024"]]
            b512 = [[v // 2 for v in b] for b in b1024]
        else:
            b1024 = [encode_box(*b, w, h, 1024) for b in im["boxes_xyxy"]]
            b512 = [encode_box(*b, w, h, 512) for b in im["boxes_xyxy"]]
        assert len(b1024) == len(lab), "one box per label"
        if lab:
            first_box[i] = len(labels)
            last_box[i] = len(labels) + len(lab) - 1
        base = len(labels)
        labels += lab
        boxes1024 += b1024
        boxes512 += b512
        r = list(im.get("relations", []))
        if r:
            first_rel[i] = len(rels)
            last_rel[i] = len(rels) + len(r) - 1
        for s, o, p in r:
            rels.append([base + s, base + o])
            preds.append(p)
    with h5py.File(root / h5_name, "w") as f:
        f["split"] = split
        f["img_to_first_box"] = first_box
        f["img_to_last_box"] = last_box
        f["img_to_first_rel"] = first_rel
        f["img_to_last_rel"] = last_rel
        f["labels"] = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
        f["boxes_1024"] = np.asarray(boxes1024, dtype=np.int32).reshape(-1, 4)
        f["boxes_512"] = np.asarray(boxes512, dtype=np.int32).reshape(-1, 4)
        f["attributes"] = np.zeros((len(labels), 10), dtype=np.int64)
        f["relationships"] = np.asarray(rels, dtype=np.int32).reshape(-1, 2)
        f["predicates"] = np.asarray(preds, dtype=np.int64).reshape(-1, 1)
    write_dicts(root / "VG-SGG-dicts-with-attri.json")
    records = [
        {"image_id": iid, "width": im["width"], "height": im["height"], "coco_id": None, "url": f"{iid}.jpg"}
        for iid, im in zip(image_ids, images)
    ]
    if insert_corrupt_ids:
        # The real file lists the corrupt ids among the others; interleave them so alignment is tested.
        for k, cid in enumerate(CORRUPT_IDS):
            records.insert(min(len(records), 2 * k + 1), {"image_id": cid, "width": 10, "height": 10})
    (root / "image_data.json").write_text(json.dumps(records))
    if write_images:
        (root / image_dir).mkdir(exist_ok=True)
        for iid, im in zip(image_ids, images):
            colour = ((37 * iid) % 256, (91 * iid) % 256, (53 * iid) % 256)
            Image.new("RGB", (im["width"], im["height"]), colour).save(root / image_dir / f"{iid}.jpg")
    return {"image_ids": image_ids, "h5": root / h5_name}
