"""Frequency statistics and zero-shot triplets on a hand-built VG dataset; cache keying and invalidation."""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import sgseg.data.statistics as st
from sgseg.data.visual_genome import VisualGenome
from tests.vg_format import write_vg_dataset

# boxes_1024 rows (cx, cy, w, h) and their decoded xyxy in the 1024 frame:
P0 = [5, 5, 10, 10]  # 0, 0, 10, 10
P1 = [10, 10, 10, 10]  # 5, 5, 15, 15     overlaps P0 (intersection 5·5 = 25)
P2 = [105, 5, 10, 10]  # 100, 0, 110, 10
P3 = [115, 5, 10, 10]  # 110, 0, 120, 10  only touches P2 at x = 110: intersection 0, *not* overlapping
P4 = [505, 505, 10, 10]  # 500, 500, 510, 510

IMAGES = [
    # val (first train image, num_val=1): must not be counted.
    {"width": 800, "height": 600, "labels": [7, 8], "boxes_1024": [P0, P1], "relations": [(0, 1, 9)]},
    # A: overlapping ordered pairs (0,1), (1,0) → bg[1,2], bg[2,1].
    #    relations → fg[1,2,5], fg[1,2,7], fg[3,1,3], fg[4,3,5].
    {"width": 800, "height": 600, "labels": [1, 2, 3, 4], "boxes_1024": [P0, P1, P2, P3],
     "relations": [(0, 1, 5), (0, 1, 7), (2, 0, 3), (3, 2, 5)]},
    # B: no overlapping pair → fallback to all ordered pairs (0,1), (1,0) → bg[2,2] += 2.
    #    relations → fg[2,2,5] += 2.
    {"width": 800, "height": 600, "labels": [2, 2], "boxes_1024": [P0, P4], "relations": [(0, 1, 5), (1, 0, 5)]},
    # C: identical boxes overlap → bg[1,2], bg[2,1]; the duplicated relation counts twice → fg[1,2,5] += 2.
    {"width": 800, "height": 600, "labels": [1, 2], "boxes_1024": [P0, P0], "relations": [(0, 1, 5), (0, 1, 5)]},
    # test images: (1,2,5) and (4,3,5) occur in train, (2,1,9) and (3,4,5) do not.
    {"width": 800, "height": 600, "labels": [1, 2], "boxes_1024": [P0, P1], "split": 2,
     "relations": [(0, 1, 5), (1, 0, 9), (1, 0, 9)]},
    {"width": 800, "height": 600, "labels": [3, 4], "boxes_1024": [P2, P3], "split": 2,
     "relations": [(1, 0, 5), (0, 1, 5)]},
]  # fmt: skip


def _hand_counts() -> tuple[torch.Tensor, torch.Tensor]:
    fg = torch.zeros(151, 151, 51, dtype=torch.long)
    for s, o, p, n in [(1, 2, 5, 3), (1, 2, 7, 1), (3, 1, 3, 1), (4, 3, 5, 1), (2, 2, 5, 2)]:
        fg[s, o, p] = n
    bg = torch.zeros(151, 151, dtype=torch.long)
    bg[1, 2], bg[2, 1], bg[2, 2] = 2, 2, 2
    return fg, bg


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    write_vg_dataset(tmp_path, IMAGES)
    return tmp_path


def test_statistics_equal_hand_counts(root: Path) -> None:
    train = VisualGenome(root, split="train", num_val=1)
    stats = st.compute_frequency_statistics(train)
    fg, bg = _hand_counts()
    assert stats.fg_matrix.dtype == torch.long and stats.fg_matrix.shape == (151, 151, 51)
    assert torch.equal(stats.fg_matrix, fg) and torch.equal(stats.bg_matrix, bg)
    assert int(stats.fg_matrix.sum()) == 8  # every train relation, duplicates included
    # Reference table: fg[1, 2, :] = {0: bg + 1 = 3, 5: 3, 7: 1}, total 7.
    dist = stats.predicate_log_distribution()
    assert dist.shape == (151, 151, 51) and dist.dtype == torch.float32
    assert dist[1, 2, 0].item() == pytest.approx(math.log(3 / 7 + 1e-3), rel=1e-6)
    assert dist[1, 2, 7].item() == pytest.approx(math.log(1 / 7 + 1e-3), rel=1e-6)
    assert dist[1, 2, 1].item() == pytest.approx(math.log(1e-3), rel=1e-6)
    assert dist[9, 9, 0].item() == pytest.approx(math.log(1 + 1e-3), rel=1e-6)  # unseen pair: all background


