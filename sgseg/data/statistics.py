"""Frequency-bias statistics and zero-shot triplets of a VG split, computed once and cached next to the data.

Where this sits: between the data layer and the relation head. The frequency bias of MOTIFS-style
predictors is a table of log predicate frequencies per (subject class, object class); it is computed here
from the train split's ground truth (:meth:`VisualGenome.get_graph`, which never decodes an image) and
*passed in* to the model's constructor (style.md). ``zeroshot_triplets`` gives the evaluator its zsR@K set.

Reference (Scene-Graph-Benchmark.pytorch ``get_VG_statistics``), reproduced exactly:
``fg_matrix[s, o, p]`` counts every GT relation of every train image (no duplicate sampling);
``bg_matrix[s, o]`` counts ordered pairs of distinct GT boxes whose intersection is positive
(``box_filter(must_overlap=True)``, intersection without the +1 pixel convention, on the 1024-frame boxes),
and falls back to *all* ordered pairs of an image when none of its boxes overlap. Note the reference built
its train split with ``filter_non_overlap=True``; pass a dataset constructed that way to reproduce its numbers.

Caching: ``cache/freq_stats_<key>.pt`` next to the h5, keyed by a hash of the dataset's fingerprint (size,
mtime and content hash of the h5, dicts and image_data files, plus the split parameters). The key is also
stored inside the file and compared on load, so a changed input can never be served a stale table.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from sgseg.data.errors import DatasetError

CACHE_VERSION = 1
_FULL_HASH_LIMIT = 256 * 2**20  # files up to this size are hashed whole
_CHUNK = 2**20
_NUM_SAMPLES = 64


class GraphDataset(Protocol):
    num_object_classes: int  # C_obj, with background
    num_predicates: int  # C_rel, with background

    def __len__(self) -> int: ...

    def get_graph(self, i: int) -> dict[str, Any]: ...


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a file for cache keys: name, size, mtime_ns and a content hash.

    Files up to 256 MiB are hashed whole; larger ones (the 1-2 GB VG h5) hash 64 evenly spaced 1 MiB chunks
    plus the tail, which with size and mtime catches any rewrite while keeping start-up in seconds.
    """
    path = Path(path)
    try:
        st = path.stat()
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            if st.st_size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
            else:
                for k in range(_NUM_SAMPLES):
                    f.seek(k * (st.st_size // _NUM_SAMPLES))
                    h.update(f.read(_CHUNK))
                f.seek(st.st_size - _CHUNK)
                h.update(f.read(_CHUNK))
    except OSError as e:
        raise DatasetError(f"cannot read {path} to fingerprint it ({e})") from e
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": h.hexdigest()}


@dataclass(frozen=True)
class FrequencyStatistics:
    """Counts over the train split's ground truth (index 0 = background in both label spaces).

    fg_matrix: Long[C_obj, C_obj, C_rel] count of relations (subject label, object label, predicate).
    bg_matrix: Long[C_obj, C_obj] count of overlapping ordered box pairs (subject label, object label).
    """

    fg_matrix: Tensor
    bg_matrix: Tensor

    def __post_init__(self) -> None:
        c_obj = self.bg_matrix.shape[0]
        if self.fg_matrix.dim() != 3 or tuple(self.fg_matrix.shape[:2]) != (c_obj, c_obj):
            raise ValueError(
                f"FrequencyStatistics: fg_matrix {tuple(self.fg_matrix.shape)} must be [C_obj, C_obj, C_rel] "
                f"with C_obj = {c_obj} from bg_matrix {tuple(self.bg_matrix.shape)}"
            )

    def predicate_log_distribution(self, eps: float = 1e-3) -> Tensor:
        """Float[C_obj, C_obj, C_rel] the reference's frequency-bias table (``pred_dist``).

        ``fg[:, :, 0] = bg + 1`` (background gets the overlap counts, +1 so no row is empty), then
        ``log(fg / fg.sum(-1) + eps)``.
        """
        fg = self.fg_matrix.to(torch.float64).clone()
        fg[:, :, 0] = self.bg_matrix.to(torch.float64) + 1
        return torch.log(fg / fg.sum(-1, keepdim=True) + eps).to(torch.float32)


def cooccurrence_prior(fg_matrix: Tensor) -> Tensor:
    """Float[C_obj, C_obj] VCTree's class co-occurrence prior W (SGB ``VCTreeLSTMContext.bi_freq_prior``).

    fg_matrix: Long[C_obj, C_obj, C_rel] relation counts (:class:`FrequencyStatistics`). W[s, o] = number of
    train relations with subject class s and object class o over all predicates, background row and column
    zeroed, divided by the total so W sums to 1. (The context model symmetrises it to W + Wᵀ, as SGB does.)
    """
    if fg_matrix.dim() != 3 or fg_matrix.shape[0] != fg_matrix.shape[1]:
        raise ValueError(
            f"cooccurrence_prior: fg_matrix must be [C_obj, C_obj, C_rel], got {tuple(fg_matrix.shape)}"
        )
    co = fg_matrix.to(torch.float64).sum(-1)
    co[0, :] = 0
    co[:, 0] = 0
    total = co.sum()
    if total <= 0:
        raise ValueError(
            "cooccurrence_prior: the train statistics hold no relation between foreground classes; check the "
            "train split (data.vg) has relations"
        )
    return (co / total).to(torch.float32)


def overlapping_pairs(boxes: np.ndarray, must_overlap: bool = True) -> np.ndarray:
    """Int[P, 2] ordered pairs (i, j), i != j, of boxes with positive intersection (the reference's box_filter).

    boxes: [N, 4] xyxy. Intersection uses no +1 (``to_move=0``), so boxes that only touch do not overlap.
    If no pair overlaps (or ``must_overlap`` is False), all ordered pairs of distinct boxes are returned.
    """
    from sgseg.data.visual_genome import pairwise_intersection

    n = boxes.shape[0]
    all_pairs = ~np.eye(n, dtype=bool)
    if must_overlap:
        overlaps = (pairwise_intersection(boxes, to_move=0) > 0) & all_pairs
        if overlaps.any():
            return np.argwhere(overlaps)
    return np.argwhere(all_pairs)


def _graphs(dataset: GraphDataset) -> Iterator[dict[str, Any]]:
    """Every image's graph; through ``iter_graphs`` (one bulk read) when the dataset offers it."""
    if hasattr(dataset, "iter_graphs"):
        yield from dataset.iter_graphs()
    else:
        for i in range(len(dataset)):
            yield dataset.get_graph(i)


def compute_frequency_statistics(dataset: GraphDataset, must_overlap: bool = True) -> FrequencyStatistics:
    """Count fg/bg matrices over every image of ``dataset`` (no cache; see :func:`frequency_statistics`)."""
    c_obj = dataset.num_object_classes
    c_rel = dataset.num_predicates
    fg = np.zeros((c_obj, c_obj, c_rel), dtype=np.int64)
    bg = np.zeros((c_obj, c_obj), dtype=np.int64)
    for g in _graphs(dataset):
        labels = np.asarray(g["labels"], dtype=np.int64)
        rels = np.asarray(g["relations"], dtype=np.int64).reshape(-1, 3)
        np.add.at(fg, (labels[rels[:, 0]], labels[rels[:, 1]], rels[:, 2]), 1)
        pairs = overlapping_pairs(np.asarray(g["boxes_1024"]), must_overlap)
        np.add.at(bg, (labels[pairs[:, 0]], labels[pairs[:, 1]]), 1)
    return FrequencyStatistics(torch.from_numpy(fg), torch.from_numpy(bg))


def _dataset_key(dataset: Any, must_overlap: bool) -> dict[str, Any]:
    if not hasattr(dataset, "fingerprint"):
        raise TypeError(f"{type(dataset).__name__} has no fingerprint(); cannot cache its statistics")
    return {"version": CACHE_VERSION, "must_overlap": must_overlap, "dataset": dataset.fingerprint()}


def frequency_statistics(
    dataset: Any,
    cache_dir: str | os.PathLike | None = None,
    must_overlap: bool = True,
    use_cache: bool = True,
) -> FrequencyStatistics:
    """:func:`compute_frequency_statistics`, cached in ``cache_dir`` (default ``<h5 folder>/cache``).

    The cache file name and its stored key both derive from ``dataset.fingerprint()``; a mismatch or an
    unreadable cache file means recomputation. If the folder is not writable the result is returned
    uncached, with a warning.
    """
    if not use_cache:
        return compute_frequency_statistics(dataset, must_overlap)
    key = _dataset_key(dataset, must_overlap)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else Path(dataset.h5_path).parent / "cache"
    path = folder / f"freq_stats_{digest}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("key") == json.dumps(key, sort_keys=True):
                return FrequencyStatistics(payload["fg_matrix"], payload["bg_matrix"])
        except Exception as e:  # a broken cache file is never fatal: it is recomputed and overwritten
            warnings.warn(f"ignoring unreadable statistics cache {path} ({e}); recomputing", stacklevel=2)
    stats = compute_frequency_statistics(dataset, must_overlap)
    payload = {
        "key": json.dumps(key, sort_keys=True),
        "fg_matrix": stats.fg_matrix,
        "bg_matrix": stats.bg_matrix,
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader (another DDP rank) never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(
            f"statistics not cached: cannot write {path} ({e}); pass a writable cache_dir", stacklevel=2
        )
    return stats


def relation_triplets(dataset: GraphDataset) -> Tensor:
    """Long[T, 3] sorted unique (subject label, object label, predicate) over all GT relations of ``dataset``."""
    rows = [np.zeros((0, 3), dtype=np.int64)]
    for g in _graphs(dataset):
        labels = np.asarray(g["labels"], dtype=np.int64)
        rels = np.asarray(g["relations"], dtype=np.int64).reshape(-1, 3)
        rows.append(np.column_stack([labels[rels[:, 0]], labels[rels[:, 1]], rels[:, 2]]))
    return torch.from_numpy(np.unique(np.concatenate(rows), axis=0)).reshape(-1, 3)


def zeroshot_triplets(train_dataset: GraphDataset, test_dataset: GraphDataset) -> Tensor:
    """Long[Z, 3] sorted unique test triplets (subject label, object label, predicate) absent from train."""
    train = relation_triplets(train_dataset)
    test = relation_triplets(test_dataset)
    if test.shape[0] == 0 or train.shape[0] == 0:
        return test
    # One integer key per triplet, so membership is a vectorised isin instead of a Python set.
    base = int(max(train.max(), test.max())) + 1
    key = lambda t: (t[:, 0] * base + t[:, 1]) * base + t[:, 2]  # noqa: E731
    return test[~torch.isin(key(test), key(train))]
