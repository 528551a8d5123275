"""``python -m sgseg.data.check data.root=DIR [data.coco_root=DIR]``: validate dataset folders before a run.

Where this sits: a stand-alone tool in front of the whole pipeline. It opens the same loaders training uses
(``VisualGenome`` for train/val/test, ``CocoInstances``), checks every label, predicate and relation index
of each split in one vectorised pass over the h5 arrays, checks that every image file exists, and prints a
summary (images, objects and relations per split, the most frequent train predicates). Any missing or
corrupt file ends in ONE line on stderr naming the file and how to obtain it, and exit code 1 — never a
traceback — so it is safe to run first thing on a new machine.

Keys (``key=value``, all optional but ``data.root`` or ``data.coco_root``):
``data.root``, ``data.h5_file``, ``data.dicts_file``, ``data.image_data_file``, ``data.image_dir``,
``data.num_val``, ``data.check_images`` (true), ``data.top`` (10 predicate rows), ``data.check_label_space``
(true: the VG150 / COCO-80 class lists; false for a custom label space such as the synthetic benchmark's),
``data.coco_root``, ``data.coco_split`` (val), ``data.coco_ann_file``, ``data.coco_image_dir``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import h5py
import numpy as np

from sgseg.data.errors import DatasetError

DEFAULTS: dict[str, Any] = {
    "root": None,
    "h5_file": "VG-SGG-with-attri.h5",
    "dicts_file": "VG-SGG-dicts-with-attri.json",
    "image_data_file": "image_data.json",
    "image_dir": "VG_100K",
    "num_val": 5000,
    "check_images": True,
    "top": 10,
    "check_label_space": True,
    "coco_root": None,
    "coco_split": "val",
    "coco_ann_file": None,
    "coco_image_dir": None,
}
USAGE = (
    "usage: python -m sgseg.data.check data.root=DIR [data.coco_root=DIR] [data.KEY=VALUE ...]; "
    f"keys: {', '.join(DEFAULTS)}"
)


class UsageError(ValueError):
    """Bad command-line arguments."""


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """``data.key=value`` pairs (the ``data.`` prefix optional) → settings with types from :data:`DEFAULTS`."""
    cfg = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.removeprefix("+").removeprefix("data.")
        if not sep or key not in DEFAULTS:
            raise UsageError(f"unknown argument {arg!r}")
        default = DEFAULTS[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UsageError(f"{arg!r}: expected true or false")
            cfg[key] = value.lower() in ("true", "1", "yes")
        elif isinstance(default, int):
            try:
                cfg[key] = int(value)
            except ValueError as e:
                raise UsageError(f"{arg!r}: expected an integer") from e
        else:
            cfg[key] = None if value.lower() in ("", "null", "none") else value
    if cfg["root"] is None and cfg["coco_root"] is None:
        raise UsageError("give data.root (VG150 folder) and/or data.coco_root (COCO folder)")
    given = {a.partition("=")[0].removeprefix("+").removeprefix("data.") for a in argv}
    stamp = Path(cfg["root"]).parent / "synthetic_config.json" if cfg["root"] is not None else None
    if stamp is not None and stamp.is_file():  # the synthetic benchmark: its own label space and val size
        if "num_val" not in given:  # 10 % of its train split, not real VG's 5,000 images
            cfg["num_val"] = int(json.loads(stamp.read_text())["recommended_num_val"])
        if "check_label_space" not in given:
            cfg["check_label_space"] = False
    return cfg


def _check_split_arrays(ds: Any) -> dict[str, Any]:
    """Range-check labels, boxes, predicates and relation indices of a split's h5 rows; return counts."""
    box_rows, rel_rows = ds.box_rows(), ds.relation_rows()
    try:
        with h5py.File(ds.h5_path, "r") as f:
            labels = np.asarray(f["labels"][:, 0], dtype=np.int64)
            predicates = np.asarray(f["predicates"][:, 0], dtype=np.int64)
            pairs = np.asarray(f["relationships"][:], dtype=np.int64)
            boxes = np.asarray(f["boxes_1024"][:], dtype=np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"VG h5 {ds.h5_path} is unreadable ({e}); download it again") from e
    lab = labels[box_rows]
    bad = np.flatnonzero((lab < 1) | (lab >= ds.num_object_classes))
    if bad.size:
        raise DatasetError(
            f"VG h5 {ds.h5_path}: 'labels' row {int(box_rows[bad[0]])} is {int(lab[bad[0]])}, outside "
            f"1..{ds.num_object_classes - 1}; the h5 does not match the dicts file {ds.dicts_path}"
        )
    b = boxes[box_rows]
    bad = np.flatnonzero((b[:, :2] < 0).any(1) | (b[:, 2:] <= 0).any(1))
    if bad.size:
        raise DatasetError(
            f"VG h5 {ds.h5_path}: 'boxes_1024' row {int(box_rows[bad[0]])} = {b[bad[0]].tolist()} is not a valid "
            "(cx, cy, w, h) box (needs cx, cy >= 0 and w, h > 0); the file is corrupt, download it again"
        )
    pred = predicates[rel_rows]
    bad = np.flatnonzero((pred < 1) | (pred >= ds.num_predicates))
    if bad.size:
        raise DatasetError(
            f"VG h5 {ds.h5_path}: 'predicates' row {int(rel_rows[bad[0]])} is {int(pred[bad[0]])}, outside "
            f"1..{ds.num_predicates - 1}; the h5 does not match the dicts file {ds.dicts_path}"
        )
    # Each relation must point into the box rows of its own image.
    counts = np.where(ds._first_rel >= 0, ds._last_rel - ds._first_rel + 1, 0)
    lo = np.repeat(ds._first_box, counts)
    hi = np.repeat(ds._last_box, counts)
    p = pairs[rel_rows]
    bad = np.flatnonzero((p < lo[:, None]).any(1) | (p > hi[:, None]).any(1))
    if bad.size:
        k = int(bad[0])
        raise DatasetError(
            f"VG h5 {ds.h5_path}: 'relationships' row {int(rel_rows[k])} = {p[k].tolist()} points outside its "
            f"image's box rows {int(lo[k])}..{int(hi[k])}; the file is corrupt, download it again"
        )
    return {
        "images": len(ds),
        "objects": int(box_rows.size),
        "relations": int(rel_rows.size),
        "predicate_counts": np.bincount(pred, minlength=ds.num_predicates),
    }


