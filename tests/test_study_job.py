"""scripts/study_job.sh: the study's one-job runner (train resumably, test, all-zero re-test, archive, DONE).

Run with a stand-in Python that records its arguments (and fails on request), so the commands the script
runs, their order, the resume and the DONE marker are checked without training anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "study_job.sh"


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    calls = tmp_path / "calls.txt"
    py = tmp_path / "fakepython"
    # every call appends one line: its arguments; FAIL_ON=<module> makes that module's call exit 1; like the
    # real training, a call with hydra.run.dir=D creates D
    py.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        '[ -n "${FAIL_ON:-}" ] && [ "$2" = "$FAIL_ON" ] && exit 1\n'
        'for a in "$@"; do case $a in hydra.run.dir=*) mkdir -p "${a#hydra.run.dir=}";; esac; done\n'
        "exit 0\n"
    )
    py.chmod(0o755)
    det = tmp_path / "det.pt"
    det.write_bytes(b"x")
    return {"calls": calls, "py": py, "det": det, "study": tmp_path / "study"}


def run_job(fake, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PY": str(fake["py"]),
        "DETECTOR": str(fake["det"]),
        "STUDY_DIR": str(fake["study"]),
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True)


def calls(fake) -> list[list[str]]:
    if not fake["calls"].exists():
        return []
    return [line.split() for line in fake["calls"].read_text().splitlines()]


def test_grounded_sgdet_job_trains_tests_retests_and_marks_done(fake):
    res = run_job(fake, "synthetic_motif", "sgdet", "refine", "2", "model.foo=1")
    assert res.returncode == 0, res.stderr
    job = fake["study"] / "sgdet_motif_refine_s2"
    train, test, empty = calls(fake)
    assert train[:2] == ["-m", "sgseg.train"]
    for arg in (
        "sweep=study",
        "experiment=synthetic_motif",
        "task=sgdet",
        "row=refine",
        "seed=2",
        "model.trainer.max_epochs=12",
        "model.optim.milestones=[4000]",
        "+model.trainer.val_check_interval=1.0",
        "cpu_fast_kernels=false",
        "num_threads=1",
        "model.sampling.test_require_overlap=false",
        f"detector.checkpoint={fake['det']}",
        f"hydra.run.dir={job}",
    ):
        assert arg in train, arg
    assert train[-1] == "model.foo=1"  # extra overrides last
    assert train[-2] == "ckpt_path=last"  # sgseg.train resumes from the job's last.ckpt if there is one
    assert test == ["-m", "sgseg.evaluate", f"run_dir={job}", "ckpt=last", "num_threads=1"]
    assert empty == test + ["mask_source=empty"]
    assert (job / "DONE").is_file()
    # done: a second call runs nothing
    res = run_job(fake, "synthetic_motif", "sgdet", "refine", "2")
    assert res.returncode == 0 and "nothing to do" in res.stdout
    assert len(calls(fake)) == 3


def test_baseline_resumes_skips_mask_swap_and_archives(fake, tmp_path):
    job = fake["study"] / "sgcls_vctree_joint_s0"
    res = run_job(
        fake, "synthetic_vctree", "sgcls", "joint", "0", ARCHIVE=str(tmp_path / "arch"), THREADS="2"
    )
    assert res.returncode == 0, res.stderr
    train, test, archive = calls(fake)
    assert "num_threads=2" in train and test[-1] == "num_threads=2"  # THREADS: training and test alike
    assert "num_threads=1" not in train
    assert train[-1] == "ckpt_path=last"  # with no extra overrides, the last argument
    assert "+model.trainer.val_check_interval=0.5" in train  # PredCls/SGCls: twice an epoch, as archived
    assert not any(a.startswith("model.sampling.test_require_overlap") for a in train)
    assert "mask_source=empty" not in test  # the baseline reads no masks
    assert archive == [
        "-m",
        "sgseg.results",
        str(job),
        "--checkpoint",
        "last",
        "--archive",
        str(tmp_path / "arch"),
        "--out",
        f"{job}/results",
    ]


def test_failed_training_stops_before_testing_and_leaves_no_done(fake):
    res = run_job(fake, "synthetic_motif", "predcls", "refine", "1", FAIL_ON="sgseg.train", VAL_CHECK="0.25")
    assert res.returncode != 0
    (train,) = calls(fake)
    assert "+model.trainer.val_check_interval=0.25" in train
    assert not (fake["study"] / "predcls_motif_refine_s1" / "DONE").exists()


def test_bad_invocations_are_refused_with_a_reason(fake, tmp_path):
    res = run_job(fake, "synthetic_motif", "sgdet", "refine")
    assert res.returncode == 2 and "usage" in res.stderr
    res = run_job(fake, "synthetic_motif", "sgdet", "refine", "0", DETECTOR=str(tmp_path / "missing.pt"))
    assert res.returncode == 2 and "missing.pt is not a file" in res.stderr
    env = {k: v for k, v in os.environ.items() if k != "DETECTOR"}
    res = subprocess.run(
        ["bash", str(SCRIPT), "synthetic_motif", "sgdet", "refine", "0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "set DETECTOR" in res.stderr
    assert calls(fake) == []


def test_ckpt_path_last_resumes_from_the_fixed_job_directory(tmp_path, capsys):
    """What the script relies on: with a fixed ``hydra.run.dir``, ``ckpt_path=last`` resumes from that directory's
    own ``checkpoints/last.ckpt`` (sgseg.lit.run._resume), and starts fresh when there is none yet."""
    from omegaconf import OmegaConf

    from sgseg.lit.run import _resume

    cfg = OmegaConf.create({"ckpt_path": "last"})
    assert _resume(cfg, tmp_path, None) is None
    assert "starting from scratch" in capsys.readouterr().out
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert _resume(cfg, tmp_path, None) == str(tmp_path / "checkpoints" / "last.ckpt")
