"""The trainer, logger and callback factory of the stage runners (:mod:`sgseg.lit.run`, :mod:`sgseg.evaluate`).

Where this sits: Lightning-side glue between a composed config and ``pl.Trainer``: W&B run names and groups,
loggers and callbacks from ``cfg.logger`` / ``cfg.callbacks`` (``_target_`` nodes), the best-by-validation
checkpoint, and the trainer itself from ``cfg.trainer`` plus a stage's overrides.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch.utils.deterministic
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from sgseg.lit.build import ConfigError


def run_name(stage_name: str) -> str:
    """W&B run name: the job's overrides (what makes it different from the defaults), then the stage."""
    overrides = overrides_without_resume() or []
    shown = [o for o in overrides if not o.startswith(("paths.", "hydra.", "logger.", "num_threads"))]
    return f"{','.join(shown) or 'default'}/{stage_name}"


def sweep_group(group: str | None) -> str | None:
    """In a Hydra multirun, the W&B group of all its jobs: ``<group>/<sweep dir name>`` (the experiment and
    the sweep's timestamp), so that one group filter shows exactly one sweep; None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return f"{group or 'default'}/{Path(HydraConfig.get().sweep.dir).name}"


def loggers(cfg: DictConfig, out_dir: Path, name: str) -> list[Any]:
    built = []
    for key, node in (cfg.get("logger") or {}).items():
        if node is None or "_target_" not in node:
            continue
        kwargs: dict[str, Any] = {"save_dir": str(out_dir)}
        if key == "wandb":
            kwargs["name"] = run_name(name)
            kwargs["job_type"] = name  # detector | scene_graph: one filter shows one stage
            group = sweep_group(node.get("group"))
            if group is not None:
                kwargs["group"] = group
            kwargs["tags"] = sorted(
                {*cfg.get("tags", []), str(cfg.task.name), str(cfg.model.name), str(cfg.data.name)}
            )
            # `config` is also instantiate()'s own first parameter, so it goes into the node, not the kwargs
            # (not instantiated recursively: the run config holds `_target_` nodes of its own)
            node = {**OmegaConf.to_container(node, resolve=True), "_recursive_": False, "_convert_": "all",
                    "config": OmegaConf.to_container(cfg, resolve=True)}  # fmt: skip
        built.append(hydra.utils.instantiate(node, **kwargs))
    return built


def finish_wandb() -> None:
    wandb = sys.modules.get("wandb")  # only if a W&B logger imported it
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def callbacks(cfg: DictConfig, out_dir: Path, monitor: str | None) -> list[Any]:
    built = []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        kwargs: dict[str, Any] = {}
        if key == "model_checkpoint":
            kwargs["dirpath"] = str(out_dir / "checkpoints")
            if monitor:
                # The periodic checkpoint (every_n_train_steps, for resuming) saves from the train loop, where
                # a monitored value is that of the *previous* validation: "best" would then be the weights of
                # some later step than the one validated (seen: the main job tested step 450 of 850). So the
                # best-by-validation checkpoint is a second callback that saves when validation ends.
                built.append(
                    ModelCheckpoint(
                        dirpath=kwargs["dirpath"], filename="best-{step}", monitor=monitor, mode="max",
                        save_top_k=1, save_last=False, save_on_train_epoch_end=False,
                    )
                )  # fmt: skip
        built.append(hydra.utils.instantiate(node, **kwargs))
    return built


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The best-by-validation checkpoint of ``trainer`` ('' when none was saved)."""
    for cb in trainer.checkpoint_callbacks:
        if cb.monitor is not None and cb.best_model_path:
            return cb.best_model_path
    return ""


def build_trainer(
    cfg: DictConfig,
    overrides: DictConfig | None,
    out_dir: Path,
    name: str,
    monitor: str | None,
    find_unused: bool = True,
) -> pl.Trainer:
    tcfg = OmegaConf.merge(
        OmegaConf.to_container(cfg.trainer, resolve=True),
        OmegaConf.to_container(overrides, resolve=True) if overrides is not None else {},
    )
    strategy = tcfg.get("strategy")
    if isinstance(strategy, DictConfig) and strategy.get("find_unused_parameters") == "auto":
        # conf/trainer/ddp.yaml: DDP's unused-parameter search only where a step can leave a trainable
        # parameter without a gradient (it costs a walk over the autograd graph every step)
        strategy.find_unused_parameters = find_unused
    deterministic = tcfg.get("deterministic")
    if deterministic == "cpu":
        tcfg.deterministic = None  # Lightning leaves torch's flag alone; set below once the device is known
    elif deterministic not in (None, True, False, "warn"):
        raise ConfigError(
            f"trainer.deterministic={deterministic!r}: must be cpu (deterministic on the CPU only), true, false or warn"
        )
    trainer = hydra.utils.instantiate(
        tcfg,
        default_root_dir=str(out_dir),
        logger=loggers(cfg, out_dir, name) or False,
        callbacks=callbacks(cfg, out_dir, monitor),
    )
    if deterministic == "cpu":
        set_cpu_deterministic(trainer.strategy.root_device.type == "cpu")
    return trainer


def set_cpu_deterministic(on_cpu: bool) -> None:
    """``trainer.deterministic=cpu``: torch's deterministic algorithms on the CPU, off elsewhere (CUDA kernels
    such as torchvision's RoIAlign backward have no deterministic version and would raise).

    On the CPU, the backward of advanced indexing (``x[idx]``: ``index_put_(accumulate=True)``) adds the rows
    of repeated indices in an order that depends on the threads, so two multi-threaded runs drift apart by
    float rounding and training amplifies it; the deterministic version adds them in a fixed order. The same
    numbers at 1 thread, where the order is fixed either way. ``torch.empty``'s filling of fresh memory with
    NaN (part of deterministic mode) is left off: it catches reads of uninitialised memory, not rounding,
    and costs a write of every new tensor."""
    torch.use_deterministic_algorithms(on_cpu)
    torch.utils.deterministic.fill_uninitialized_memory = False


def overrides_without_resume() -> list[str] | None:
    """This job's command-line overrides minus ``ckpt_path=…`` (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return sorted(o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path="))


def run_config_path(run_dir: str | Path) -> Path:
    """``<run_dir>/.hydra/config.yaml``, the config a run of ``python -m sgseg.train`` was made with; a
    :class:`ConfigError` naming the file where ``run_dir`` holds none (the check of sgseg.evaluate and sgseg.predict)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} not found: run_dir must be a run directory of python -m sgseg.train")
    return path


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """``best`` (the monitored checkpoint), ``last``, or an explicit path."""
    if which not in ("best", "last"):
        return Path(which)
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    # runs since the best-at-validation-end checkpoint (:func:`callbacks`) hold best-step=N.ckpt beside
    # the periodic one; older runs hold only the periodic (monitored) one
    best = [c for c in ckpts if c.name.startswith("best-")] or [c for c in ckpts if c.name != "last.ckpt"]
    chosen = best if which == "best" and best else [c for c in ckpts if c.name == "last.ckpt"] or best
    if not chosen:
        raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}; is {run_dir} a stage-2 run?")
    return chosen[-1]