def _check_images(ds: Any, what: str) -> None:
    missing = []
    for i in range(len(ds)):
        path = ds.image_info(i)["file"]
        if not path.is_file():
            missing.append(path)
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {len(ds)} image files missing, first {missing[0]}; download the images "
            f"into {ds.image_dir}"
        )


def check_vg(cfg: dict[str, Any], out: TextIO) -> None:
    from sgseg.data.visual_genome import VisualGenome

    root = Path(cfg["root"])
    rows = {}
    train_ds = None
    for split in ("train", "val", "test"):
        ds = VisualGenome(
            root,
            split=split,
            h5_file=cfg["h5_file"],
            dicts_file=cfg["dicts_file"],
            image_data_file=cfg["image_data_file"],
            image_dir=cfg["image_dir"],
            num_val=cfg["num_val"],
            check_label_space=cfg["check_label_space"],
        )
        rows[split] = _check_split_arrays(ds)
        if cfg["check_images"]:
            _check_images(ds, f"VG {split}")
        train_ds = ds if split == "train" else train_ds
    assert train_ds is not None
    print(f"Visual Genome (VG-SGG format) at {root}  (h5: {train_ds.h5_path.name})", file=out)
    print(f"  {'split':<6} {'images':>9} {'objects':>10} {'relations':>10}", file=out)
    for split, r in rows.items():
        print(f"  {split:<6} {r['images']:>9,} {r['objects']:>10,} {r['relations']:>10,}", file=out)
    counts = rows["train"]["predicate_counts"]
    total = max(int(counts.sum()), 1)
    order = [k for k in np.argsort(-counts[1:], kind="stable")[: cfg["top"]] + 1 if counts[k] > 0]
    print(f"  predicate histogram (train, top {len(order)} of {train_ds.num_predicates - 1}):", file=out)
    for k in order:
        share = counts[k] / total
        bar = "#" * max(int(round(40 * share)), 1)
        print(
            f"    {k:>2} {train_ds.idx_to_predicate[k]:<16} {int(counts[k]):>9,} {share:6.1%} {bar}", file=out
        )


def check_coco(cfg: dict[str, Any], out: TextIO) -> None:
    from sgseg.data.coco import CocoInstances

    ds = CocoInstances(
        cfg["coco_root"],
        split=cfg["coco_split"],
        ann_file=cfg["coco_ann_file"],
        image_dir=cfg["coco_image_dir"],
        skip_empty=False,
        check_label_space=cfg["check_label_space"],
    )
    if cfg["check_images"]:
        _check_images(ds, f"COCO {cfg['coco_split']}")
    anns = ds.coco.dataset["annotations"]
    crowd = sum(1 for a in anns if a.get("iscrowd", 0))
    empty = sum(1 for ids in ds._ann_ids if not ids)
    print(f"COCO {cfg['coco_split']} at {ds.ann_path}", file=out)
    print(
        f"  images {len(ds):,} ({empty:,} without training annotations), annotations {len(anns):,} "
        f"(crowd {crowd:,}, degenerate dropped {ds.num_dropped_degenerate:,}), categories {len(ds.class_names)}",
        file=out,
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE, file=out)
        return 0
    try:
        cfg = parse_args(argv)
        if cfg["root"] is not None:
            check_vg(cfg, out)
        if cfg["coco_root"] is not None:
            check_coco(cfg, out)
    except UsageError as e:
        print(f"error: {e}; {USAGE}", file=err)
        return 2
    except DatasetError as e:
        print(f"error: {' '.join(str(e).split())}", file=err)
        return 1
    except BrokenPipeError:  # output piped into `head`: nothing left to report to
        return 0
    except Exception as e:  # the contract is one line, never a traceback, whatever broke
        print(f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())}", file=err)
        return 1
    print("OK", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
