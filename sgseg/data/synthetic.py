"""The synthetic benchmark: a small, real test of segmentation-grounded scene graph generation on a CPU.

Where this sits: the first step of every run without the real datasets. It writes a VG-like scene-graph
dataset (boxes + relations, no masks), a COCO-like instance dataset (boxes + masks) and a GloVe-format word
vector file, all in the *real* on-disk formats (``docs/data.md``), so the real loaders
(:mod:`sgseg.data.visual_genome`, :mod:`sgseg.data.coco`) and the whole pipeline run on it unchanged.
The pixels, label spaces and geometric predicates come from :mod:`sgseg.data.synthetic_shapes`.

What makes it a test of the paper's idea:

* the VG-like classes include NOVEL names (``plate``, ``donut``, ``crate``...) that are COCO-like source
  shapes in disguise; their word vectors sit near the source they resemble, so zero-shot mask transfer can
  find the right source channel;
* several predicates are only decidable from masks (``in hole of`` vs ``on``, ``touching`` vs ``near``,
  ``partly covering``), so mask grounding can beat a box-only model;
* predicate frequencies are long-tailed (mR@K) and a set of (subject, object, predicate) triplets is held
  out of the train split and planted in the test split (zsR@K). Nothing about them is written: the
  pipeline derives the zero-shot set from the splits, as for real VG;
* ``vg/vg_test_masks.json`` (COCO format, hidden from training) holds the true masks of the VG-like test
  objects, so transferred masks can be scored on the target dataset; ``vg/vg_train_masks.json`` the same for
  the train split (val included), for the oracle-mask upper bound (``model.mask_source=oracle``).

Layout written under ``out_dir`` (see :class:`SyntheticLayout`)::

    synthetic_config.json                  stamp: format version + config (+ recommended num_val, stats)
    glove.synthetic.<D>d.txt               word vectors (GloVe text, no header; ``_`` joins multi-word names)
    vg/VG-SGG-with-attri.h5  vg/VG-SGG-dicts-with-attri.json  vg/image_data.json  vg/VG_100K/<id>.jpg
    vg/vg_test_masks.json                  hidden true masks of the VG-like test objects
    vg/vg_train_masks.json                 hidden true masks of the VG-like train (and val) objects
    coco/annotations/instances_{train,val}2017.json  coco/{train,val}2017/<id:012d>.jpg

Usage: ``python -m sgseg.data.synthetic out=DIR [seed=0 num_vg_train=2000 num_vg_test=500
num_coco_train=1000 num_coco_val=200 image_size=128,160 workers=2 force=false]``, or ``preset=vg150_shapes``
for a real-scale dry run (:mod:`sgseg.data.synthetic_vg150`); from Python,
:func:`ensure_synthetic` (generate only when absent or stale) or :func:`generate`. Loaders need
``check_label_space=False`` (19 object classes, 9 predicates, 5 COCO-like classes) and VG ``num_val`` =
the stamp's ``recommended_num_val`` (10 % of train instead of the real 5000).

Measured on the default set (seed 0, FORMAT_VERSION 4; 3,700 images, 43 MB): about 25 s of CPU in all,
i.e. ~13 s wall on two idle cores (37-56 s on this project's shared 2-core machine under load). 13,693 VG
boxes (3-8 per image), 6,931 relations (train: left of 1797, near 1337, above 726, below 629, on 319,
touching 295, partly covering 194, in hole of 132, around 70); 222 held-out triplets give 210 of the 867
test triplets unseen in train. An MLP given GT boxes and labels only reaches 0.84 accuracy / 0.81 mean
per-predicate recall on the test relations (touching 0.48, in hole of 0.58); adding five mask features
(gap, adjacency, hole containment, overlap) gives 0.96 / 0.95 — the room segmentation grounding can use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sgseg.data.synthetic_shapes import (
    MASK_PREDICATES,
    NOVEL_CLASSES,
    PLAN_WEIGHTS,
    PREDICATE_PRIORITY,
    PREDICATES,
    SOURCE_CATEGORY_IDS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TARGET_TO_SOURCE,
    class_style,
    compose_scene,
    feasible_pairs,
    pair_predicates,
)

__all__ = [
    "CORRUPT_VG_IMAGE_IDS",
    "FORMAT_VERSION",
    "MASK_PREDICATES",
    "NOVEL_CLASSES",
    "PREDICATES",
    "PREDICATE_PRIORITY",
    "SOURCE_CATEGORY_IDS",
    "SOURCE_CLASSES",
    "TARGET_CLASSES",
    "TARGET_TO_SOURCE",
    "SyntheticConfig",
    "SyntheticLayout",
    "decode_vg_boxes",
    "encode_vg_boxes",
    "ensure_synthetic",
    "generate",
    "held_out_triplets",
    "read_stamp",
    "word_vectors",
]

#: Bump when the generator's output changes for the same config: stale datasets are then regenerated.
FORMAT_VERSION = 4
# the hidden true masks (COCO format) of the VG-like objects per part, under vg/; the train file also holds val
VG_TRUE_MASKS = {"vg_train": "vg_train_masks.json", "vg_test": "vg_test_masks.json"}
#: Image ids the real VG preprocessing drops from ``image_data.json`` before aligning it with the h5 rows.
CORRUPT_VG_IMAGE_IDS: frozenset[int] = frozenset({1592, 1722, 4616, 4617})

_PARTS = ("vg_train", "vg_test", "coco_train", "coco_val")
_SOURCE_CONFUSER = {  # a second source each novel name also resembles a little (realistic ambiguity)
    "plate": "ring",
    "crate": "bar",
    "brick": "bar",
    "roof": "block",
    "donut": "disc",
    "tire": "disc",
    "plank": "block",
    "pipe": "ring",
}
_FILLER_WORDS = ("the", "of", "a", "and", "object", "thing", "shape")
_ATTRIBUTES = ("red", "green", "blue", "white", "black", "orange", "brown", "grey", "striped", "round")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated bytes (and nothing else: worker count is not here).

    seed: master seed; num_*: images per split; min/max_image_size: side lengths drawn uniformly (images
    need not be square); min/max_objects: objects per image; zero_shot_fraction: share of the placeable
    (subject, object) class pairs of each predicate held out of train and planted in test;
    zero_shot_test_rate: probability that a planned test pair uses a held-out triplet;
    first_vg_image_id: VG ids count up from here (ids 1592/1722/4616/4617 get an ``image_data.json`` entry
    but no image or h5 row, as in the real files); word_dim: word-vector dimension.
    """

    seed: int = 0
    num_vg_train: int = 2000
    num_vg_test: int = 500
    num_coco_train: int = 1000
    num_coco_val: int = 200
    min_image_size: int = 128
    max_image_size: int = 160
    min_objects: int = 3
    max_objects: int = 8
    zero_shot_fraction: float = 0.1
    zero_shot_test_rate: float = 0.35
    first_vg_image_id: int = 1
    word_dim: int = 50

    def __post_init__(self) -> None:
        if not 16 <= self.min_image_size <= self.max_image_size:
            raise ValueError(
                f"SyntheticConfig: need 16 <= min_image_size <= max_image_size, got "
                f"{self.min_image_size}, {self.max_image_size}"
            )
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SyntheticConfig: need 2 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        for name in ("num_vg_train", "num_vg_test", "num_coco_train", "num_coco_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"SyntheticConfig: {name} must be >= 0")

    @property
    def recommended_num_val(self) -> int:
        """VG validation = the first ``num_val`` train images (real VG: 5000); 10 % of train here."""
        return max(1, self.num_vg_train // 10)


@dataclass(frozen=True)
class SyntheticLayout:
    """Where :func:`generate` puts each file under ``root`` (the ``out_dir``)."""

    root: Path
    word_dim: int = 50

    @property
    def stamp(self) -> Path:
        return self.root / "synthetic_config.json"

    @property
    def vg_root(self) -> Path:
        """Pass as ``root`` to the VG loader."""
        return self.root / "vg"

    @property
    def coco_root(self) -> Path:
        """Pass as ``root`` to the COCO loader."""
        return self.root / "coco"

    @property
    def vg_test_masks(self) -> Path:
        return self.vg_root / "vg_test_masks.json"

    @property
    def word_vectors(self) -> Path:
        return self.root / f"glove.synthetic.{self.word_dim}d.txt"

    @classmethod
    def of(cls, out_dir: str | Path, config: SyntheticConfig | None = None) -> SyntheticLayout:
        return cls(Path(out_dir), (config or SyntheticConfig()).word_dim)


# ---------------------------------------------------------------------------------------------------------
# Box encoding of the VG h5 (centre format at a longer-side scale)
# ---------------------------------------------------------------------------------------------------------


def encode_vg_boxes(boxes: np.ndarray, width: int, height: int, scale: int) -> np.ndarray:
    """Int32[N, 4] (cx, cy, w, h) at longer side ``scale`` for Float[N, 4] xyxy boxes in image pixels.

    Chosen so the reference decoding (:func:`decode_vg_boxes`) gives back x1 = round(x1·s) exactly and
    x2 = x1 + round((x2 − x1)·s): within one ``scale`` unit, i.e. < 1 px of the original.
    """
    s = scale / max(width, height)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * s
    x1 = np.round(b[:, 0]).astype(np.int64)
    y1 = np.round(b[:, 1]).astype(np.int64)
    w = np.maximum(np.round(b[:, 2] - b[:, 0]).astype(np.int64), 1)
    h = np.maximum(np.round(b[:, 3] - b[:, 1]).astype(np.int64), 1)
    # cx - w/2 truncates back to x1 for both even and odd w (the reference decoder truncates on ints).
    return np.stack([x1 + (w + 1) // 2, y1 + (h + 1) // 2, w, h], axis=1).astype(np.int32)


def decode_vg_boxes(encoded: np.ndarray, width: int, height: int, scale: int) -> np.ndarray:
    """Float[N, 4] xyxy image pixels from Int[N, 4] centre-format boxes, as the reference loader does it.

    x1 = cx − w/2 stored back into an int array (truncation), x2 = x1 + w; times max(W, H)/scale; clipped.
    """
    b = np.array(encoded, dtype=np.int64).reshape(-1, 4)
    b[:, :2] = b[:, :2] - b[:, 2:] / 2  # numpy truncates the float result when storing into int64
    b[:, 2:] = b[:, :2] + b[:, 2:]
    out = b.astype(np.float64) * max(width, height) / scale
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


# ---------------------------------------------------------------------------------------------------------
# Zero-shot hold-out and class sampling
# ---------------------------------------------------------------------------------------------------------


def held_out_triplets(config: SyntheticConfig) -> frozenset[tuple[int, int, int]]:
    """Triplets (subject label, object label, predicate), 1-based, never annotated in the VG train split.

    Per predicate, ``zero_shot_fraction`` of its placeable (subject, object) class pairs (at least one),
    drawn from the seed. Test scenes plant them; train scenes avoid them and never label them.
    """
    rng = np.random.default_rng([config.seed, 90211])
    out = set()
    for p_idx, pred in enumerate(PREDICATES, start=1):
        pairs = feasible_pairs(pred)
        k = max(1, int(round(config.zero_shot_fraction * len(pairs)))) if config.zero_shot_fraction > 0 else 0
        for j in rng.choice(len(pairs), size=k, replace=False):
            s, o = pairs[int(j)]
            out.add((s + 1, o + 1, p_idx))
    return frozenset(out)


def _class_weights(coco: bool) -> np.ndarray:
    if coco:
        return np.full(len(SOURCE_CLASSES), 1.0 / len(SOURCE_CLASSES))
    w = np.array([class_style(n, False).weight for n in TARGET_CLASSES])
    return w / w.sum()


_PLAN_P = np.array([PLAN_WEIGHTS[p] for p in PLAN_WEIGHTS]) / sum(PLAN_WEIGHTS.values())
_PLAN_NAMES = tuple(PLAN_WEIGHTS)


def _choose_pair(
    rng: np.random.Generator, pairs: list[tuple[int, int]], weights: np.ndarray
) -> tuple[int, int] | None:
    if not pairs:
        return None
    w = np.array([weights[s] * weights[o] for s, o in pairs])
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))]


# ---------------------------------------------------------------------------------------------------------
# One image (runs in worker processes)
# ---------------------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: SyntheticConfig, tmp_root: str) -> None:
    held = held_out_triplets(config)
    feas = {p: feasible_pairs(p) for p in PREDICATES}
    _WORKER.update(
        config=config,
        root=Path(tmp_root),
        held=held,
        train_pairs={
            p: [(s, o) for s, o in feas[p] if (s + 1, o + 1, i) not in held]
            for i, p in enumerate(PREDICATES, start=1)
        },
        test_pairs={
            p: [(s, o) for s, o in feas[p] if (s + 1, o + 1, i) in held]
            for i, p in enumerate(PREDICATES, start=1)
        },
        coco_pairs={
            p: [(s, o) for s in range(len(SOURCE_CLASSES)) for o in range(len(SOURCE_CLASSES))]
            for p in PREDICATES
        },
    )
    # COCO-like scenes (no relations written) still plan pairs, for occlusions, contacts and filled holes
    # in the mask supervision: every source pair except where the ring / size constraints forbid it.
    idx = {n: k for k, n in enumerate(SOURCE_CLASSES)}
    others = [k for n, k in idx.items() if n != "ring"]
    _WORKER["coco_pairs"]["in hole of"] = [(k, idx["ring"]) for k in others]
    _WORKER["coco_pairs"]["around"] = [(idx["ring"], k) for k in others]
    _WORKER["coco_pairs"]["on"] = [
        (idx[a], idx[b]) for a in ("disc", "block", "triangle") for b in ("disc", "block")
    ]


def _uncompressed_rle(m: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros), as crowd ann use."""
    flat = np.asfortranarray(m).reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"counts": [int(r) for r in runs], "size": [int(m.shape[0]), int(m.shape[1])]}


def _compressed_rle(m: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _render_one(task: tuple[str, int, int, str]) -> dict[str, Any]:
    """Render, save and annotate one image. Returns plain python data for the main process to assemble."""
    part, index, image_id, rel_path = task
    cfg: SyntheticConfig = _WORKER["config"]
    coco = part.startswith("coco")
    train = part == "vg_train"
    rng = np.random.default_rng([cfg.seed, _PARTS.index(part), index])
    height, width = (int(v) for v in rng.integers(cfg.min_image_size, cfg.max_image_size + 1, size=2))
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    weights = _class_weights(coco)
    plan: list[tuple[str, int, int]] = []
    for _ in range(int(rng.integers(1, max(1, min(3, n_obj // 2)) + 1))):
        pred = _PLAN_NAMES[int(rng.choice(len(_PLAN_NAMES), p=_PLAN_P))]
        if coco:
            pairs = _WORKER["coco_pairs"][pred]
        elif not train and _WORKER["test_pairs"][pred] and rng.random() < cfg.zero_shot_test_rate:
            pairs = _WORKER["test_pairs"][pred]
        else:
            pairs = _WORKER["train_pairs"][pred]
        pair = _choose_pair(rng, pairs, weights)
        if pair is not None:
            plan.append((pred, pair[0], pair[1]))
    singles = [int(c) for c in rng.choice(len(weights), size=max(0, n_obj - 2 * len(plan)), p=weights)]
    crowd = int(rng.integers(len(SOURCE_CLASSES))) if coco and rng.random() < 0.08 else None
    scene = compose_scene(rng, height, width, coco, plan, singles, crowd_label=crowd)

    Image.fromarray(scene.image).save(_WORKER["root"] / rel_path, format="JPEG", quality=90)
    out: dict[str, Any] = {
        "part": part,
        "image_id": image_id,
        "width": width,
        "height": height,
        "labels": [o.label for o in scene.objects],
        "boxes": scene.boxes.tolist(),
    }
    if coco:
        segs = []
        for o, vis in zip(scene.objects, scene.visible):
            if not o.is_ring and np.array_equal(vis, o.full):
                segs.append({"polygons": [p.reshape(-1).tolist() for p in o.polygons]})
            else:  # a hole or an occluded part cannot be a COCO polygon: RLE, like real COCO's odd cases
                segs.append({"rle": _compressed_rle(vis)})
        out["segmentations"] = segs
        out["crowds"] = [(lab, _uncompressed_rle(m)) for lab, m in scene.crowds]
        return out
    out["masks"] = [_compressed_rle(v) for v in scene.visible]  # no RNG draw: the other files stay the same

    true = pair_predicates(scene)
    held = _WORKER["held"]
    chosen = [(s, o) for _, s, o in scene.planned if (s, o) in true]
    rest = [pair for pair in sorted(true) if pair not in chosen]
    for k in rng.permutation(len(rest))[: int(rng.integers(0, 4))]:
        chosen.append(rest[int(k)])
    rels = []
    for s, o in chosen:
        preds = true[(s, o)]
        # The label is the highest-priority true predicate; a few pairs also carry the second one as a
        # duplicate row (real VG has several predicates per pair; training samples one per load).
        labelled = preds[:2] if len(preds) > 1 and rng.random() < 0.08 else preds[:1]
        rows = [
            (scene.objects[s].label + 1, scene.objects[o].label + 1, PREDICATES.index(p) + 1)
            for p in labelled
        ]
        if train and rows[0] in held:
            continue  # never label a held-out pair by its lower-priority predicate instead
        rels += [[s, o, r[2]] for r in rows if not (train and r in held)]
    if rng.random() < 0.03:
        rels = []  # real VG has images without relations; the train filter must drop them
    out["relations"] = rels
    return out


# ---------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------


def _json_dump(obj: Any, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def word_vectors(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Float32[D] vectors of every source and target name (``_`` for spaces), plus a few filler words.

    Sources are near-orthogonal (norm ~3.2, so softmax over dot products is peaked, as with real GloVe
    norms); a novel name is 0.85 × its source + a little of one confusable source + noise; a multi-word
    name's words average to the name's vector (the paper's rule for multi-word names).
    """
    rng = np.random.default_rng([config.seed, 4242])
    d = config.word_dim
    if d < len(SOURCE_CLASSES) + 4:
        raise ValueError(f"SyntheticConfig.word_dim must be >= {len(SOURCE_CLASSES) + 4}, got {d}")
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    src = {n: 3.2 * q[:, k] for k, n in enumerate(SOURCE_CLASSES)}
    # Shared "round" and "straight" directions make disc/ring and block/bar mildly similar, like real words.
    src["disc"] = src["disc"] + 0.8 * q[:, 5]
    src["ring"] = src["ring"] + 0.8 * q[:, 5]
    src["block"] = src["block"] + 0.8 * q[:, 6]
    src["bar"] = src["bar"] + 0.8 * q[:, 6]
    vecs: dict[str, np.ndarray] = dict(src)
    for name in NOVEL_CLASSES:
        v = 0.85 * src[TARGET_TO_SOURCE[name]] + rng.normal(0, 0.2, size=d)
        if name in _SOURCE_CONFUSER:
            v = v + 0.6 * src[_SOURCE_CONFUSER[name]]
        key = name.replace(" ", "_")
        vecs[key] = v
        words = name.split(" ")
        if len(words) > 1:
            offsets = rng.normal(0, 0.5, size=(len(words), d))
            offsets -= offsets.mean(axis=0)
            for wd, off in zip(words, offsets):
                vecs.setdefault(wd, v + off)
    for wd in _FILLER_WORDS:
        vecs.setdefault(wd, rng.normal(0, 0.35, size=d))
    return {k: v.astype(np.float32) for k, v in vecs.items()}


def _write_word_vectors(path: Path, config: SyntheticConfig) -> None:
    with open(path, "w") as f:
        for key, v in word_vectors(config).items():
            f.write(key + " " + " ".join(f"{x:.6f}" for x in v) + "\n")


def _write_vg(root: Path, results: list[dict[str, Any]], config: SyntheticConfig) -> dict[str, Any]:
    """Write the VG h5, dicts json, image_data.json and the hidden true masks. Returns statistics."""
    image_data, split, first_box, last_box, first_rel, last_rel = [], [], [], [], [], []
    labels, b1024, b512, rel_rows, preds = [], [], [], [], []
    mask_images, mask_anns = {"vg_train": [], "vg_test": []}, {"vg_train": [], "vg_test": []}
    n_boxes = n_rels = 0
    rid = config.first_vg_image_id
    for r in results:
        while rid in CORRUPT_VG_IMAGE_IDS:  # listed in image_data.json, absent from the h5 (as in real VG)
            image_data.append(_vg_image_entry(rid, 800, 600))
            rid += 1
        assert r["image_id"] == rid, (r["image_id"], rid)
        rid += 1
        w, h = r["width"], r["height"]
        image_data.append(_vg_image_entry(r["image_id"], w, h))
        split.append(0 if r["part"] == "vg_train" else 2)
        boxes = np.array(r["boxes"], dtype=np.float64).reshape(-1, 4)
        nb, nr = len(boxes), len(r["relations"])
        first_box.append(n_boxes if nb else -1)
        last_box.append(n_boxes + nb - 1 if nb else -1)
        first_rel.append(n_rels if nr else -1)
        last_rel.append(n_rels + nr - 1 if nr else -1)
        labels += [lab + 1 for lab in r["labels"]]
        b1024.append(encode_vg_boxes(boxes, w, h, 1024))
        b512.append(encode_vg_boxes(boxes, w, h, 512))
        for s, o, p in r["relations"]:
            rel_rows.append([n_boxes + s, n_boxes + o])
            preds.append(p)
        # every VG-like image's true masks: the test split's file as before, the train split's (+ val) beside it
        mask_images[r["part"]].append(
            {"id": r["image_id"], "file_name": f"{r['image_id']}.jpg", "width": w, "height": h}
        )
        for k, (lab, rle) in enumerate(zip(r["labels"], r["masks"])):
            enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            mask_anns[r["part"]].append(
                {
                    "id": n_boxes + k + 1,
                    "vg_box_index": n_boxes + k,
                    "image_id": r["image_id"],
                    "category_id": lab + 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(enc)),
                    "bbox": [float(x) for x in mask_utils.toBbox(enc)],
                    "iscrowd": 0,
                }
            )
        n_boxes += nb
        n_rels += nr

    with h5py.File(root / "VG-SGG-with-attri.h5", "w") as f:
        f.create_dataset("split", data=np.array(split, dtype=np.int32))
        f.create_dataset("img_to_first_box", data=np.array(first_box, dtype=np.int32))
        f.create_dataset("img_to_last_box", data=np.array(last_box, dtype=np.int32))
        f.create_dataset("img_to_first_rel", data=np.array(first_rel, dtype=np.int32))
        f.create_dataset("img_to_last_rel", data=np.array(last_rel, dtype=np.int32))
        f.create_dataset("labels", data=np.array(labels, dtype=np.int64).reshape(-1, 1))
        for key, parts in (("boxes_1024", b1024), ("boxes_512", b512)):
            boxes = np.concatenate(parts) if parts else np.zeros((0, 4))
            f.create_dataset(key, data=boxes.reshape(-1, 4).astype(np.int32))
        f.create_dataset("relationships", data=np.array(rel_rows, dtype=np.int32).reshape(-1, 2))
        f.create_dataset("predicates", data=np.array(preds, dtype=np.int64).reshape(-1, 1))
        f.create_dataset("attributes", data=np.zeros((n_boxes, 10), dtype=np.int64))
        f.create_dataset("active_object_mask", data=np.ones((n_boxes, 1), dtype=bool))

    obj_count = Counter(TARGET_CLASSES[lab - 1] for lab in labels)
    pred_count = Counter(PREDICATES[p - 1] for p in preds)
    dicts = {
        "label_to_idx": {n: i for i, n in enumerate(TARGET_CLASSES, start=1)},
        "idx_to_label": {str(i): n for i, n in enumerate(TARGET_CLASSES, start=1)},
        "predicate_to_idx": {n: i for i, n in enumerate(PREDICATES, start=1)},
        "idx_to_predicate": {str(i): n for i, n in enumerate(PREDICATES, start=1)},
        "object_count": {n: obj_count.get(n, 0) for n in TARGET_CLASSES},
        "predicate_count": {n: pred_count.get(n, 0) for n in PREDICATES},
        "attribute_to_idx": {n: i for i, n in enumerate(_ATTRIBUTES, start=1)},
        "idx_to_attribute": {str(i): n for i, n in enumerate(_ATTRIBUTES, start=1)},
        "attribute_count": {n: 0 for n in _ATTRIBUTES},
    }
    _json_dump(dicts, root / "VG-SGG-dicts-with-attri.json")
    _json_dump(image_data, root / "image_data.json")
    categories = [
        {"id": i, "name": n, "supercategory": TARGET_TO_SOURCE[n]} for i, n in enumerate(TARGET_CLASSES, 1)
    ]
    for part, what in (("vg_test", "test"), ("vg_train", "train + val")):
        _json_dump(
            {
                "info": {
                    "description": f"sgseg synthetic: true masks of the VG-like {what} objects (hidden from training)"
                },
                "licenses": [],
                "images": mask_images[part],
                "annotations": mask_anns[part],
                "categories": categories,
            },
            root / VG_TRUE_MASKS[part],
        )
    return _vg_stats(results)


