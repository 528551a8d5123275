"""Sweeps through hydra-submitit-launcher: the SLURM launcher config as SLURM would get it, and the ablation
sweep run by the ``submitit_local`` launcher (each job in a process of its own), collected into Table 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from .conftest import REPO
from .test_train_cli import ENV, _cmd


def _launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return cfg, instantiate(cfg.hydra.launcher)


def test_slurm_launcher_takes_one_task_per_gpu_from_the_trainer():
    cfg, launcher = _launcher(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "sweep=ablation",
        "hydra.launcher.partition=gpu",
    )  # fmt: skip
    assert type(launcher).__name__ == "SlurmLauncher"
    p = launcher.params
    assert (p["nodes"], p["tasks_per_node"], p["gpus_per_node"]) == (2, 4, 4)
    assert p["partition"] == "gpu" and p["array_parallelism"] >= 14  # the 7 rows x 2 seeds at once
    assert p["submitit_folder"].startswith(str(cfg.hydra.sweep.dir))
    strategy = OmegaConf.to_container(cfg.trainer.strategy)
    assert strategy["_target_"].endswith("DDPStrategy") and strategy["find_unused_parameters"] == "auto"


def test_ddp_auto_find_unused_parameters_resolves_per_stage(tmp_path):
    """``auto`` becomes what the stage needs (sgseg.lit.factory.build_trainer); true/false are kept as given."""
    from sgseg.lit.factory import build_trainer as _trainer

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1",
                                           "logger={}", "callbacks={}", f"paths.output_dir={tmp_path}"])  # fmt: skip
    for find_unused in (True, False):
        trainer = _trainer(cfg, None, tmp_path, "x", None, find_unused=find_unused)
        assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is find_unused
    cfg.trainer.strategy.find_unused_parameters = True
    assert _trainer(cfg, None, tmp_path, "x", None, find_unused=False).strategy._ddp_kwargs[
        "find_unused_parameters"
    ]


@pytest.mark.slow
def test_ablation_sweep_through_submitit_local_two_jobs_collected(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        _cmd(tmp_path, "hydra/launcher=submitit_local", "sweep=ablation", "row=base,refine", "seed=0",
             "model.trainer.max_epochs=1", "callbacks.progress_bar=null", f"hydra.sweep.dir={sweep}",
             multirun=True),
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0_base_seed0", "1_refine_seed0"], (jobs, out.stderr[-3000:])
    assert not list(sweep.glob("*/FAILED.txt"))
    # submitit's local job id is the pid of the job's process: two, neither this one nor the launcher's
    pids = {int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()}
    assert len(pids) == 2 and os.getpid() not in pids
    mr50 = {job.split("_")[1]: json.loads((sweep / job / "metrics.json").read_text())["predcls/mR@50"]
            for job in jobs}  # fmt: skip
    table = subprocess.run(
        [sys.executable, "-m", "sgseg.results", str(sweep), "--out", str(tmp_path / "tables")],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    md = (tmp_path / "tables" / "results.md").read_text()
    table4 = md[md.index("Table 4") :].splitlines()
    for row, label in (("base", "base"), ("refine", "+ refinement (final)")):
        line = next(x for x in table4 if x.startswith(f"| {label} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == f"{100 * mr50[row]:.1f}" and cells[-1] == "1", line  # mR@50 in %, one seed


def test_ddp_in_a_local_sweep_is_refused_with_the_way_out():
    """Lightning would start DDP's other processes by re-running the command line: in ``-m`` the sweep."""
    from sgseg.lit.run import ddp_launch_error

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        ddp = compose("train", overrides=["trainer=ddp", "trainer.devices=4"])
        one = compose("train", overrides=["trainer=ddp", "trainer.devices=1"])
        plain = compose("train")
    err = ddp_launch_error(ddp, multirun=True, env={})
    assert err is not None and "hydra/launcher=slurm" in err and "trainer.devices=4" in err
    assert ddp_launch_error(ddp, multirun=False, env={}) is None  # one run: Lightning re-runs this command
    assert ddp_launch_error(ddp, multirun=True, env={"SLURM_NTASKS": "4"}) is None  # SLURM starts the tasks
    assert ddp_launch_error(one, multirun=True, env={}) is None
    assert ddp_launch_error(plain, multirun=True, env={}) is None
