"""The synthetic benchmark's VG and COCO writers: the real on-disk formats of ``docs/data.md``.

Where this sits: :mod:`sgseg.data.synthetic.benchmark` hands them the per-image results of
:func:`sgseg.data.synthetic.images._render_one`; the real loaders (:mod:`sgseg.data.visual_genome`,
:mod:`sgseg.data.coco`) read what they write. The VG boxes are decoded by the loader's
:func:`sgseg.data.visual_genome.decode_vg_boxes`, the one decoder of the project.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pycocotools import mask as mask_utils

from sgseg.data.synthetic.config import FORMAT_VERSION, VG_AMODAL_MASKS, VG_TRUE_MASKS, SyntheticConfig
from sgseg.data.synthetic.labels import (
    PREDICATES,
    SOURCE_CATEGORY_IDS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TARGET_TO_SOURCE,
)
from sgseg.data.visual_genome import CORRUPT_IMAGE_IDS

_ATTRIBUTES = ("red", "green", "blue", "white", "black", "orange", "brown", "grey", "striped", "round")


def encode_vg_boxes(boxes: np.ndarray, width: int, height: int, scale: int) -> np.ndarray:
    """Int32[N, 4] (cx, cy, w, h) at longer side ``scale`` for Float[N, 4] xyxy boxes in image pixels.

    Chosen so the reference decoding (:func:`sgseg.data.visual_genome.decode_vg_boxes`, before its clamp to
    W − 1) gives back x1 = round(x1·s) exactly and
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


def _json_dump(obj: Any, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def _write_vg(root: Path, results: list[dict[str, Any]], config: SyntheticConfig) -> dict[str, Any]:
    """Write the VG h5, dicts json, image_data.json and the hidden true masks. Returns statistics."""
    image_data, split, first_box, last_box, first_rel, last_rel = [], [], [], [], [], []
    labels, b1024, b512, rel_rows, preds = [], [], [], [], []
    mask_images: dict[str, list] = {"vg_train": [], "vg_test": []}
    # per kind of true mask (visible / amodal), per part
    mask_anns: dict[str, dict[str, list]] = {
        kind: {"vg_train": [], "vg_test": []} for kind in ("masks", "amodal_masks")
    }
    n_boxes = n_rels = 0
    rid = config.first_vg_image_id
    for r in results:
        while rid in CORRUPT_IMAGE_IDS:  # listed in image_data.json, absent from the h5 (as in real VG)
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
        for kind, anns in mask_anns.items():
            for k, (lab, rle) in enumerate(zip(r["labels"], r[kind])):
                enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
                anns[r["part"]].append(
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
    for kind, files, adjective in (
        ("masks", VG_TRUE_MASKS, "true"),
        ("amodal_masks", VG_AMODAL_MASKS, "amodal"),
    ):
        for part, what in (("vg_test", "test"), ("vg_train", "train + val")):
            _json_dump(
                {
                    "info": {
                        "description": f"sgseg synthetic: {adjective} masks of the VG-like {what} objects "
                        "(hidden from training)"
                    },
                    "licenses": [],
                    "images": mask_images[part],
                    "annotations": mask_anns[kind][part],
                    "categories": categories,
                },
                root / files[part],
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
