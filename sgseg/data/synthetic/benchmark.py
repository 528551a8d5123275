"""Generate the synthetic benchmark: all images, the writers, the stamp, and regeneration only when stale.

Where this sits: the entry of :mod:`sgseg.data.synthetic` from Python (:func:`generate`,
:func:`ensure_synthetic`) and from the CLI (:mod:`sgseg.data.synthetic.cli`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from sgseg.data.synthetic.config import _PARTS, FORMAT_VERSION, SyntheticConfig, SyntheticLayout
from sgseg.data.synthetic.images import _init_worker, _render_one, held_out_triplets
from sgseg.data.synthetic.words import _write_word_vectors
from sgseg.data.synthetic.writers import _write_coco, _write_vg
from sgseg.data.visual_genome import CORRUPT_IMAGE_IDS


def _tasks(config: SyntheticConfig) -> list[tuple[str, int, int, str]]:
    tasks = []
    rid = config.first_vg_image_id
    for part, n in (("vg_train", config.num_vg_train), ("vg_test", config.num_vg_test)):
        for i in range(n):
            while rid in CORRUPT_IMAGE_IDS:
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
