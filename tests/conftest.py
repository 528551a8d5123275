"""Shared test fixtures: small threads, paths to ../shared/data, tiny temp datasets."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)  # as the runners do (sgseg.lit.build.configure_torch)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference samples (never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@contextmanager
def once_per_session(tmp_path_factory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder that every xdist worker of this test session shares, filled once: yields ``(folder, build)``
    with a lock held, ``build`` true for the first worker to get here (the folder is then empty; it is marked
    done when the block exits without an error). The other workers wait at the lock, then read.

    ``xdist_group`` alone does not keep tests together with pytest 9 + xdist 3.8 (xdist tags the group onto
    ``item._nodeid``, which pytest 9 no longer reads), so a module- or session-scoped fixture would otherwise
    be built once per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above the workers' own
    root = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build = not (root / "done").is_file()
        if build:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
        yield root, build
        if build:
            (root / "done").write_text("")


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A two-job sweep of the whole pipeline on a tiny synthetic set, trained in about a minute per job:
    ``row=base`` (baseline on a VG-only detector) and ``row=refine`` (seg-grounded, joint detector), W&B
    offline, stdout to a file (not a terminal: the progress lines) with a line per step; ``jobs``: row → job
    directory.

    Trained once per test session (:func:`once_per_session`): the first worker trains, the others wait, then
    read."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from .test_scene_graph_module import TINY_OVERRIDES

    with once_per_session(tmp_path_factory, "tiny_sweep") as (root, build):
        sweep = root / "sweep"
        if build:
            env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore",
                   "PYTHONPATH": str(REPO)}  # fmt: skip
            cmd = [sys.executable, "-m", "sgseg.train", "-m", f"paths.data_dir={root / 'data'}",
                   f"paths.log_dir={root / 'logs'}", f"hydra.sweep.dir={sweep}", "num_threads=1",
                   *TINY_OVERRIDES, "+row=base,refine", "callbacks.progress_bar.interval_s=0"]  # fmt: skip
            with open(root / "log.txt", "w") as out:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                                      timeout=900)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
    log = (root / "log.txt").read_text()
    assert not list(sweep.glob("*/FAILED.txt")), log[-3000:]
    jobs = {}
    for metrics in sweep.glob("*/metrics.json"):
        overrides = (metrics.parent / ".hydra" / "overrides.yaml").read_text()
        jobs["base" if "+row=base" in overrides else "refine"] = metrics.parent
    assert set(jobs) == {"base", "refine"}, log[-3000:]
    return SimpleNamespace(root=root, sweep=sweep, jobs=jobs, log=log, data=root / "data")
