"""``scripts/split_gap.py``: grounded − baseline per seed on validation, test, test seen and test zero-shot."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("split_gap", REPO / "scripts" / "split_gap.py")
split_gap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split_gap)


def _k3(a, axis=1):
    """The same counts at K = 20 / 50 / 100."""
    return np.repeat(np.expand_dims(np.array(a, dtype=np.int32), axis), 3, axis)


def _write(run, suffix, ids, num_rel, hits50, pred_count, pred_hits50, zs=None):
    """One per-image file: two images, two predicates; hits at K = 20 / 50 / 100 all equal to ``hits50``;
    ``zs``: the zero-shot split (num_zs, zs_hits50, zs_pred_count, zs_pred_hits50) of tests written since it
    exists."""
    folder = run / "evaluate" / f"predcls-last{suffix}"
    folder.mkdir(parents=True)
    split = {}
    if zs is not None:
        num_zs, zs_hits50, zs_count, zs_pred_hits50 = zs
        split = {"num_zs": np.array(num_zs, dtype=np.int32), "zs_hits": _k3(zs_hits50),
                 "zs_pred_count": np.array(zs_count, dtype=np.int32), "zs_pred_hits": _k3(zs_pred_hits50)}  # fmt: skip
    np.savez(folder / "predcls_per_image.npz", image_id=np.array(ids, dtype=np.int32),
             counted=np.array(num_rel) > 0, num_rel=np.array(num_rel, dtype=np.int32), hits=_k3(hits50),
             pred_count=np.array(pred_count, dtype=np.int32), pred_hits=_k3(pred_hits50), ks=np.array([20, 50, 100]),
             mode=np.array("predcls"), predicate_names=np.array(["on", "near"]), **split)  # fmt: skip


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


def _row(out, metric, name):
    block = out.split(f"**{metric}**")[1].split("**")[0]
    return next(line for line in block.splitlines() if line.startswith(f"| {name} |"))


def test_seen_and_zero_shot_sets_cut_from_the_test_without_re_tests(tmp_path, capsys):
    """Tests that hold the zero-shot split need no relations= re-test. Image 1: two "on" rows, the second one a
    zero-shot triplet; image 2: two seen "near" rows. The baseline misses image 1's zero-shot row and hits the
    rest: seen R@50 = mR@50 = 100, zero-shot (image 1 only) 0; the grounded run hits everything: zero-shot R@50
    100, mR@50 (1 + 0) / 2 = 50 ("near" has no zero-shot row and scores 0, as absent predicates do)."""
    base, ground = tmp_path / "joint_s0", tmp_path / "refine_s0"
    for suffix in ("", "-val"):
        _write(base, suffix, [1, 2], [2, 2], [1, 2], [[2, 0], [0, 2]], [[1, 0], [0, 2]],
               zs=([1, 0], [0, 0], [[1, 0], [0, 0]], [[0, 0], [0, 0]]))  # fmt: skip
        _write(ground, suffix, [1, 2], [2, 2], [2, 2], [[2, 0], [0, 2]], [[2, 0], [0, 2]],
               zs=([1, 0], [1, 0], [[1, 0], [0, 0]], [[1, 0], [0, 0]]))  # fmt: skip
    split_gap.main(["--baseline", str(base), "--grounded", str(ground), "--bootstrap", "100"])
    out = capsys.readouterr().out
    assert "| 2 | 100.0 → 100.0: +0.0 [+0.0, +0.0]" in _row(out, "mR@50", "test seen")
    assert "| 2 | 100.0 → 100.0: +0.0 [+0.0, +0.0]" in _row(out, "R@50", "test seen")
    # the resamples draw from both images: without image 1 (a quarter of them) neither run scores a zero-shot
    # row (mR 0 − 0), with it the difference is +50
    assert "| 1 | 0.0 → 50.0: +50.0 [+0.0, +50.0]" in _row(out, "mR@50", "test zero-shot")
    # R@50 is undefined in the resamples without image 1 (no zero-shot row): left out, the rest read +100
    assert "| 1 | 0.0 → 100.0: +100.0 [+100.0, +100.0]" in _row(out, "R@50", "test zero-shot")
    assert "| 2 | 75.0 → 100.0: +25.0 [" in _row(out, "R@50", "test")


def test_counts_without_the_split_name_the_re_test_to_run(tmp_path):
    base, ground = tmp_path / "joint_s0", tmp_path / "refine_s0"
    for run in (base, ground):
        for suffix in ("", "-val"):
            _write(run, suffix, [1, 2], [2, 2], [1, 2], [[2, 0], [0, 2]], [[1, 0], [0, 2]])
    with pytest.raises(SystemExit, match=r"predcls-last-seen-relations/predcls_per_image.npz not found and .*"
                       r"holds no zero-shot split: run python -m sgseg.evaluate run_dir=.*joint_s0 ckpt=last "
                       r"relations=seen"):  # fmt: skip
        split_gap.main(["--baseline", str(base), "--grounded", str(ground)])
    from sgseg.evaluation.scene_graph import recall_from_per_image

    with np.load(base / "evaluate" / "predcls-last" / "predcls_per_image.npz") as f:
        data = dict(f)
    with pytest.raises(ValueError, match="without the zero-shot split .* relations=zeroshot"):
        recall_from_per_image(data, 50, relations="zeroshot")
    with pytest.raises(ValueError, match="relations='unseen': one of all, seen, zeroshot"):
        recall_from_per_image(data, 50, relations="unseen")