def test_overlapping_pairs_touching_and_fallback() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [15, 0, 20, 5], [100, 100, 101, 101]])
    # (1, 2) touch at x = 15 (intersection width 0) → only (0, 1) and (1, 0).
    assert st.overlapping_pairs(boxes).tolist() == [[0, 1], [1, 0]]
    assert st.overlapping_pairs(boxes[2:]).tolist() == [[0, 1], [1, 0]]  # none overlap: all pairs
    assert st.overlapping_pairs(boxes[:1]).shape == (0, 2)  # a single box has no pair
    assert len(st.overlapping_pairs(boxes, must_overlap=False)) == 12


def test_zeroshot_triplets(root: Path) -> None:
    train = VisualGenome(root, split="train", num_val=1)
    test = VisualGenome(root, split="test")
    z = st.zeroshot_triplets(train, test)
    assert z.dtype == torch.long and z.tolist() == [[2, 1, 9], [3, 4, 5]]
    assert st.relation_triplets(train).tolist() == [[1, 2, 5], [1, 2, 7], [2, 2, 5], [3, 1, 3], [4, 3, 5]]
    assert st.zeroshot_triplets(train, train).shape == (0, 3)


def test_cache_hit_and_invalidation(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = VisualGenome(root, split="train", num_val=1)
    stats = st.frequency_statistics(train)
    files = list((root / "cache").glob("freq_stats_*.pt"))
    assert len(files) == 1
    calls = []
    real = st.compute_frequency_statistics
    monkeypatch.setattr(st, "compute_frequency_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = st.frequency_statistics(VisualGenome(root, split="train", num_val=1))
    assert calls == [] and torch.equal(again.fg_matrix, stats.fg_matrix)  # served from the cache
    # Other split parameters → another key.
    st.frequency_statistics(VisualGenome(root, split="train", num_val=0))
    assert calls == [1] and len(list((root / "cache").glob("freq_stats_*.pt"))) == 2
    # Edit one predicate in place (same size) and restore the mtime: the content hash still changes the key.
    train.close()  # h5py refuses to open a file for writing while this process reads it
    h5 = root / "VG-SGG-with-attri.h5"
    before = h5.stat()
    with h5py.File(h5, "a") as f:
        f["predicates"][1, 0] = 11  # image A's first relation (1, 2, 5) → (1, 2, 11)
    os.utime(h5, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert h5.stat().st_size == before.st_size and h5.stat().st_mtime_ns == before.st_mtime_ns
    fresh = st.frequency_statistics(VisualGenome(root, split="train", num_val=1))
    assert calls == [1, 1]
    assert fresh.fg_matrix[1, 2, 5] == 2 and fresh.fg_matrix[1, 2, 11] == 1


def test_corrupt_cache_is_recomputed(root: Path) -> None:
    train = VisualGenome(root, split="train", num_val=1)
    st.frequency_statistics(train)
    (path,) = (root / "cache").glob("freq_stats_*.pt")
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable statistics cache"):
        stats = st.frequency_statistics(train)
    assert torch.equal(stats.fg_matrix, _hand_counts()[0])
    assert torch.equal(
        st.frequency_statistics(train).bg_matrix, _hand_counts()[1]
    )  # rewritten, loads cleanly


def test_file_fingerprint_sampled_for_large_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "_FULL_HASH_LIMIT", 10)
    monkeypatch.setattr(st, "_CHUNK", 4)
    monkeypatch.setattr(st, "_NUM_SAMPLES", 4)
    f = tmp_path / "big.bin"
    f.write_bytes(bytes(range(64)))
    a = st.file_fingerprint(f)
    f.write_bytes(bytes([0] * 16) + bytes(range(16, 64)))  # sample 0 (bytes 0..3) changes
    b = st.file_fingerprint(f)
    assert a["size"] == b["size"] == 64 and a["hash"] != b["hash"]
