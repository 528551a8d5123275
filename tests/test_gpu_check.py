"""scripts/gpu_check.sh: one line and exit 0 without CUDA; its table's code on the tiny CPU models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from .conftest import REPO
from .test_train_cli import ENV


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0():
    out = subprocess.run(["bash", "scripts/gpu_check.sh"], capture_output=True, text=True, cwd=REPO,
                         env={**ENV, "PYTHON": sys.executable}, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and "no CUDA GPU" in out.stdout


@pytest.mark.slow
def test_gpu_check_table_on_the_tiny_cpu_models():
    out = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--smoke", "--device", "cpu", "--repeats", "1", "--warmup", "0",
         "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "step (s)" not in line]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == [
        "stage 1 detector step", "stage 2 MOTIF baseline step", "stage 2 MOTIF seg-grounded step",
        "SGDet test, 1 image, 40 detections",
    ]  # fmt: skip
    assert all(float(r.split("|")[2]) > 0 for r in rows)
    # each row is also printed the moment it is measured (a run cut off by a time limit keeps what it finished)
    measured = [line for line in out.stdout.splitlines() if line.startswith("measured: ")]
    assert [m.split(": ")[1] for m in measured] == [r.split("|")[1].strip() for r in rows]
    assert all(f"step {float(r.split('|')[2]):.3f} s" in m for m, r in zip(measured, rows, strict=True))
