"""The fit wall time of a run: ``sgseg.lit.clock.RunClock`` (timing.json across resumptions) and
``sgseg.results.job_time`` / the job-time table (from timing.json, or from Hydra's train.log for older runs)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sgseg import results as cr
from sgseg.lit import clock
from sgseg.lit.clock import RunClock, read_timing


class _Clock:
    """A stand-in for time.perf_counter that the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _trainer(
    root: Path, step: int = 0, rank_zero: bool = True, ckpt_path: str | None = None
) -> SimpleNamespace:
    return SimpleNamespace(
        default_root_dir=str(root), global_step=step, is_global_zero=rank_zero, ckpt_path=ckpt_path
    )


def test_run_clock_records_segments_across_a_resumption(tmp_path: Path, monkeypatch) -> None:
    now = _Clock()
    monkeypatch.setattr(clock.time, "perf_counter", now)
    # first process: starts at step 0, a step after 30 s does not write (every_s=60), one after 70 s does,
    # then it is killed at step 120 without reaching the end of training
    cb = RunClock(every_s=60)
    trainer = _trainer(tmp_path)
    cb.on_train_start(trainer, None)
    seg = read_timing(tmp_path / "timing.json")[0]
    assert seg["seconds"] == 0.0 and seg["first_step"] == 0 and seg["finished"] is False
    now.t += 30
    trainer.global_step = 50
    cb.on_train_batch_end(trainer, None, None, None, 0)
    assert read_timing(tmp_path / "timing.json")[0]["last_step"] == 0  # not yet rewritten
    now.t += 40
    trainer.global_step = 100
    cb.on_train_batch_end(trainer, None, None, None, 0)
    seg = read_timing(tmp_path / "timing.json")[0]
    assert (seg["seconds"], seg["last_step"]) == (70.0, 100)
    now.t += 12.34
    trainer.global_step = 120
    cb.on_validation_end(trainer, None)  # validation always writes
    assert read_timing(tmp_path / "timing.json")[0]["seconds"] == pytest.approx(82.3)
    # second process (ckpt_path=last): a new segment from the restored step; the first one is kept as it was
    now.t = 5.0
    cb2 = RunClock(every_s=60)
    trainer2 = _trainer(tmp_path, step=100, ckpt_path="last.ckpt")  # resumed from the step-100 checkpoint
    cb2.on_train_start(trainer2, None)
    now.t += 200
    trainer2.global_step = 400
    cb2.on_train_end(trainer2, None)
    first, second = read_timing(tmp_path / "timing.json")
    assert (first["seconds"], first["last_step"], first["finished"]) == (pytest.approx(82.3), 120, False)
    assert (second["seconds"], second["first_step"], second["last_step"], second["finished"]) == (
        200.0,
        100,
        400,
        True,
    )
    # after the end the callback writes nothing more (a later validation of trainer.test is not training)
    now.t += 50
    cb2.on_validation_end(trainer2, None)
    assert read_timing(tmp_path / "timing.json")[1]["seconds"] == 200.0
    jt = cr.job_time(tmp_path)
    assert (jt.source, jt.segments, jt.unknown, jt.seconds) == ("timing.json", 2, 0, pytest.approx(282.3))
    assert not list(tmp_path.glob("*.tmp"))
    # resumed into a new folder (ckpt_path=last from a new Hydra run directory): the record continues from the
    # checkpoint's folder; the earlier folder's file is left as it was
    other = tmp_path / "next_run"
    cb4 = RunClock()
    cb4.on_train_start(_trainer(other, step=400, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt")), None)
    assert [s["first_step"] for s in read_timing(other / "timing.json")] == [0, 100, 400]
    assert len(read_timing(tmp_path / "timing.json")) == 2
    # a fresh fit in the same folder (no ckpt_path) starts a new record, as it overwrites the checkpoints
    now.t = 0.0
    cb3 = RunClock()
    cb3.on_train_start(_trainer(tmp_path), None)
    (only,) = read_timing(tmp_path / "timing.json")
    assert (only["seconds"], only["first_step"]) == (0.0, 0)


def test_run_clock_writes_on_rank_zero_only_and_checks_its_arguments(tmp_path: Path) -> None:
    cb = RunClock()
    cb.on_train_start(_trainer(tmp_path, rank_zero=False), None)
    cb.on_validation_end(_trainer(tmp_path, rank_zero=False), None)
    assert not (tmp_path / "timing.json").exists()
    with pytest.raises(ValueError, match="every_s"):
        RunClock(every_s=0)


def test_a_bad_timing_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "timing.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="timing.json.*delete it"):
        RunClock().on_train_start(_trainer(tmp_path, ckpt_path="last.ckpt"), None)
    bad.write_text(json.dumps({"segments": [{"start": "x"}]}))
    with pytest.raises(ValueError, match="expected"):
        read_timing(bad)


LOG = """\
[2026-12-03 12:23:00,496][lightning_fabric.utilities.seed][INFO] - Seed set to 1
[2026-12-03 12:23:01,137][pytorch_lightning.utilities.rank_zero][INFO] - GPU available: False, used: False
[2026-12-03 13:09:04,894][lightning_fabric.utilities.seed][INFO] - Seed set to 1
[2026-12-03 13:09:05,271][pytorch_lightning.utilities.rank_zero][INFO] - Restoring states from the checkpoint
[2026-12-03 13:40:00,100][pytorch_lightning.utilities.rank_zero][INFO] - `Trainer.fit` stopped: `max_steps=800` reached.
[2026-12-03 14:10:04,000][pytorch_lightning.utilities.rank_zero][INFO] - `Trainer.fit` stopped: `max_epochs=2` reached.
[2026-12-03 14:10:05,000][pytorch_lightning.utilities.rank_zero][INFO] - Loaded model weights from the checkpoint
"""


def test_job_time_of_an_older_run_from_its_train_log(tmp_path: Path) -> None:
    # a killed first process (no fit-end line: time unknown), then one that trained stage 1 and stage 2:
    # its time runs from "Seed set" to the last fit end, 13:09:04 → 14:10:04 = 3660 s
    (tmp_path / "train.log").write_text(LOG)
    jt = cr.job_time(tmp_path)
    assert (jt.source, jt.segments, jt.unknown, jt.seconds) == ("train.log", 2, 1, 3660.0)
    assert (jt.start, jt.end) == (dt.datetime(2026, 12, 3, 12, 23, 0), dt.datetime(2026, 12, 3, 14, 10, 4))
    # timing.json, where present, wins over the log (stage 1's under detector/ counts too)
    (tmp_path / "detector").mkdir()
    seg = {"start": "2026-12-03T13:09:05", "updated": "2026-12-03T13:40:00", "seconds": 1800.0}
    (tmp_path / "detector" / "timing.json").write_text(json.dumps({"segments": [seg]}))
    seg2 = {"start": "2026-12-03T13:40:10", "updated": "2026-12-03T14:10:04", "seconds": 1790.5}
    (tmp_path / "timing.json").write_text(json.dumps({"segments": [seg2]}))
    jt = cr.job_time(tmp_path)
    assert (jt.source, jt.segments, jt.unknown, jt.seconds) == ("timing.json", 2, 0, 3590.5)
    assert (jt.start, jt.end) == (dt.datetime(2026, 12, 3, 13, 9, 5), dt.datetime(2026, 12, 3, 14, 10, 4))
    assert cr.job_time(tmp_path / "nothing") == cr.JobTime()


def test_job_time_table_sums_per_row(tmp_path: Path) -> None:
    def job(name: str, row: str, seeds_seconds: list[float], start: str) -> None:
        for seed, seconds in enumerate(seeds_seconds):
            path = tmp_path / f"{name}_s{seed}"
            (path / ".hydra").mkdir(parents=True)
            cfg = {"stage": "scene_graph", "seed": seed, "task": {"name": "predcls"}, "experiment_name": "x",
                   "model": {"name": "motif", "grounding": {"node": "none", "edge": "none"}, "refine": False},
                   "detector": {"joint": True, "backbone": {"name": "tiny"}}, "sweep_name": "study"}  # fmt: skip
            if row != "joint":
                cfg["model"].update(
                    grounding={"node": "masks", "edge": "gaussian"}, refine=True, mask_source=row
                )
            (path / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
            (path / ".hydra" / "overrides.yaml").write_text(
                json.dumps([f"row={row}", f"seed={seed}", "sweep=study"])
            )
            (path / "metrics.json").write_text(json.dumps({"predcls/mR@50": 0.5}))
            end = dt.datetime.fromisoformat(start) + dt.timedelta(seconds=seconds)
            seg = {"start": start, "updated": end.isoformat(), "seconds": seconds}
            (path / "timing.json").write_text(json.dumps({"segments": [seg]}))

    job("joint", "joint", [1200, 1800], "2026-12-03T10:00:00")
    job("refine", "transfer", [3600, 4200], "2026-12-03T11:00:00")
    runs = [cr.load_run(p) for p in cr.find_job_dirs([tmp_path])]
    table = cr.table_job_time(runs)
    rows = {r[0]: r[1:] for r in table.rows}
    variants = {r.path.name: r.study_variant for r in runs}
    assert variants == {"joint_s0": "baseline", "joint_s1": "baseline", "refine_s0": "grounded",
                        "refine_s1": "grounded"}  # fmt: skip
    assert rows["study MOTIF PredCls: baseline"] == [2, "0:25", "0:50", 2, 0]
    assert rows["study MOTIF PredCls: grounded"] == [2, "1:05", "2:10", 2, 0]
    assert rows["all"] == [4, "—", "3:00", 4, 0]
    # the baselines train 10:00-10:20 and 10:00-10:30, the grounded runs 11:00-12:00 and 11:00-12:10: at least
    # one job trains for 0:30 + 1:10 = 1:40 of the 2:10 from the first start to the last end
    assert "wall clock with at least one of them training: 1:40" in table.note
    assert "first start to last end: 2:10 from 2026-12-03 10:00" in table.note


def test_busy_seconds_is_the_length_of_the_union() -> None:
    t = dt.datetime(2026, 12, 5, 10, 0)

    def iv(a: float, b: float) -> tuple[dt.datetime, dt.datetime]:
        return t + dt.timedelta(minutes=a), t + dt.timedelta(minutes=b)

    assert cr.busy_seconds([]) == 0.0
    # [0, 30] ∪ [10, 20] (inside) ∪ [25, 40] (overlapping) = [0, 40]; [50, 60] after a gap; [60, 65] touching
    assert cr.busy_seconds([iv(50, 60), iv(10, 20), iv(0, 30), iv(60, 65), iv(25, 40)]) == 55 * 60
    assert cr.busy_seconds([iv(0, 10), iv(0, 10)]) == 600  # two jobs side by side count once


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
def test_a_real_job_records_both_stages(tiny_sweep) -> None:
    # the tiny sweep's jobs train stage 1 (into detector/) and stage 2 (the run directory), one process each
    for job in tiny_sweep.jobs.values():
        for stage_dir in (job / "detector", job):
            (seg,) = read_timing(stage_dir / "timing.json")
            assert seg["finished"] is True and seg["first_step"] == 0 and seg["last_step"] > 0, (
                stage_dir,
                seg,
            )
            assert 0 < seg["seconds"] <= (dt.datetime.fromisoformat(seg["updated"])
                                          - dt.datetime.fromisoformat(seg["start"])).total_seconds() + 1  # fmt: skip
        jt = cr.job_time(job)
        assert (jt.source, jt.segments, jt.unknown) == ("timing.json", 2, 0)
