"""``scripts/edge_mask_inputs.py``: how often a trained edge grounding's mask input m_{j,j'} is (nearly) empty."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sgseg.models.grounding import AvgEdgeGrounding, GaussianEdgeGrounding, UnionEdgeGrounding

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("edge_mask_inputs", REPO / "scripts" / "edge_mask_inputs.py")
edge_mask_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(edge_mask_inputs)

KW = dict(in_channels=2, num_mask_channels=1, hidden_dim=8, out_dim=4, roi_size=8, pool_size=2)


def test_summary_by_hand():
    maxima = np.array([0.0, 0.02, 0.5, 1.0])
    s = edge_mask_inputs.summarise(maxima, [0.01, 0.05, 0.6])
    assert s == {"< 0.01": 0.25, "< 0.05": 0.5, "< 0.6": 0.75, "median max": 0.26, "pairs": 4}
    rel = torch.zeros(3, 2, 4, 4)
    rel[0, 1, 2, 3] = 0.7
    rel[2, 0, 0, 0] = 0.2
    assert edge_mask_inputs.pair_maxima(rel).tolist() == pytest.approx([0.7, 0.0, 0.2])
    with pytest.raises(ValueError, match="no edge-grounded pair"):
        edge_mask_inputs.summarise(np.zeros(0), [0.1])


def test_recording_sees_what_each_edge_grounding_computes_and_restores_it():
    """Two full-box masks in disjoint boxes: avg's m is ½ in each object's half, union's 1, and the Gaussian
    product of two far-apart objects (σ = 1 cell) is ~0 — the recorded maxima are those, the wrapper returns the
    module's own output, and the class methods are the originals again afterwards."""
    masks = torch.ones(2, 1, 8, 8)
    boxes = torch.tensor([[0.0, 0, 10, 10], [90.0, 90, 100, 100]])
    pairs = torch.tensor([[0, 1]])
    maxima = []
    classes = (edge_mask_inputs.edge._MaskEdgeGrounding, GaussianEdgeGrounding)
    originals = [cls.__dict__["relation_masks"] for cls in classes]
    with edge_mask_inputs.recording(maxima):
        outs = [
            m.relation_masks(masks, boxes, pairs, torch.rand(2, 3))
            for m in (AvgEdgeGrounding(**KW), UnionEdgeGrounding(**KW), GaussianEdgeGrounding(num_label_classes=3, **KW))
        ]  # fmt: skip
    assert [cls.__dict__["relation_masks"] for cls in classes] == originals
    got = np.concatenate(maxima)
    assert got[:2] == pytest.approx([0.5, 1.0], abs=1e-6) and got[2] < 1e-6
    assert [float(o.detach().flatten(1).amax()) for o in outs] == pytest.approx(got.tolist(), abs=1e-6)


def _script(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "edge_mask_inputs.py"), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip


def test_on_a_trained_run(tiny_sweep, tmp_path):
    """The seg-grounded tiny run (Gaussian edges) re-tested on its validation images: a row with every pair f_E
    saw, shares that grow with the threshold; the baseline's edges are not mask-grounded: one clear line."""
    # a private copy of the job: under xdist, tests/test_evaluate.py writes into the shared job's evaluate/
    # (and W&B offline) folders at the same time, which the before/after listing below would count
    job = tmp_path / "refine"
    shutil.copytree(tiny_sweep.jobs["refine"], job, ignore=shutil.ignore_patterns("evaluate", "wandb"))
    before = sorted(p for p in job.rglob("*") if p.is_file())
    done = _script(job, "--thresholds", "0.01", "0.5", "1.01")
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {job.name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "GaussianEdgeGrounding" and int(cells[2]) > 0
    shares = [float(re.sub(" %", "", c)) for c in cells[3:6]]
    assert shares == sorted(shares) and shares[2] == 100.0  # every m_{j,j'} is at most 1
    assert 0.0 <= float(cells[6]) <= 1.0
    assert (
        sorted(p for p in job.rglob("*") if p.is_file()) == before
    )  # the re-test went to a temporary folder

    base = _script(tiny_sweep.jobs["base"])
    assert base.returncode == 2 and "not on masks" in base.stderr and "Traceback" not in base.stderr
    missing = _script(tmp_path)
    assert missing.returncode == 2 and "not a run directory" in missing.stderr