def _vg_image_entry(image_id: int, width: int, height: int) -> dict[str, Any]:
    return {
        "width": width,
        "url": f"https://synthetic.invalid/VG_100K/{image_id}.jpg",
        "height": height,
        "image_id": image_id,
        "coco_id": None,
        "flickr_id": None,
    }


def _vg_stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    trip: dict[str, set] = {"vg_train": set(), "vg_test": set()}
    hist: dict[str, Counter] = {"vg_train": Counter(), "vg_test": Counter()}
    cls: Counter = Counter()
    for r in results:
        cls.update(TARGET_CLASSES[lab] for lab in r["labels"])
        for s, o, p in r["relations"]:
            trip[r["part"]].add((r["labels"][s] + 1, r["labels"][o] + 1, p))
            hist[r["part"]][PREDICATES[p - 1]] += 1
    return {
        "predicate_histogram": {k: {p: hist[k].get(p, 0) for p in PREDICATES} for k in hist},
        "class_histogram": {n: cls.get(n, 0) for n in TARGET_CLASSES},
        "num_zero_shot_test_triplets": len(trip["vg_test"] - trip["vg_train"]),
        "num_test_triplets": len(trip["vg_test"]),
        "num_train_triplets": len(trip["vg_train"]),
    }


def _write_coco(root: Path, split: str, results: list[dict[str, Any]]) -> dict[str, int]:
    images, anns = [], []
    ann_id = 1 if split == "train2017" else 5_000_001
    n_poly = n_rle = n_crowd = 0
    for r in results:
        iid = r["image_id"]
        images.append(
            {
                "license": 1,
                "file_name": f"{iid:012d}.jpg",
                "coco_url": f"https://synthetic.invalid/{split}/{iid:012d}.jpg",
                "height": r["height"],
                "width": r["width"],
                "date_captured": "2021-10-11 00:00:00",
                "flickr_url": "",
                "id": iid,
            }
        )
        h, w = r["height"], r["width"]
        items = [(lab, seg, 0) for lab, seg in zip(r["labels"], r["segmentations"])]
        items += [(lab, {"crowd": rle}, 1) for lab, rle in r["crowds"]]
        for lab, seg, crowd in items:
            if "polygons" in seg:
                segmentation: Any = seg["polygons"]
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
                n_poly += 1
            elif "rle" in seg:
                segmentation = seg["rle"]
                rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
                n_rle += 1
            else:
                segmentation = seg["crowd"]
                rle = mask_utils.frPyObjects(segmentation, h, w)
                n_crowd += 1
            area = float(mask_utils.area(rle))
            if area == 0:
                continue
            anns.append(
                {
                    "segmentation": segmentation,
                    "area": area,
                    "iscrowd": crowd,
                    "image_id": iid,
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                    "category_id": SOURCE_CATEGORY_IDS[lab],
                    "id": ann_id,
                }
            )
            ann_id += 1
    cats = [
        {"supercategory": "shape", "id": cid, "name": n}
        for cid, n in zip(SOURCE_CATEGORY_IDS, SOURCE_CLASSES)
    ]
    _json_dump(
        {
            "info": {
                "description": "sgseg synthetic COCO-like shapes",
                "version": str(FORMAT_VERSION),
                "year": 2021,
            },
            "licenses": [{"id": 1, "name": "CC0 (generated)", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": cats,
        },
        root / "annotations" / f"instances_{split}.json",
    )
    return {
        "images": len(images),
        "polygon_annotations": n_poly,
        "rle_annotations": n_rle,
        "crowd_annotations": n_crowd,
    }


# ---------------------------------------------------------------------------------------------------------
# Generation, stamp, regeneration
# ---------------------------------------------------------------------------------------------------------


def _tasks(config: SyntheticConfig) -> list[tuple[str, int, int, str]]:
    tasks = []
    rid = config.first_vg_image_id
    for part, n in (("vg_train", config.num_vg_train), ("vg_test", config.num_vg_test)):
        for i in range(n):
            while rid in CORRUPT_VG_IMAGE_IDS:
                rid += 1
            tasks.append((part, i, rid, f"vg/VG_100K/{rid}.jpg"))
            rid += 1
    # COCO-like ids: non-contiguous and disjoint between the splits, like real COCO ids.
    for i in range(config.num_coco_train):
        iid = 100_000 + 3 * i + 1
        tasks.append(("coco_train", i, iid, f"coco/train2017/{iid:012d}.jpg"))
    for i in range(config.num_coco_val):
        iid = 900_000 + 3 * i + 2
        tasks.append(("coco_val", i, iid, f"coco/val2017/{iid:012d}.jpg"))
    return tasks


def _generate_into(root: Path, config: SyntheticConfig, num_workers: int) -> dict[str, Any]:
    for sub in ("vg/VG_100K", "coco/annotations", "coco/train2017", "coco/val2017"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    tasks = _tasks(config)
    num_workers = max(1, min(num_workers, len(tasks)))
    if num_workers == 1:
        _init_worker(config, str(root))
        results = [_render_one(t) for t in tasks]
    else:
        # spawn: safe after torch/OpenMP are loaded in the parent (tests, training); per-image seeds make the
        # output independent of the worker count and scheduling.
        ctx = mp.get_context("spawn")
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(config, str(root))) as pool:
            results = pool.map(_render_one, tasks, chunksize=max(1, min(32, len(tasks) // (4 * num_workers))))
    by_part: dict[str, list[dict[str, Any]]] = {p: [] for p in _PARTS}
    for r in results:
        by_part[r["part"]].append(r)
    vg_stats = _write_vg(root / "vg", by_part["vg_train"] + by_part["vg_test"], config)
    coco_stats = {
        "train2017": _write_coco(root / "coco", "train2017", by_part["coco_train"]),
        "val2017": _write_coco(root / "coco", "val2017", by_part["coco_val"]),
    }
    _write_word_vectors(SyntheticLayout.of(root, config).word_vectors, config)
    n_boxes = sum(len(r["labels"]) for r in results if r["part"].startswith("vg"))
    n_rels = sum(len(r["relations"]) for r in results if r["part"].startswith("vg"))
    return {
        "vg_boxes": n_boxes,
        "vg_relations": n_rels,
        "num_held_out_triplets": len(held_out_triplets(config)),
        **vg_stats,
        "coco": coco_stats,
    }


def _as_config(config: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"SyntheticConfig: unknown field(s) {unknown}; known: {sorted(known)}")
    return SyntheticConfig(**dict(config))


def read_stamp(out_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``synthetic_config.json`` of ``out_dir``, or None when absent or unreadable."""
    path = Path(out_dir) / "synthetic_config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stamp_matches(stamp: dict[str, Any] | None, config: SyntheticConfig) -> bool:
    return (
        bool(stamp)
        and stamp.get("format_version") == FORMAT_VERSION
        and stamp.get("config") == asdict(config)
    )


def generate(
    out_dir: str | Path, config: SyntheticConfig | Mapping[str, Any] | None = None, num_workers: int = 2
) -> Path:
    """Generate the synthetic benchmark into ``out_dir`` (replacing an older synthetic dataset there).

    Everything is written into a temporary sibling directory and moved into place only when complete
    (the stamp is written last), so an interrupted run never leaves a half dataset that looks complete.
    Refuses to replace a non-empty ``out_dir`` that has no stamp (it is not ours to delete).
    Returns ``out_dir``.
    """
    config = _as_config(config)
    out = Path(out_dir).absolute()
    if out.exists() and read_stamp(out) is None and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and has no synthetic_config.json stamp; refusing to overwrite it. Delete it or "
            f"choose another out= directory for `python -m sgseg.data.synthetic`."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stats = _generate_into(tmp, config, num_workers)
        stamp = {
            "format_version": FORMAT_VERSION,
            "config": asdict(config),
            "recommended_num_val": config.recommended_num_val,
            "layout": {
                "vg_root": "vg",
                "coco_root": "coco",
                "word_vectors": SyntheticLayout.of(".", config).word_vectors.name,
                "vg_test_masks": "vg/vg_test_masks.json",
            },
            "stats": stats,
        }
        (tmp / "synthetic_config.json").write_text(json.dumps(stamp, indent=1) + "\n")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def _lock(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_synthetic(
    out_dir: str | Path, config: SyntheticConfig | Mapping[str, Any] | None = None, num_workers: int = 2
) -> Path:
    """Return ``out_dir`` holding the synthetic benchmark for ``config``, generating it only if needed.

    config: a :class:`SyntheticConfig`, or a mapping of its fields (e.g. a Hydra node as a dict); None =
    the defaults. Regenerates when the stamp is missing, or its format version or config differs (never
    silently stale). Concurrent callers (pytest-xdist workers) serialise on a lock file next to ``out_dir``.
    """
    config = _as_config(config)
    out = Path(out_dir).absolute()
    with _lock(out):
        if _stamp_matches(read_stamp(out), config):
            return out
        return generate(out, config, num_workers=num_workers)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _parse_args(argv: list[str]) -> tuple[Path, SyntheticConfig, int, bool]:
    known = {f.name: f for f in fields(SyntheticConfig)}
    values: dict[str, Any] = {}
    out: Path | None = None
    workers, force = 2, False
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(
                f"sgseg.data.synthetic: expected key=value, got {arg!r} (e.g. out=data/synthetic seed=0)"
            )
        key, val = arg.split("=", 1)
        if key == "out":
            out = Path(val)
        elif key == "workers":
            workers = int(val)
        elif key == "force":
            force = val.lower() in ("1", "true", "yes")
        elif key == "image_size":
            lo, _, hi = val.partition(",")
            values["min_image_size"], values["max_image_size"] = int(lo), int(hi or lo)
        elif key in known:
            values[key] = float(val) if known[key].type in ("float", float) else int(val)
        else:
            raise SystemExit(
                f"sgseg.data.synthetic: unknown key {key!r}; known: out, workers, force, image_size, "
                + ", ".join(known)
            )
    if out is None:
        raise SystemExit(
            "sgseg.data.synthetic: out=DIR is required, e.g. python -m sgseg.data.synthetic out=data/synthetic"
        )
    return out, SyntheticConfig(**values), workers, force


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    presets = [a.partition("=")[2] for a in argv if a.startswith("preset=")]
    if presets:  # real-scale dry-run data (sgseg.data.synthetic_vg150), not the learnable benchmark
        from sgseg.data import synthetic_vg150

        if presets != [synthetic_vg150.PRESET]:
            raise SystemExit(
                f"sgseg.data.synthetic: unknown preset {presets}; known: {synthetic_vg150.PRESET}"
            )
        return synthetic_vg150.main([a for a in argv if not a.startswith("preset=")])
    out, config, workers, force = _parse_args(argv)
    t0 = time.perf_counter()
    path = generate(out, config, workers) if force else ensure_synthetic(out, config, workers)
    stamp = read_stamp(path) or {}
    stats = stamp.get("stats", {})
    print(f"synthetic benchmark at {path} ({time.perf_counter() - t0:.1f} s)")
    print(
        json.dumps(
            {
                k: stats.get(k)
                for k in (
                    "vg_boxes",
                    "vg_relations",
                    "num_held_out_triplets",
                    "num_zero_shot_test_triplets",
                    "predicate_histogram",
                )
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
