"""The entry point as a user runs it: config printing, the pipeline, kill-and-resume, sweep failure isolation."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO
from .test_scene_graph_module import TINY_OVERRIDES

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}


def _cmd(tmp_path: Path, *extra: str, multirun: bool = False) -> list[str]:
    return [
        sys.executable, "-m", "sgseg.train", *(["-m"] if multirun else []), f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}",
        "logger.wandb=null", "num_threads=1", *TINY_OVERRIDES, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config():
    out = subprocess.run(
        [sys.executable, "-m", "sgseg.train", "--cfg", "job", "task=sgcls", "model/context=vctree"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "name: sgcls" in out.stdout and "VCTreeContext" in out.stdout and "stage: pipeline" in out.stdout


def test_predict_without_run_dir_or_images_is_one_clear_line(tmp_path):
    def predict(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sgseg.predict", f"out={tmp_path / 'preds'}", *args],
            capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
        )  # fmt: skip

    for args, missing in [((), "run_dir and images"), ((f"run_dir={tmp_path}",), "images")]:
        out = predict(*args)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert f"sgseg.predict: {missing} required" in out.stderr
    # both given, but run_dir is no training run: the loader's one line
    out = predict(f"run_dir={tmp_path}", f"images={tmp_path}")
    assert out.returncode == 1 and "config.yaml not found" in out.stderr
    # a run directory, but images names nothing / a folder without images
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("task: {}\n")
    (tmp_path / "empty").mkdir()
    for images, says in [
        (tmp_path / "nope.jpg", "no such file or directory"),
        (tmp_path / "empty", "no .jpg"),
    ]:
        out = predict(f"run_dir={tmp_path / 'run'}", f"images={images}")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert says in out.stderr, out.stderr
    # the checks come before Hydra makes its run dir: no usage error leaves <out>/.hydra_logs behind
    assert not (tmp_path / "preds").exists()


@pytest.mark.slow
def test_missing_detector_checkpoint_is_one_clear_line(tmp_path):
    out = subprocess.run(
        _cmd(tmp_path, "stage=scene_graph", f"detector.checkpoint={tmp_path / 'nope.pt'}"),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "detector.checkpoint=" in out.stderr and "not found" in out.stderr


@pytest.mark.slow
def test_missing_detector_init_is_one_clear_line(tmp_path):
    out = subprocess.run(
        _cmd(tmp_path, "stage=detector", f"detector.init={tmp_path / 'model_final_2d9806.pkl'}"),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "detector.init=" in out.stderr and "not found" in out.stderr


@pytest.mark.slow
def test_pipeline_then_kill_and_resume_with_ckpt_path_last(tmp_path):
    """Stage 1 + stage 2 end to end; then a stage-2 run killed mid-epoch continues with ``ckpt_path=last``."""
    steps = [
        "model.trainer.max_epochs=3",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    full = subprocess.run(
        _cmd(tmp_path, *steps, "stage=detector"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=600,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    detector = next((tmp_path / "logs").rglob("detector/detector.pt"))
    stage2 = _cmd(tmp_path, *steps, "stage=scene_graph", f"detector.checkpoint={detector}")
    proc = subprocess.Popen(
        stage2, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 400
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in (tmp_path / "logs").rglob("checkpoints/last.ckpt") if "detector" not in p.parts]
        if found:
            last = found[0]
            break
        time.sleep(0.5)
    assert last is not None, "stage 2 never wrote checkpoints/last.ckpt"
    proc.send_signal(signal.SIGKILL)  # a hard kill: no teardown, no final checkpoint
    proc.wait()
    killed_dir = last.parent.parent
    assert not (killed_dir / "metrics.json").exists()
    resumed = subprocess.run(
        stage2 + ["ckpt_path=last"], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout
    new_dirs = [p.parent for p in (tmp_path / "logs").rglob("metrics.json")]
    assert len(new_dirs) == 1 and new_dirs[0] != killed_dir
    metrics = json.loads((new_dirs[0] / "metrics.json").read_text())
    assert 0.0 <= metrics["predcls/mR@50"] <= 1.0
    assert "mR" in resumed.stdout and "run directory:" in resumed.stdout

    # and the trained run predicts scene graphs for an image file (a picture and a JSON per image)
    image = next((tmp_path / "data").rglob("VG_100K/*.jpg"))
    pred = subprocess.run(
        [sys.executable, "-m", "sgseg.predict", f"run_dir={new_dirs[0]}", f"images={image}",
         f"out={tmp_path / 'preds'}", "min_score=0.0"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300,
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr[-3000:]
    record = json.loads((tmp_path / "preds" / f"{image.stem}.json").read_text())
    assert len(record["objects"]) > 0 and all(len(o["box"]) == 4 for o in record["objects"])
    assert all(r["subject"] != r["object"] for r in record["relations"])
    assert (tmp_path / "preds" / f"{image.stem}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_pipeline_stage_two_equals_stage_two_alone_on_its_detector(tmp_path):
    """Each stage starts from the run's seed: the pipeline's stage 2 and `stage=scene_graph` on the detector the
    pipeline trained end with the same weights, bit for bit (one thread each)."""
    import torch

    common = ["model.trainer.max_epochs=1", "callbacks.progress_bar=null"]
    pipe = subprocess.run(
        _cmd(tmp_path, *common), capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600
    )
    assert pipe.returncode == 0, pipe.stderr[-3000:]
    pipe_dir = next((tmp_path / "logs").rglob("metrics.json")).parent
    alone_logs = tmp_path / "alone"
    alone_cmd = [
        f"paths.log_dir={alone_logs}" if a.startswith("paths.log_dir=") else a
        for a in _cmd(
            tmp_path,
            *common,
            "stage=scene_graph",
            f"detector.checkpoint={pipe_dir / 'detector' / 'detector.pt'}",
        )
    ]
    alone = subprocess.run(alone_cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    alone_dir = next(alone_logs.rglob("metrics.json")).parent
    a, b = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for d in (pipe_dir, alone_dir)
    )
    assert a.keys() == b.keys()
    trained = [k for k in a if not k.startswith("model.detector.")]
    assert trained and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((pipe_dir / "metrics.json").read_text()) == json.loads(
        (alone_dir / "metrics.json").read_text()
    )


@pytest.mark.slow
def test_multirun_failing_job_does_not_stop_the_sweep(tmp_path):
    out = subprocess.run(
        _cmd(tmp_path, "stage=scene_graph", "detector.checkpoint=/nonexistent/a.pt,/nonexistent/b.pt",
             f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    failed = sorted((tmp_path / "sweep").glob("*/FAILED.txt"))
    assert len(failed) == 2  # both jobs ran and recorded their failure
    assert "a.pt" in failed[0].read_text() and "b.pt" in failed[1].read_text()


def test_wandb_logger_offline_named_by_overrides_and_tagged(tmp_path, monkeypatch):
    """The default loggers: CSV always, W&B offline (no network), grouped by experiment, tagged by task."""
    from hydra import compose, initialize_config_dir
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from sgseg.lit.factory import loggers as _loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=synthetic_vctree", "task=sgcls", f"paths.data_dir={tmp_path}",
                                f"paths.output_dir={tmp_path}"],
        )  # fmt: skip
    csv, wandb = _loggers(cfg, tmp_path, "scene_graph")
    assert isinstance(csv, CSVLogger) and isinstance(wandb, WandbLogger)
    init = wandb._wandb_init
    assert wandb._offline
    assert init["group"] == "synthetic_vctree"
    assert {"sgcls", "vctree", "synthetic"} <= set(init["tags"])
    assert init["config"]["model"]["context"]["_target_"].endswith("VCTreeContext")  # the whole run config
    assert type(init["config"]) is dict  # plain containers: wandb.init cannot take a DictConfig
    run = wandb.experiment  # starts the offline run
    assert run.config["task"]["name"] == "sgcls"
    run.finish()


@pytest.mark.slow
def test_two_job_multirun_writes_two_metrics_files_and_collects(tmp_path):
    """A tiny two-seed sweep of the whole pipeline; sgseg.results reads both jobs."""
    out = subprocess.run(
        _cmd(tmp_path, "seed=0,1", "model.trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
             multirun=True),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(metrics) == 2 and not list((tmp_path / "sweep").glob("*/FAILED.txt"))
    values = [json.loads(m.read_text())["predcls/mR@50"] for m in metrics]
    assert all(0.0 <= v <= 1.0 for v in values)
    table = subprocess.run(
        [sys.executable, "-m", "sgseg.results", str(tmp_path / "sweep"), "--out", str(tmp_path / "tables")],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    assert (tmp_path / "tables" / "results.md").is_file()
    # the mean of the two seeds' mR@50 (in %) is in the printed tables
    assert f"{100 * sum(values) / 2:.1f}" in table.stdout


@pytest.mark.slow
def test_sigterm_stops_the_whole_sweep(tmp_path):
    """A scheduler's SIGTERM during a job ends the sweep (it is not recorded as one failed job)."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        _cmd(tmp_path, "seed=0,1", f"hydra.sweep.dir={sweep}", "callbacks.model_checkpoint.every_n_train_steps=1",
             multirun=True),
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while (
        time.time() < deadline
        and proc.poll() is None
        and not list(sweep.glob("0/detector/checkpoints/*.ckpt"))
    ):
        time.sleep(0.2)  # wait until job 0 is inside trainer.fit
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    assert not (sweep / "1").exists()  # job 1 never started
    assert not (sweep / "0" / "FAILED.txt").exists()


