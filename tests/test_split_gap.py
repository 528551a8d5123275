"""``scripts/split_gap.py``: grounded − baseline per seed on validation, test, test seen and test zero-shot."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("split_gap", REPO / "scripts" / "split_gap.py")
split_gap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split_gap)


def _write(run, suffix, ids, num_rel, hits50, pred_count, pred_hits50):
    """One per-image file: two images, two predicates; hits at K = 20 / 50 / 100 all equal to ``hits50``."""
    folder = run / "evaluate" / f"predcls-last{suffix}"
    folder.mkdir(parents=True)
    hits = np.repeat(np.array(hits50, dtype=np.int32)[:, None], 3, 1)
    pred_hits = np.repeat(np.array(pred_hits50, dtype=np.int32)[:, None, :], 3, 1)
    np.savez(folder / "predcls_per_image.npz", image_id=np.array(ids, dtype=np.int32),
             counted=np.array(num_rel) > 0, num_rel=np.array(num_rel, dtype=np.int32), hits=hits,
             pred_count=np.array(pred_count, dtype=np.int32), pred_hits=pred_hits, ks=np.array([20, 50, 100]),
             mode=np.array("predcls"), predicate_names=np.array(["on", "near"]))  # fmt: skip


def test_split_gap_hand_worked(tmp_path, capsys):
    base, ground = tmp_path / "joint_s0", tmp_path / "refine_s0"
    for suffix in split_gap.SETS.values():
        # baseline: image 1 has 2 "on" (1 hit), image 2 has 2 "near" (2 hits): R@50 = (½ + 1)/2 = 75 %,
        # mR@50 = (½ + 1)/2 = 75 %; grounded hits everything: 100 %, +25.0 on both
        _write(base, suffix[0], [1, 2], [2, 2], [1, 2], [[2, 0], [0, 2]], [[1, 0], [0, 2]])
        _write(ground, suffix[0], [1, 2], [2, 2], [2, 2], [[2, 0], [0, 2]], [[2, 0], [0, 2]])
    split_gap.main(["--baseline", str(base), "--grounded", str(ground), "--bootstrap", "200"])
    out = capsys.readouterr().out
    for name in ("val", "test", "test seen", "test zero-shot"):
        for metric in ("mR@50", "R@50"):
            block = out.split(f"**{metric}**")[1].split("**")[0]
            row = next(line for line in block.splitlines() if line.startswith(f"| {name} |"))
            assert "| 2 | 75.0 → 100.0: +25.0 [" in row, row
            # the resamples: 0, 1 or 2 copies of image 1 → +0, +25 or +50 (R@50); the mean over one seed is it
            low, high = (float(x) for x in row.split("[")[1].split("]")[0].split(","))
            assert 0.0 <= low <= 25.0 <= high <= 50.0


def test_split_gap_names_the_missing_re_test(tmp_path):
    base, ground = tmp_path / "joint_s0", tmp_path / "refine_s0"
    for run in (base, ground):
        _write(run, "", [1, 2], [2, 2], [1, 2], [[2, 0], [0, 2]], [[1, 0], [0, 2]])
    with pytest.raises(SystemExit, match=r"predcls-last-val/predcls_per_image.npz not found: run python -m "
                       r"sgseg.evaluate run_dir=.*joint_s0 ckpt=last split=val"):  # fmt: skip
        split_gap.main(["--baseline", str(base), "--grounded", str(ground)])
    with pytest.raises(SystemExit, match="pair them seed by seed"):
        split_gap.main(["--baseline", str(base), "--grounded", str(ground), str(ground)])
