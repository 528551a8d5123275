"""Visual Genome, VG150 split (Xu et al. 2017 preprocessing): the target dataset of the scene-graph stages.

Where this sits: the first step of the VG side of the pipeline. ``VisualGenome`` reads the files of the
standard preprocessing exactly as they are distributed (``VG-SGG-with-attri.h5``, the dicts json,
``image_data.json``, ``VG_100K/<image_id>.jpg``) and yields one dict per image (boxes in original-image
pixels, labels 1..150, relations with local indices). The DataModule's transforms resize and batch them
into :class:`sgseg.structures.Targets`; ``statistics.py`` and the evaluator use
:meth:`VisualGenome.get_groundtruth`, which never decodes an image.

Reference behaviour reproduced on purpose (Scene-Graph-Benchmark.pytorch ``load_graphs`` /
``get_groundtruth``, itself Neural-MOTIFS'), so numbers are comparable with published ones:

* split flag 0 = train, 2 = test; images without boxes are always dropped; images without relations are
  dropped where ``filter_empty_rels`` (default: train/val); val = the first ``num_val`` train images left
  after that, train = the rest;
* ``boxes_1024`` centre boxes decode as ``x1 = trunc(cx - w/2)`` (numpy's float → int cast, i.e. toward
  zero), ``x2 = x1 + w``, then scale by ``max(W, H) / 1024`` and clamp to ``[0, W - 1] × [0, H - 1]`` (the
  reference's ``clip_to_image`` with ``TO_REMOVE = 1``); boxes that become empty are kept, so relation
  indices stay valid;
* train only, optional: keep only relations whose two boxes overlap (IoU > 0 with the reference's +1 pixel
  convention, on the 1024-frame boxes) and drop images left without any;
* train only, default on: each time an image is loaded, one predicate is drawn uniformly for every
  (subject, object) pair that carries several.

The h5 file is opened lazily, once per process (DataLoader workers reopen it after fork), and only the small
per-image index arrays are read at construction, so start-up on the full 108k-image file takes seconds.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from sgseg.data.errors import DatasetError, read_rgb
from sgseg.data.label_spaces import VG150_OBJECT_CLASSES, VG150_PREDICATES, VGDicts, load_vg_dicts

BOX_SCALE = 1024
# Images whose JPEGs are broken in the VG release; the preprocessing has no h5 rows for them, so they must be
# removed from image_data.json before its rows line up with the h5 rows.
CORRUPT_IMAGE_IDS = frozenset({1592, 1722, 4616, 4617})
DEFAULT_H5_FILE = "VG-SGG-with-attri.h5"
FALLBACK_H5_FILE = "VG-SGG.h5"
SPLIT_FLAGS = {"train": 0, "val": 0, "test": 2}
INDEX_KEYS = ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel")
DATA_KEYS = ("labels", "boxes_1024", "relationships", "predicates")
OBTAIN_HINT = (
    "download the VG150 files (VG-SGG-with-attri.h5, VG-SGG-dicts-with-attri.json, image_data.json, "
    "VG_100K/) into the dataset root, or run `python -m sgseg.data.synthetic` for the synthetic benchmark"
)


def decode_boxes_1024(boxes_cxcywh: np.ndarray) -> np.ndarray:
    """Centre-format boxes of the h5 → xyxy, both in the 1024 frame, with the reference's integer arithmetic.

    boxes_cxcywh: Int[B, 4] (cx, cy, w, h) as stored in ``boxes_1024``.
    Returns Int64[B, 4] (x1, y1, x2, y2): ``x1 = trunc(cx - w / 2)`` (truncation toward zero, which is what
    assigning the float difference into the reference's int32 array does), ``x2 = x1 + w``; same for y.
    """
    b = np.asarray(boxes_cxcywh, dtype=np.int64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, :2] = np.trunc(b[:, :2] - b[:, 2:] / 2).astype(np.int64)
    out[:, 2:] = out[:, :2] + b[:, 2:]
    return out


def boxes_1024_to_image(
    boxes_xyxy_1024: np.ndarray, width: int, height: int, scale: int = BOX_SCALE
) -> Tensor:
    """1024-frame xyxy boxes → Float[B, 4] xyxy in original-image pixels, clamped to [0, W-1] × [0, H-1].

    Scale is ``max(W, H) / 1024`` (the longer side was mapped to 1024; ``scale=512`` for ``boxes_512``),
    computed in float64 as the reference does, then cast to float32 and clamped like
    ``BoxList.clip_to_image`` (``TO_REMOVE = 1``).
    """
    scaled = np.asarray(boxes_xyxy_1024, dtype=np.float64).reshape(-1, 4) / scale * max(width, height)
    boxes = torch.from_numpy(scaled).to(torch.float32)
    boxes[:, 0::2].clamp_(min=0, max=width - 1)
    boxes[:, 1::2].clamp_(min=0, max=height - 1)
    return boxes


def decode_vg_boxes(boxes_cxcywh: np.ndarray, width: int, height: int, scale: int = BOX_SCALE) -> Tensor:
    """The project's one VG box decoder: h5 centre boxes → Float[B, 4] xyxy original-image pixels.

    boxes_cxcywh: Int[B, 4] rows of ``boxes_1024`` (``scale=1024``) or ``boxes_512`` (``scale=512``).
    :func:`decode_boxes_1024` then :func:`boxes_1024_to_image`: the reference's truncation, scaling and
    clamp to [0, W-1] × [0, H-1]. What the loader returns, what the synthetic writer's
    :func:`sgseg.data.synthetic.encode_vg_boxes` is checked against, and what tests decode with.
    """
    return boxes_1024_to_image(decode_boxes_1024(boxes_cxcywh), width, height, scale)


def pairwise_intersection(boxes: np.ndarray, to_move: int) -> np.ndarray:
    """Float[N, N] intersection areas of xyxy boxes; ``to_move = 1``: inclusive-pixel (+1) convention."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + to_move).clip(min=0)
    return wh[..., 0] * wh[..., 1]


def _pair_overlaps(sub_boxes: np.ndarray, obj_boxes: np.ndarray) -> np.ndarray:
    """Bool[R]: IoU > 0 of row-wise box pairs, +1 convention of ``boxlist_iou`` (the overlap filter)."""
    lt = np.maximum(sub_boxes[:, :2], obj_boxes[:, :2])
    rb = np.minimum(sub_boxes[:, 2:], obj_boxes[:, 2:])
    wh = (rb - lt + 1).clip(min=0)
    return (wh[:, 0] * wh[:, 1]) > 0


def sample_duplicate_relations(relations: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keep one uniformly drawn predicate per (subject, object) pair; pairs in order of first appearance.

    relations: Long[R, 3] (subject, object, predicate). Returns Long[R', 3], R' = number of distinct pairs.
    Draws from torch's RNG (seeded per DataLoader worker), so every load of an image may pick differently.
    """
    if relations.shape[0] == 0:
        return relations
    groups: dict[tuple[int, int], list[int]] = {}
    for row, (s, o) in enumerate(relations[:, :2].tolist()):
        groups.setdefault((s, o), []).append(row)
    picks = []
    for rows in groups.values():
        j = int(torch.randint(len(rows), (1,), generator=generator)) if len(rows) > 1 else 0
        picks.append(rows[j])
    return relations[torch.tensor(picks, dtype=torch.long)]


def _ranges(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Concatenated inclusive ranges ``first[k]..last[k]`` (skipping ``first = -1``), vectorised."""
    has = first >= 0
    first, counts = first[has], (last - first + 1)[has]
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(first - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return (np.arange(counts.sum()) + offsets).astype(np.int64)


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{what} {path} is not readable JSON ({e}); download it again") from e


class VisualGenome(torch.utils.data.Dataset):
    """One split of VG150, read from the files of the standard preprocessing.

    Item (a dict, one image):
        image: Uint8[3, H, W] RGB as stored on disk.
        boxes: Float[N, 4] xyxy in original-image pixels.
        labels: Long[N] in 1..150.
        relations: Long[R, 3] (subject, object, predicate); subject/object index ``boxes`` (local to the
            image), predicate in 1..50. Train: one predicate per (subject, object) pair, redrawn each load.
        image_id: int (VG image id); width, height: int (from image_data.json).
        masks: UInt8[N, H, W] the objects' true masks, only with ``true_masks``.

    root: folder with the files below (names overridable; relative names are joined to ``root``).
    h5_file: the roidb h5; the default name falls back to ``VG-SGG.h5`` when absent.
    filter_empty_rels: drop images without relations; None = True for train/val, False for test. Train and
        val must agree on it, since val is carved out of the filtered train list.
    filter_non_overlap: train only: keep relations whose boxes overlap, drop images left without any.
    filter_duplicate_rels: train only: sample one predicate per duplicated pair at each load.
    num_val: size of val, taken from the front of the filtered train list (0: no val carve-out).
    num_images: keep only the first ``num_images`` images of the split before the val carve-out (-1: all).
    max_test_boxes: test only: drop images with more than this many GT boxes (paper Sec. 3: "filtered out
        from the test set due to memory constraints"; the reference evaluator skips images with > 40). None:
        keep all. ``num_dropped_max_boxes`` counts the dropped images, ``num_images_before_box_filter`` the
        split before the drop (``num_with_relations_before_box_filter`` of them with a relation: 26,446 of
        the standard test split).
    check_label_space: check the dicts json against the built-in VG150 lists.
    true_masks: optional COCO-format json of the objects' true masks under ``root``, ``{split}`` standing for
        the h5 split (``train`` for train and val, ``test``): each annotation's ``vg_box_index`` is its h5
        box row. Then each item also holds ``masks`` UInt8[N, H, W] (the oracle-mask upper bound,
        ``model.mask_source=oracle``). The synthetic benchmark writes ``vg_{split}_masks.json``; real VG has
        no such file.
    transform: optional callable applied to each item dict (the DataModule's transforms).

    Label-space attributes: ``num_object_classes`` / ``num_predicates`` are C_obj = 151 / C_rel = 51 *with*
    background (structures.py's convention); ``idx_to_label`` / ``idx_to_predicate`` list ``"__background__"``
    at index 0 (as the reference's ``ind_to_classes``); ``object_classes`` / ``predicates`` are the
    foreground names only (class k at position k - 1).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        h5_file: str = DEFAULT_H5_FILE,
        dicts_file: str = "VG-SGG-dicts-with-attri.json",
        image_data_file: str = "image_data.json",
        image_dir: str = "VG_100K",
        filter_empty_rels: bool | None = None,
        filter_non_overlap: bool = False,
        filter_duplicate_rels: bool = True,
        num_val: int = 5000,
        num_images: int = -1,
        max_test_boxes: int | None = None,
        check_label_space: bool = True,
        true_masks: str | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in SPLIT_FLAGS:
            raise ValueError(f"VisualGenome: split must be 'train', 'val' or 'test', got {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"VG dataset root {self.root} is not a directory; {OBTAIN_HINT}")
        self.split = split
        self.h5_path = self._resolve_h5(h5_file)
        self.dicts_path = self.root / dicts_file
        self.image_data_path = self.root / image_data_file
        self.image_dir = self.root / image_dir
        self.filter_empty_rels = (split != "test") if filter_empty_rels is None else bool(filter_empty_rels)
        self.filter_non_overlap = bool(filter_non_overlap) and split == "train"
        self.filter_duplicate_rels = bool(filter_duplicate_rels) and split == "train"
        self.num_val = int(num_val)
        self.num_images = int(num_images)
        if max_test_boxes is not None and int(max_test_boxes) < 1:
            raise ValueError(
                f"VisualGenome: max_test_boxes must be >= 1 or None, got {max_test_boxes}; set data.vg.max_test_boxes"
            )
        self.max_test_boxes = int(max_test_boxes) if max_test_boxes is not None and split == "test" else None
        self.transform = transform

        self.dicts: VGDicts = load_vg_dicts(
            self.dicts_path,
            VG150_OBJECT_CLASSES if check_label_space else None,
            VG150_PREDICATES if check_label_space else None,
        )
        # C_obj / C_rel with background, the project's convention (structures.py): labels lie in 1..C-1.
        self.num_object_classes = len(self.dicts.object_classes) + 1
        self.num_predicates = len(self.dicts.predicates) + 1

        index, num_boxes, num_rels = self._read_index()
        infos = self._read_image_data(expected=index["split"].shape[0])
        rows = self._select_rows(index)
        self.num_images_before_box_filter = int(rows.shape[0])
        self.num_with_relations_before_box_filter = int((index["img_to_first_rel"][rows] >= 0).sum())
        self.num_dropped_max_boxes = 0
        if self.max_test_boxes is not None:
            num_boxes_of = index["img_to_last_box"][rows] - index["img_to_first_box"][rows] + 1
            keep = num_boxes_of <= self.max_test_boxes
            self.num_dropped_max_boxes = int((~keep).sum())
            rows = rows[keep]
        if self.filter_non_overlap:
            rows = self._drop_non_overlapping(rows, index)
        self._rows = rows
        self._first_box = index["img_to_first_box"][rows].astype(np.int64)
        self._last_box = index["img_to_last_box"][rows].astype(np.int64)
        self._first_rel = index["img_to_first_rel"][rows].astype(np.int64)
        self._last_rel = index["img_to_last_rel"][rows].astype(np.int64)
        self._num_boxes_total = num_boxes
        self._num_rels_total = num_rels
        self._image_ids = np.array([int(infos[r]["image_id"]) for r in rows], dtype=np.int64)
        self._widths = np.array([int(infos[r]["width"]) for r in rows], dtype=np.int64)
        self._heights = np.array([int(infos[r]["height"]) for r in rows], dtype=np.int64)
        self._h5: h5py.File | None = None
        self._h5_pid: int | None = None
        self.true_masks_path: Path | None = None
        self._true_masks: dict[int, dict[str, Any]] = {}
        if true_masks is not None:
            self.true_masks_path = self.root / true_masks.format(split="test" if split == "test" else "train")
            self._true_masks = self._read_true_masks(self.true_masks_path)

    # ----------------------------------------------------------------------------------------------- setup
    def _resolve_h5(self, h5_file: str) -> Path:
        path = self.root / h5_file
        if path.is_file():
            return path
        if h5_file == DEFAULT_H5_FILE and (self.root / FALLBACK_H5_FILE).is_file():
            return self.root / FALLBACK_H5_FILE
        alt = f" (nor {FALLBACK_H5_FILE})" if h5_file == DEFAULT_H5_FILE else ""
        raise DatasetError(f"VG h5 not found at {path}{alt}; {OBTAIN_HINT}")

    def _read_index(self) -> tuple[dict[str, np.ndarray], int, int]:
        """Read the per-image index arrays (small) and check every key and length the loader relies on."""
        try:
            with h5py.File(self.h5_path, "r") as f:
                missing = [k for k in (*INDEX_KEYS, *DATA_KEYS) if k not in f]
                if missing:
                    raise DatasetError(
                        f"VG h5 {self.h5_path} lacks key(s) {missing}; the file is truncated or not a VG-SGG "
                        f"roidb, download it again ({OBTAIN_HINT})"
                    )
                index = {k: np.asarray(f[k][:]).reshape(-1) for k in INDEX_KEYS}
                shapes = {k: f[k].shape for k in DATA_KEYS}
        except DatasetError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise DatasetError(f"VG h5 {self.h5_path} is unreadable ({e}); download it again") from e
        n = index["split"].shape[0]
        for k in INDEX_KEYS:
            if index[k].shape[0] != n:
                raise DatasetError(
                    f"VG h5 {self.h5_path}: {k!r} has {index[k].shape[0]} rows but 'split' has {n}; the file "
                    "is corrupt, download it again"
                )
        num_boxes, num_rels = shapes["labels"][0], shapes["relationships"][0]
        expected = {
            "labels": (num_boxes, 1),
            "boxes_1024": (num_boxes, 4),
            "relationships": (num_rels, 2),
            "predicates": (num_rels, 1),
        }
        for k, shape in expected.items():
            if tuple(shapes[k]) != shape:
                raise DatasetError(
                    f"VG h5 {self.h5_path}: {k!r} has shape {tuple(shapes[k])}, expected {shape} "
                    "(labels/boxes_1024 share the box rows, relationships/predicates the relation rows); "
                    "the file is corrupt"
                )
        for first, last, total, what in (
            ("img_to_first_box", "img_to_last_box", num_boxes, "box"),
            ("img_to_first_rel", "img_to_last_rel", num_rels, "relation"),
        ):
            a, b = index[first], index[last]
            has = a >= 0
            bad = np.flatnonzero(has & ((b < a) | (b >= total)))
            if bad.size:
                r = int(bad[0])
                raise DatasetError(
                    f"VG h5 {self.h5_path}: row {r} has {first}={int(a[r])}, {last}={int(b[r])}, outside the "
                    f"{total} {what} rows; the file is corrupt, download it again"
                )
        return index, int(num_boxes), int(num_rels)

    @staticmethod
    def _read_true_masks(path: Path) -> dict[int, dict[str, Any]]:
        """h5 box row → its annotation (``segmentation`` RLE) from a COCO-format true-mask file."""
        if not path.is_file():
            raise DatasetError(
                f"VG true masks {path} not found: model.mask_source=oracle needs the synthetic benchmark's hidden "
                "true masks of every split, which older benchmarks lack; regenerate the benchmark "
                "(`python -m sgseg.data.synthetic out=<data.root> force=true`, same files plus the masks) or "
                "point paths.data_dir at a fresh one"
            )
        anns = _read_json(path, "VG true masks").get("annotations", [])
        return {int(a["vg_box_index"]): a for a in anns}

    def _true_masks_of(self, i: int, num_boxes: int) -> Tensor:
        """UInt8[N, H, W]: the true masks of image ``i``'s objects, in h5 box order."""
        from pycocotools import mask as mask_utils

        b0 = int(self._first_box[i])
        w, h = int(self._widths[i]), int(self._heights[i])
        masks = np.zeros((num_boxes, h, w), dtype=np.uint8)
        for k in range(num_boxes):
            ann = self._true_masks.get(b0 + k)
            if ann is None:
                raise DatasetError(
                    f"VG true masks {self.true_masks_path}: no annotation with vg_box_index {b0 + k} (object {k} "
                    f"of image id {int(self._image_ids[i])}); the file does not belong to this h5, regenerate "
                    "the benchmark"
                )
            rle = dict(ann["segmentation"])
            if tuple(rle["size"]) != (h, w):
                raise DatasetError(
                    f"VG true masks {self.true_masks_path}: vg_box_index {b0 + k} has size {rle['size']}, image "
                    f"id {int(self._image_ids[i])} is {h}x{w} in image_data.json; regenerate the benchmark"
                )
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            masks[k] = mask_utils.decode(rle)
        return torch.from_numpy(masks)

    def _read_image_data(self, expected: int) -> list[dict]:
        if not self.image_data_path.is_file():
            raise DatasetError(f"VG image_data.json not found at {self.image_data_path}; {OBTAIN_HINT}")
        data = _read_json(self.image_data_path, "VG image_data.json")
        if not isinstance(data, list):
            raise DatasetError(f"VG image_data.json {self.image_data_path}: expected a list of image records")
        try:
            kept = [d for d in data if int(d["image_id"]) not in CORRUPT_IMAGE_IDS]
            for d in kept:
                int(d["width"]), int(d["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(
                f"VG image_data.json {self.image_data_path}: every record needs image_id, width and "
                f"height ({e})"
            ) from e
        if len(kept) != expected:
            raise DatasetError(
                f"VG image_data.json {self.image_data_path} has {len(kept)} records after dropping the "
                f"corrupt ids {sorted(CORRUPT_IMAGE_IDS)} but the h5 {self.h5_path} has {expected} images; "
                "the two files come from different preprocessings, use the image_data.json distributed "
                "with the h5"
            )
        return kept

    def _select_rows(self, index: dict[str, np.ndarray]) -> np.ndarray:
        keep = index["split"] == SPLIT_FLAGS[self.split]
        keep &= index["img_to_first_box"] >= 0
        if self.filter_empty_rels:
            keep &= index["img_to_first_rel"] >= 0
        rows = np.flatnonzero(keep)
        if self.num_images > -1:
            rows = rows[: self.num_images]
        if self.num_val > 0 and self.split == "val":
            rows = rows[: self.num_val]
        elif self.num_val > 0 and self.split == "train":
            rows = rows[self.num_val :]
        return rows

    def _drop_non_overlapping(self, rows: np.ndarray, index: dict[str, np.ndarray]) -> np.ndarray:
        """Train images that keep at least one relation under the overlap filter (one vectorised pass)."""
        try:
            with h5py.File(self.h5_path, "r") as f:
                rels = np.asarray(f["relationships"][:], dtype=np.int64)
                boxes = decode_boxes_1024(f["boxes_1024"][:])
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"VG h5 {self.h5_path} is unreadable ({e}); download it again") from e
        first_rel = index["img_to_first_rel"][rows]
        last_rel = index["img_to_last_rel"][rows]
        has = first_rel >= 0
        counts = np.where(has, last_rel - first_rel + 1, 0)
        rel_rows = _ranges(first_rel, last_rel)
        ok = np.zeros(0, dtype=bool)
        if rel_rows.size:
            pairs = rels[rel_rows]
            if pairs.min() < 0 or pairs.max() >= boxes.shape[0]:
                raise DatasetError(
                    f"VG h5 {self.h5_path}: 'relationships' points outside the {boxes.shape[0]} box rows; "
                    "the file is corrupt, download it again"
                )
            ok = _pair_overlaps(boxes[pairs[:, 0]], boxes[pairs[:, 1]])
        image_of_rel = np.repeat(np.arange(rows.shape[0]), counts)
        any_ok = np.bincount(image_of_rel[ok], minlength=rows.shape[0]) > 0
        return rows[any_ok]

    # ------------------------------------------------------------------------------------------- h5 access
    def _file(self) -> h5py.File:
        """This process's h5 handle; reopened after a fork, since h5py handles must not cross processes."""
        pid = os.getpid()
        if self._h5 is None or self._h5_pid != pid:
            try:
                self._h5 = h5py.File(self.h5_path, "r")
            except OSError as e:
                raise DatasetError(f"VG h5 {self.h5_path} is unreadable ({e}); download it again") from e
            self._h5_pid = pid
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_h5_pid"] = None
        return state

    def close(self) -> None:
        """Close this process's h5 handle (it is reopened on the next access)."""
        if self._h5 is not None and self._h5_pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._h5_pid = None

    def _read(self, key: str, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(self._file()[key][start:stop])
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(
                f"VG h5 {self.h5_path}: reading {key!r} rows {start}..{stop - 1} failed ({e}); the file is "
                "corrupt, download it again"
            ) from e

    # ------------------------------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return int(self._rows.shape[0])

    @property
    def object_classes(self) -> tuple[str, ...]:
        """Foreground object names, class k at position k - 1 (no background entry)."""
        return self.dicts.object_classes

    @property
    def predicates(self) -> tuple[str, ...]:
        """Foreground predicate names, predicate k at position k - 1 (no background entry)."""
        return self.dicts.predicates

    @property
    def idx_to_label(self) -> list[str]:
        """151 names, ``[0]`` = ``"__background__"``, ``[k]`` = object class k."""
        return self.dicts.idx_to_label

    @property
    def idx_to_predicate(self) -> list[str]:
        """51 names, ``[0]`` = ``"__background__"``, ``[k]`` = predicate k."""
        return self.dicts.idx_to_predicate

    @property
    def image_ids(self) -> list[int]:
        return self._image_ids.tolist()

    def image_info(self, i: int) -> dict[str, Any]:
        """``image_id``, ``width``, ``height`` (image_data.json), ``file`` (the JPEG path), ``h5_row``."""
        i = self._check_index(i)
        image_id = int(self._image_ids[i])
        return {
            "image_id": image_id,
            "width": int(self._widths[i]),
            "height": int(self._heights[i]),
            "file": self.image_dir / f"{image_id}.jpg",
            "h5_row": int(self._rows[i]),
        }

    def box_rows(self) -> np.ndarray:
        """Int64[B_split] the h5 box rows of this split's images, in image order (for whole-split checks)."""
        return _ranges(self._first_box, self._last_box)

    def relation_rows(self) -> np.ndarray:
        """Int64[R_split] the h5 relation rows of this split's images (before the overlap filter)."""
        return _ranges(self._first_rel, self._last_rel)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"VisualGenome({self.split}): index {i} out of range for {n} images")
        return i % n

    def get_graph(self, i: int) -> dict[str, Any]:
        """The raw scene graph of image ``i`` in the 1024 frame, all relations (no duplicate sampling).

        Returns ``boxes_1024`` Int64[N, 4] xyxy (decoded, unclipped, as the reference's ``gt_boxes``),
        ``labels`` Long[N], ``relations`` Long[R, 3] (overlap filter applied on train when enabled),
        ``image_id``. Labels, predicates and relation indices are range-checked here.
        """
        i = self._check_index(i)
        b0, b1 = int(self._first_box[i]), int(self._last_box[i]) + 1
        labels = self._read("labels", b0, b1)
        raw = self._read("boxes_1024", b0, b1)
        r0, r1 = int(self._first_rel[i]), int(self._last_rel[i]) + 1
        if r0 >= 0:
            pairs, preds = self._read("relationships", r0, r1), self._read("predicates", r0, r1)
        else:
            pairs, preds = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        return self._make_graph(i, labels, raw, pairs, preds)

    def iter_graphs(self) -> Iterator[dict[str, Any]]:
        """``get_graph(i)`` for every image in order, reading each h5 array once (whole-split passes).

        Holds the labels, boxes and relations of the whole file in memory (about 60 MB for full VG150)
        instead of four small h5 reads per image: statistics over the train split take seconds, not minutes.
        """
        f = self._file()
        try:
            labels_all = np.asarray(f["labels"][:])
            raw_all = np.asarray(f["boxes_1024"][:])
            pairs_all = np.asarray(f["relationships"][:])
            preds_all = np.asarray(f["predicates"][:])
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"VG h5 {self.h5_path} is unreadable ({e}); download it again") from e
        for i in range(len(self)):
            b0, b1 = int(self._first_box[i]), int(self._last_box[i]) + 1
            r0, r1 = int(self._first_rel[i]), int(self._last_rel[i]) + 1
            r0, r1 = (r0, r1) if r0 >= 0 else (0, 0)
            yield self._make_graph(i, labels_all[b0:b1], raw_all[b0:b1], pairs_all[r0:r1], preds_all[r0:r1])

    def _make_graph(
        self, i: int, labels: np.ndarray, raw: np.ndarray, pairs: np.ndarray, preds: np.ndarray
    ) -> dict[str, Any]:
        """Check and decode one image's h5 rows (``pairs`` still hold global box rows)."""
        image_id = int(self._image_ids[i])
        b0, r0 = int(self._first_box[i]), int(self._first_rel[i])
        labels = labels.reshape(-1).astype(np.int64)
        raw = raw.reshape(-1, 4).astype(np.int64)
        pairs = pairs.reshape(-1, 2).astype(np.int64) - b0
        preds = preds.reshape(-1).astype(np.int64)
        n = labels.shape[0]
        where = f"VG h5 {self.h5_path}, image id {image_id} (h5 row {int(self._rows[i])})"
        bad = np.flatnonzero((labels < 1) | (labels >= self.num_object_classes))
        if bad.size:
            raise DatasetError(
                f"{where}: 'labels' has {int(labels[bad[0]])} at box row {b0 + int(bad[0])}, outside "
                f"1..{self.num_object_classes - 1}; the h5 does not match the dicts file {self.dicts_path}"
            )
        if (raw[:, :2] < 0).any() or (raw[:, 2:] <= 0).any():
            r = int(np.flatnonzero((raw[:, :2] < 0).any(1) | (raw[:, 2:] <= 0).any(1))[0])
            raise DatasetError(
                f"{where}: 'boxes_1024' row {b0 + r} = {raw[r].tolist()} is not a valid (cx, cy, w, h) box "
                "(needs cx, cy >= 0 and w, h > 0); the file is corrupt, download it again"
            )
        bad = np.flatnonzero((pairs < 0).any(1) | (pairs >= n).any(1))
        if bad.size:
            raise DatasetError(
                f"{where}: 'relationships' row {r0 + int(bad[0])} points to box rows "
                f"{(pairs[bad[0]] + b0).tolist()}, outside this image's rows {b0}..{b0 + n - 1}; "
                "the file is corrupt"
            )
        bad = np.flatnonzero((preds < 1) | (preds >= self.num_predicates))
        if bad.size:
            raise DatasetError(
                f"{where}: 'predicates' has {int(preds[bad[0]])} at relation row {r0 + int(bad[0])}, "
                f"outside 1..{self.num_predicates - 1}; the h5 does not match the dicts file "
                f"{self.dicts_path}"
            )
        rels = np.column_stack([pairs, preds]).reshape(-1, 3)
        boxes = decode_boxes_1024(raw)
        if self.filter_non_overlap and rels.shape[0]:
            rels = rels[_pair_overlaps(boxes[rels[:, 0]], boxes[rels[:, 1]])]
        return {
            "boxes_1024": boxes,
            "labels": torch.from_numpy(labels),
            "relations": torch.from_numpy(np.ascontiguousarray(rels, dtype=np.int64)),
            "image_id": image_id,
        }

    def get_groundtruth(self, i: int, sample_duplicates: bool = False) -> dict[str, Any]:
        """The item of image ``i`` without the image (no JPEG decoding): for statistics and evaluation.

        sample_duplicates: draw one predicate per duplicated pair (what ``__getitem__`` does on train);
        False keeps every GT relation, as the evaluator wants.
        """
        i = self._check_index(i)
        g = self.get_graph(i)
        w, h = int(self._widths[i]), int(self._heights[i])
        rels = g["relations"]
        if sample_duplicates:
            rels = sample_duplicate_relations(rels)
        return {
            "boxes": boxes_1024_to_image(g["boxes_1024"], w, h),
            "labels": g["labels"],
            "relations": rels,
            "image_id": g["image_id"],
            "width": w,
            "height": h,
        }

    def load_image(self, i: int) -> Tensor:
        """Uint8[3, H, W] RGB of image ``i`` (no EXIF rotation, like the reference's PIL loading)."""
        info = self.image_info(i)
        path: Path = info["file"]
        image = read_rgb(
            path, "VG image file", info["image_id"],
            f"put all VG images (both VG_100K and VG_100K_2 parts) into {self.image_dir}",
        )  # fmt: skip
        h, w = image.shape[1:]
        if (w, h) != (info["width"], info["height"]):
            # The released image_data.json has a few wrong sizes; boxes follow it, as in the reference.
            warnings.warn(
                f"VG image {path}: decoded size {w}x{h} differs from image_data.json "
                f"{info['width']}x{info['height']}; boxes use the json size (fix image_data.json to "
                "silence this)",
                stacklevel=2,
            )
        return image

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.get_groundtruth(i, sample_duplicates=self.filter_duplicate_rels)
        item["image"] = self.load_image(i)
        if self.true_masks_path is not None:
            item["masks"] = self._true_masks_of(self._check_index(i), item["labels"].shape[0])
        if self.transform is not None:
            item = self.transform(item)
        return item

    def fingerprint(self) -> dict[str, Any]:
        """What the content of this split depends on: file identities (size, mtime, head/tail hash) + params.

        Used as a cache key by ``statistics.py``; any rewrite of the h5, dicts or image_data file changes it.
        """
        from sgseg.data.statistics import file_fingerprint

        return {
            "h5": file_fingerprint(self.h5_path),
            "dicts": file_fingerprint(self.dicts_path),
            "image_data": file_fingerprint(self.image_data_path),
            "split": self.split,
            "filter_empty_rels": self.filter_empty_rels,
            "filter_non_overlap": self.filter_non_overlap,
            "num_val": self.num_val,
            "num_images": self.num_images,
        } | ({"max_test_boxes": self.max_test_boxes} if self.max_test_boxes is not None else {})

    def __repr__(self) -> str:
        return (
            f"VisualGenome(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"filter_empty_rels={self.filter_empty_rels}, filter_non_overlap={self.filter_non_overlap}, "
            f"filter_duplicate_rels={self.filter_duplicate_rels}, max_test_boxes={self.max_test_boxes})"
        )