@pytest.mark.slow
def test_study_sweep_on_one_detector_and_its_tables(tmp_path):
    """sweep=study end to end: one stage-1 detector, then baseline / grounded / oracle / shuffled for one seed
    (the oracle reads the benchmark's true masks through the real data path); sgseg.results pairs them."""
    out = subprocess.run(
        _cmd(tmp_path, "experiment=synthetic_detector", f"hydra.run.dir={tmp_path / 'det'}"),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    det = tmp_path / "det" / "detector" / "detector.pt"
    out = subprocess.run(
        _cmd(tmp_path, "sweep=study", "experiment=synthetic_motif", f"detector.checkpoint={det}", "seed=0",
             "model.trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_joint_seed0", "1_refine_seed0", "2_oracle_seed0", "3_shuffled_seed0"]
    assert not list((tmp_path / "sweep").glob("*/FAILED.txt"))
    assert all((tmp_path / "sweep" / j / "predcls_per_image.npz").is_file() for j in jobs)
    # every job recorded the detector it was trained on, by content
    digest = hashlib.sha256(det.read_bytes()).hexdigest()
    for j in jobs:
        source = json.loads((tmp_path / "sweep" / j / "detector_source.json").read_text())
        assert source["sha256"] == digest and source["checkpoint"] == str(det.resolve())
        assert source["metrics"] == json.loads((det.parent / "detector_metrics.json").read_text())
    table = subprocess.run(
        [sys.executable, "-m", "sgseg.results", str(tmp_path / "sweep"), "--out", str(tmp_path / "tables"),
         "--bootstrap", "50"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    for row in ("baseline", "grounded", "oracle", "shuffled"):
        mr50 = json.loads((tmp_path / "sweep" / jobs[["baseline", "grounded", "oracle", "shuffled"].index(row)]
                           / "metrics.json").read_text())["predcls/mR@50"]  # fmt: skip
        study = table.stdout.split("### Study: MOTIF PredCls (tiny)")[1]  # (the summary table comes first)
        line = next(ln for ln in study.splitlines() if ln.startswith(f"| {row} | "))
        assert line.split(" | ")[2] == f"{100 * mr50:.1f}" and line.endswith("| 1 |")  # one seed: no interval
    vg_map = 100 * source["metrics"]["val/vg_map50"]
    assert f"detector {digest[:8]} (VG mAP@50 {vg_map:.1f}): seed 0." in table.stdout
    for other in ("grounded", "oracle", "shuffled"):
        assert f"| {other} − baseline | 0 |" in table.stdout
    assert (tmp_path / "tables" / "study_per_predicate_motif_predcls_tiny.png").is_file()
