"""``preset=vg150_shapes``: a few dozen images in VG150's real label spaces and sizes, for shapes, memory, speed.

Where this sits: next to :mod:`sgseg.data.synthetic` (the learnable synthetic benchmark), for dry runs at real
scale (``scripts/bench_memory.py``), not for learning: the 150 VG150 object classes and 50 predicates under
their real names (so the loaders run with ``check_label_space=True``), the 80 COCO classes under their real
category ids (1..90 with gaps), images of 592–1000 px per side and 10–60 objects per image, written in the
real on-disk formats (``docs/data.md``) and read by the real loaders. Objects are flat coloured rectangles and
ellipses (one colour per class); relations pair objects at random — mostly overlapping pairs, so the
reference's ``FILTER_NON_OVERLAP`` keeps most — with a long-tailed predicate distribution.

Objects per image: 10 + a geometric tail (mean about 20, as VG150's long tail beyond its ~12 median; at most
60). The first two test images hold 60 and 45 objects, so the test protocol's 40-box filter always has
something to drop.

Usage: ``python -m sgseg.data.synthetic preset=vg150_shapes [out=data/vg150_shapes seed=0 num_vg_train=24
num_vg_test=16 num_coco_train=8 num_coco_val=4 workers=1 force=false]``. Layout under ``out``: ``vg/`` and
``coco/`` as :mod:`sgseg.data.synthetic` writes them, and ``glove.vg150_shapes.300d.txt`` (random 300-d
vectors of every word of the class names). Stage-2 configs read it with ``data=vg data.root=OUT
data.vectors=OUT/glove.vg150_shapes.300d.txt data.vg.num_val=4``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from sgseg.data.label_spaces import (
    COCO_CATEGORY_IDS,
    COCO_OBJECT_CLASSES,
    VG150_OBJECT_CLASSES,
    VG150_PREDICATES,
)
from sgseg.data.synthetic.cli import is_true, parse_key_values
from sgseg.data.synthetic.writers import encode_vg_boxes
from sgseg.data.visual_genome import CORRUPT_IMAGE_IDS

PRESET = "vg150_shapes"
FORMAT_VERSION = 1
WORD_DIM = 300
VECTORS_FILE = "glove.vg150_shapes.300d.txt"


@dataclass(frozen=True)
class VG150ShapesConfig:
    """seed; num_*: images per split; min/max_image_size: each side uniform in this range (px);
    min/max_objects: objects per image (10 + geometric tail with mean ``tail_mean``); rels_per_object:
    relations per object (VG150 has ~0.5); overlap_fraction: share of relations drawn among overlapping
    pairs."""

    seed: int = 0
    num_vg_train: int = 24
    num_vg_test: int = 16
    num_coco_train: int = 8
    num_coco_val: int = 4
    min_image_size: int = 592
    max_image_size: int = 1000
    min_objects: int = 10
    max_objects: int = 60
    tail_mean: float = 10.0
    rels_per_object: float = 0.5
    overlap_fraction: float = 0.85

    def __post_init__(self) -> None:
        if not 32 <= self.min_image_size <= self.max_image_size:
            raise ValueError(f"{PRESET}: need 32 <= min_image_size <= max_image_size ({self.min_image_size}, "
                             f"{self.max_image_size})")  # fmt: skip
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError(f"{PRESET}: need 2 <= min_objects <= max_objects")


def _num_objects(rng: np.random.Generator, cfg: VG150ShapesConfig) -> int:
    extra = rng.geometric(1.0 / (1.0 + cfg.tail_mean)) - 1
    return int(min(cfg.max_objects, cfg.min_objects + extra))


def _random_boxes(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    """Float[n, 4] integer-valued xyxy boxes, sides log-uniform in 4–45 % of the image side."""
    bw = np.exp(rng.uniform(np.log(0.04), np.log(0.45), n)) * w
    bh = np.exp(rng.uniform(np.log(0.04), np.log(0.45), n)) * h
    x1 = rng.uniform(0, w - bw)
    y1 = rng.uniform(0, h - bh)
    return np.floor(np.stack([x1, y1, x1 + bw, y1 + bh], 1)).clip(0, [w - 1, h - 1, w - 1, h - 1])


def _colour(label: int, coco: bool) -> tuple[int, int, int]:
    rng = np.random.default_rng([label, 7 if coco else 3])
    return tuple(int(v) for v in rng.integers(30, 226, 3))


def _draw(rng: np.random.Generator, w: int, h: int, boxes: np.ndarray, labels: list[int], coco: bool):
    """RGB image and, per object, its shape polygon (ellipse or rectangle, COCO polygon format)."""
    img = Image.fromarray(rng.integers(90, 150, (h, w, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    polys = []
    for (x1, y1, x2, y2), lab in zip(boxes.tolist(), labels):
        if rng.random() < 0.5:
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
        else:
            pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=_colour(lab, coco))
        polys.append([float(v) for v in pts.reshape(-1)])
    return np.asarray(img), polys


def _overlaps(boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    ok = ((rb - lt) > 0).all(-1)
    np.fill_diagonal(ok, False)
    return ok


def _relations(rng: np.random.Generator, boxes: np.ndarray, cfg: VG150ShapesConfig) -> list[list[int]]:
    n = boxes.shape[0]
    k = max(1, int(round(cfg.rels_per_object * n)))
    over = np.argwhere(_overlaps(boxes))
    # long-tailed predicates: p(c) ∝ 1 / (c + 1), c = 0..49 (VG150's head: on, has, wearing, of, in, near)
    pw = 1.0 / (np.arange(len(VG150_PREDICATES)) + 1.0)
    pw /= pw.sum()
    rels = []
    for _ in range(k):
        if over.shape[0] and rng.random() < cfg.overlap_fraction:
            s, o = over[int(rng.integers(over.shape[0]))]
        else:
            s, o = rng.choice(n, 2, replace=False)
        rels.append([int(s), int(o), int(rng.choice(len(pw), p=pw)) + 1])
    return rels


def _vg_image(rng, cfg, n_obj: int) -> dict[str, Any]:
    w, h = (int(v) for v in rng.integers(cfg.min_image_size, cfg.max_image_size + 1, 2))
    boxes = _random_boxes(rng, n_obj, w, h)
    labels = [int(v) for v in rng.integers(0, len(VG150_OBJECT_CLASSES), n_obj)]
    pixels, _ = _draw(rng, w, h, boxes, labels, coco=False)
    return {
        "w": w,
        "h": h,
        "boxes": boxes,
        "labels": labels,
        "rels": _relations(rng, boxes, cfg),
        "px": pixels,
    }


def _write_vg(root: Path, images: list[dict[str, Any]]) -> None:
    (root / "VG_100K").mkdir(parents=True, exist_ok=True)
    image_data, split, fb, lb, fr, lr, labels, b1024, b512, rel_rows, preds = ([] for _ in range(11))
    n_boxes = n_rels = 0
    rid = 1
    for im in images:
        while rid in CORRUPT_IMAGE_IDS:  # listed in image_data.json, absent from the h5 (as in real VG)
            image_data.append({"image_id": rid, "width": 800, "height": 600, "coco_id": None, "url": ""})
            rid += 1
        Image.fromarray(im["px"]).save(root / "VG_100K" / f"{rid}.jpg", quality=85)
        image_data.append({"image_id": rid, "width": im["w"], "height": im["h"], "coco_id": None, "url": ""})
        rid += 1
        split.append(2 if im["test"] else 0)
        nb, nr = len(im["labels"]), len(im["rels"])
        fb.append(n_boxes)
        lb.append(n_boxes + nb - 1)
        fr.append(n_rels if nr else -1)
        lr.append(n_rels + nr - 1 if nr else -1)
        labels += [lab + 1 for lab in im["labels"]]
        b1024.append(encode_vg_boxes(im["boxes"], im["w"], im["h"], 1024))
        b512.append(encode_vg_boxes(im["boxes"], im["w"], im["h"], 512))
        rel_rows += [[n_boxes + s, n_boxes + o] for s, o, _ in im["rels"]]
        preds += [p for _, _, p in im["rels"]]
        n_boxes += nb
        n_rels += nr
    with h5py.File(root / "VG-SGG-with-attri.h5", "w") as f:
        for key, v in (("split", split), ("img_to_first_box", fb), ("img_to_last_box", lb),
                       ("img_to_first_rel", fr), ("img_to_last_rel", lr)):  # fmt: skip
            f.create_dataset(key, data=np.array(v, dtype=np.int32))
        f.create_dataset("labels", data=np.array(labels, dtype=np.int64).reshape(-1, 1))
        f.create_dataset("boxes_1024", data=np.concatenate(b1024).astype(np.int32))
        f.create_dataset("boxes_512", data=np.concatenate(b512).astype(np.int32))
        f.create_dataset("relationships", data=np.array(rel_rows, dtype=np.int32).reshape(-1, 2))
        f.create_dataset("predicates", data=np.array(preds, dtype=np.int64).reshape(-1, 1))
        f.create_dataset("attributes", data=np.zeros((n_boxes, 10), dtype=np.int64))
    oc = Counter(VG150_OBJECT_CLASSES[lab - 1] for lab in labels)
    pc = Counter(VG150_PREDICATES[p - 1] for p in preds)
    dicts = {
        "label_to_idx": {n: i for i, n in enumerate(VG150_OBJECT_CLASSES, 1)},
        "idx_to_label": {str(i): n for i, n in enumerate(VG150_OBJECT_CLASSES, 1)},
        "predicate_to_idx": {n: i for i, n in enumerate(VG150_PREDICATES, 1)},
        "idx_to_predicate": {str(i): n for i, n in enumerate(VG150_PREDICATES, 1)},
        "object_count": {n: oc.get(n, 0) for n in VG150_OBJECT_CLASSES},
        "predicate_count": {n: pc.get(n, 0) for n in VG150_PREDICATES},
        "attribute_to_idx": {},
        "idx_to_attribute": {},
        "attribute_count": {},
    }
    (root / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(dicts))
    (root / "image_data.json").write_text(json.dumps(image_data))


def _write_coco(root: Path, split: str, rng: np.random.Generator, num: int, cfg: VG150ShapesConfig) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    base = 100_000 if split == "train2017" else 900_000
    for i in range(num):
        iid = base + 3 * i + 1
        w, h = (int(v) for v in rng.integers(cfg.min_image_size, cfg.max_image_size + 1, 2))
        n = int(rng.integers(3, 16))
        boxes = _random_boxes(rng, n, w, h)
        labels = [int(v) for v in rng.integers(0, len(COCO_OBJECT_CLASSES), n)]
        pixels, polys = _draw(rng, w, h, boxes, labels, coco=True)
        Image.fromarray(pixels).save(root / split / f"{iid:012d}.jpg", quality=85)
        images.append({"id": iid, "file_name": f"{iid:012d}.jpg", "width": w, "height": h})
        for lab, poly in zip(labels, polys):
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            anns.append({
                "id": len(anns) + 1 + base, "image_id": iid, "category_id": COCO_CATEGORY_IDS[lab],
                "segmentation": [poly], "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0,
            })  # fmt: skip
    cats = [
        {"id": c, "name": n, "supercategory": "thing"} for c, n in zip(COCO_CATEGORY_IDS, COCO_OBJECT_CLASSES)
    ]
    doc = {"info": {"description": f"sgseg {PRESET}"}, "licenses": [], "images": images, "annotations": anns,
           "categories": cats}  # fmt: skip
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))


def _write_vectors(path: Path, seed: int) -> None:
    rng = np.random.default_rng([seed, 300])
    words = sorted({w for n in (*VG150_OBJECT_CLASSES, *COCO_OBJECT_CLASSES) for w in n.split(" ")})
    with open(path, "w") as f:
        for w in words:
            f.write(w + " " + " ".join(f"{x:.5f}" for x in rng.normal(0, 0.4, WORD_DIM)) + "\n")


def generate(out_dir: str | Path, config: VG150ShapesConfig | None = None) -> Path:
    """Write the preset into ``out_dir`` (replacing what is there). Returns ``out_dir``."""
    cfg = config or VG150ShapesConfig()
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng([cfg.seed, 150])
    images = []
    for part, num in (("train", cfg.num_vg_train), ("test", cfg.num_vg_test)):
        for i in range(num):
            n_obj = _num_objects(rng, cfg)
            if part == "test" and i < 2:  # always something for the 40-box test filter to drop
                n_obj = min(cfg.max_objects, (60, 45)[i])
            images.append(_vg_image(rng, cfg, n_obj) | {"test": part == "test"})
    _write_vg(out / "vg", images)
    _write_coco(out / "coco", "train2017", rng, cfg.num_coco_train, cfg)
    _write_coco(out / "coco", "val2017", rng, cfg.num_coco_val, cfg)
    _write_vectors(out / VECTORS_FILE, cfg.seed)
    counts = [len(im["labels"]) for im in images]
    stamp = {
        "preset": PRESET,
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "stats": {
            "vg_images": len(images),
            "objects_per_image": {"min": min(counts), "mean": float(np.mean(counts)), "max": max(counts)},
            "test_images_over_40_boxes": sum(c > 40 for im, c in zip(images, counts) if im["test"]),
            "vg_relations": sum(len(im["rels"]) for im in images),
        },
    }
    (out / "synthetic_config.json").write_text(json.dumps(stamp, indent=1))
    return out


def main(argv: list[str]) -> int:
    """``key=value`` arguments (see the module docstring); ``preset=`` itself is consumed by the caller."""
    # workers= is accepted and ignored: a single process writes a few dozen images
    values, opts = parse_key_values(
        argv, VG150ShapesConfig, f"sgseg.data.synthetic preset={PRESET}", ("out", "force", "workers")
    )
    out, force = Path(opts.get("out", Path("data") / PRESET)), is_true(opts.get("force", ""))
    cfg = VG150ShapesConfig(**values)
    stamp_path = out / "synthetic_config.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
    t0 = time.perf_counter()
    fresh = (
        force
        or not stamp
        or stamp.get("config") != asdict(cfg)
        or stamp.get("format_version") != FORMAT_VERSION
    )
    if fresh:
        generate(out, cfg)
        stamp = json.loads(stamp_path.read_text())
    print(f"{PRESET} at {out} ({'written' if fresh else 'up to date'}, {time.perf_counter() - t0:.1f} s)")
    print(json.dumps(stamp["stats"], indent=1))
    return 0
