"""The stage runners behind ``python -m sgseg.train``: stage 1, stage 2, or both chained through a file.

The trainers, loggers and callbacks they use come from :mod:`sgseg.lit.factory`; the objects from
:mod:`sgseg.lit.build`.

Where this sits: called by the thin Hydra entry point :mod:`sgseg.train` with the composed config.
``stage=detector`` pretrains the joint detector and writes ``<run dir>/detector/detector.pt``;
``stage=scene_graph`` loads ``detector.checkpoint``, trains and tests the scene-graph model and writes
``<run dir>/metrics.json``; ``stage=pipeline`` (the default) runs both, handing over only the file path.
Errors a user can fix (missing data, unset checkpoint) end in one line on stderr, not a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from sgseg.data.errors import DatasetError
from sgseg.lit.build import (
    ConfigError,
    build_datamodule,
    build_detector,
    build_scene_graph_module,
    check_cpu_precision,
    check_data_paths,
    coco_class_count,
    configure_torch,
    load_frozen_detector,
    prepare_data,
)
from sgseg.lit.detector_module import DetectorPretrainModule
from sgseg.lit.factory import (
    best_checkpoint,
    build_trainer,
    find_checkpoint,
    finish_wandb,
    overrides_without_resume,
    run_config_path,
)
from sgseg.models.detector.checkpoint import PROVENANCE_FILE, detector_provenance, export_detector

STAGES = ("detector", "scene_graph", "pipeline")


def previous_run(out_dir: Path, overrides: list[str] | None) -> Path | None:
    """The newest sibling run directory started with the same overrides (``ckpt_path`` aside).

    ``python -m sgseg.train … ckpt_path=last`` gets a fresh timestamped directory from Hydra; the run it
    resumes is found next to it by comparing ``.hydra/overrides.yaml``.
    """
    if overrides is None or not out_dir.parent.is_dir():
        return None
    import yaml

    for cand in sorted(out_dir.parent.iterdir(), reverse=True):
        if cand == out_dir or not (cand / ".hydra" / "overrides.yaml").is_file():
            continue
        theirs = yaml.safe_load((cand / ".hydra" / "overrides.yaml").read_text()) or []
        if sorted(o for o in theirs if not o.startswith("ckpt_path=")) == overrides:
            return cand
    return None


def _resume(cfg: DictConfig, stage_dir: Path, prev_stage_dir: Path | None) -> str | None:
    """The checkpoint this stage resumes from: an explicit path, or with ``ckpt_path=last`` the stage's
    ``checkpoints/last.ckpt`` in this run directory or in the previous run with the same overrides."""
    if cfg.get("ckpt_path") in (None, ""):
        return None
    if cfg.ckpt_path != "last":
        return str(cfg.ckpt_path)
    for d in (stage_dir, prev_stage_dir):
        if d is not None and (d / "checkpoints" / "last.ckpt").is_file():
            print(f"resuming from {d / 'checkpoints' / 'last.ckpt'}")
            return str(d / "checkpoints" / "last.ckpt")
    print("ckpt_path=last: no earlier checkpoint of this run found; starting from scratch")
    return None


def run_detector(cfg: DictConfig, out_dir: Path, prev_dir: Path | None = None) -> Path:
    """Stage 1: train the joint detector; returns the path of the exported ``detector.pt``."""
    # the VG-only baseline detector (detector.joint=false or data.coco=null) trains without COCO batches,
    # but keeps the COCO heads' shape so that stage 2 builds the same way
    joint = bool(cfg.detector.get("joint", True))
    dm = build_datamodule(cfg, with_coco=joint)
    dm.prepare_data()
    check_data_paths(cfg)
    vg = dm.dataset("vg", "train")
    num_coco = coco_class_count(cfg, dm)
    detector = build_detector(cfg, len(vg.object_classes), num_coco)
    if cfg.get("compile"):
        detector.backbone.compile(dynamic=True)  # multi-scale training: one graph for all image sizes
    module = DetectorPretrainModule(detector, **OmegaConf.to_container(cfg.detector.optim, resolve=True))
    # the VG-only detector's COCO heads get no gradient: only then does DDP need to look for unused ones
    trainer = build_trainer(
        cfg, cfg.detector.get("trainer"), out_dir, "detector", None, find_unused=not joint
    )
    trainer.fit(module, datamodule=dm, ckpt_path=_resume(cfg, out_dir, prev_dir))
    finish_wandb()  # stage 2 gets a W&B run of its own
    path = out_dir / "detector.pt"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero:  # under DDP every rank holds the same weights; one writes the file
        export_detector(module.detector, path)
        (out_dir / "detector_metrics.json").write_text(json.dumps(metrics, indent=2))
    trainer.strategy.barrier("detector export")  # stage 2 (on every rank) reads the file
    print(f"stage 1: detector written to {path}  {_fmt(metrics)}")
    return path


def record_detector(
    detector_path: str | Path, out_dir: Path, prev_dir: Path | None = None, write: bool = True
) -> dict[str, Any]:
    """Write the frozen detector's identity (:func:`~sgseg.models.detector.checkpoint.detector_provenance`:
    path, size, SHA-256, its stage-1 metrics) to ``<run dir>/detector_source.json``, which ``sgseg.results``
    uses to tell runs on different detectors apart (``write``: false on the other DDP ranks, which only check).
    A run resumed (here or from ``prev_dir``) on a detector whose content differs from the one it started on
    is refused: its steps would mix two detectors."""
    info = detector_provenance(detector_path)
    for d in (out_dir, prev_dir):
        earlier = d / PROVENANCE_FILE if d is not None else None
        if earlier is None or not earlier.is_file():
            continue
        try:
            old = json.loads(earlier.read_text())["sha256"]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ConfigError(
                f"{earlier} is not a readable detector record ({err!r}); it says which detector this run "
                "started on — restore it, or delete it if you are sure the run used detector.checkpoint"
            ) from err
        if old != info["sha256"]:
            raise ConfigError(
                f"detector.checkpoint={detector_path} (sha256 {info['sha256'][:12]}) is not the detector this run "
                f"started on ({earlier}: sha256 {old[:12]}); resume with that file, or start a new run directory"
            )
    if write:
        (out_dir / PROVENANCE_FILE).write_text(json.dumps(info, indent=2))
    return info


def run_scene_graph(
    cfg: DictConfig, out_dir: Path, detector_path: str | Path, prev_dir: Path | None = None
) -> dict[str, Any]:
    """Stage 2: train, validate and test the scene-graph model on the frozen detector."""
    # every stage starts from the run's seed, so a pipeline's stage 2 trains what `stage=scene_graph` on its
    # detector trains (and a pipeline resumed after stage 1 what the uninterrupted one would have trained)
    pl.seed_everything(int(cfg.seed), workers=True)
    # the COCO stream only feeds the refinement head (training) and its mask AP (evaluation)
    dm = build_datamodule(
        cfg,
        with_coco=cfg.model.get("refine") is not None,
        with_true_masks=cfg.model.get("mask_source") == "oracle",
    )
    dm.prepare_data()
    check_data_paths(cfg)
    detector = load_frozen_detector(detector_path)
    module, _ = build_scene_graph_module(cfg, dm, detector)
    if cfg.get("compile"):
        module.model.detector.backbone.compile(dynamic=True)
    monitor = f"val/{cfg.model.get('monitor', 'mR@50')}"
    # stage 2 leaves some trainable parameters without a gradient in a step, depending on the task and
    # the data (PredCls: the context's object decoder; SGDet: edge grounding when no pair is sampled), so
    # DDP looks for them in every row of the ablation (tests/test_ddp.py trains the full and the base row)
    trainer = build_trainer(cfg, cfg.model.get("trainer"), out_dir, "scene_graph", monitor, find_unused=True)
    check_cpu_precision(trainer, module)
    record_detector(
        detector_path, out_dir, prev_dir, write=trainer.is_global_zero
    )  # every rank checks, one writes
    trainer.fit(module, datamodule=dm, ckpt_path=_resume(cfg, out_dir, prev_dir))
    trainer.test(module, datamodule=dm, ckpt_path=best_checkpoint(trainer) or None, weights_only=False)
    return module.test_metrics


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """``python -m sgseg.evaluate``: re-test a trained stage-2 run (``cfg.run_dir``) without training.

    The run's own config (``.hydra/config.yaml``; ``task`` replaced when given), its ``ckpt`` (best | last | a
    path), the detector rebuilt from the checkpoint, the module built as in training
    (:func:`~sgseg.lit.build.build_scene_graph_module`) and its weights loaded; ``trainer.test`` writes
    metrics.json, the per-predicate table and plot into ``out`` (default ``<run_dir>/evaluate/<task>-<ckpt>``).
    Returns the test metrics."""
    from sgseg.models.detector.checkpoint import build_detector as detector_from_config

    run_dir = Path(cfg.run_dir)
    run_cfg = OmegaConf.load(run_config_path(run_dir))
    if cfg.get("task") is not None:
        run_cfg.task = cfg.task
    ckpt_path = find_checkpoint(run_dir, str(cfg.ckpt))
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt={cfg.ckpt}: {ckpt_path} is not a file; use best, last or a checkpoint path")
    trained_source = str(run_cfg.model.get("mask_source", "transfer"))
    source = str(cfg.get("mask_source") or trained_source)
    if source != trained_source:
        _check_mask_swap(run_cfg, run_dir, source)
        run_cfg.model.mask_source = source
    suffix = "" if source == trained_source else f"-{source}-masks"
    true_masks = cfg.get("true_masks")
    if true_masks is not None:
        # which true-mask file the oracle reads (e.g. the synthetic benchmark's amodal masks)
        if source != "oracle":
            raise ConfigError(
                f"true_masks={true_masks}: only with mask_source=oracle (or a run trained on it)"
            )
        if str(true_masks) != str(run_cfg.data.get("true_masks")):
            run_cfg.data.true_masks = str(true_masks)
            suffix += "-" + Path(str(true_masks)).stem.replace("{split}", "split")
    blur = cfg.get("oracle_blur")
    if blur is not None:
        # a soft oracle at test time: the true masks Gaussian-blurred by σ cells of the mask grid
        if source != "oracle":
            raise ConfigError(f"oracle_blur={blur}: only with mask_source=oracle (or a run trained on it)")
        if not isinstance(blur, (int, float)) or blur < 0:
            raise ConfigError(f"oracle_blur={blur!r}: a number >= 0 (cells of the mask grid)")
        if float(blur) != float(run_cfg.model.get("oracle_blur") or 0.0):
            run_cfg.model.oracle_blur = float(blur)
            suffix += f"-blur{float(blur):g}"
    passes = cfg.get("refine_passes")
    if passes is not None:
        # a test-time ablation of the refined masks on the VG stream: the same weights, refine_passes=k
        if passes not in (0, 1, 2):
            raise ConfigError(f"refine_passes={passes!r}: use 0, 1 or 2 (or null for the run's own setting)")
        trained = run_cfg.model.get("train_refine_passes")
        run_cfg.model.train_refine_passes = run_cfg.model.get("refine_passes") if trained is None else trained
        run_cfg.model.refine_passes = int(passes)
        suffix += f"-passes{int(passes)}"
    overlap = cfg.get("require_overlap")
    overlap_changed = False
    if overlap is not None:
        # SGDet test: candidate pairs only between overlapping detections (the reference) or all ordered pairs
        if not isinstance(overlap, bool):
            raise ConfigError(
                f"require_overlap={overlap!r}: true or false (or null for the run's own setting)"
            )
        if run_cfg.task.name != "sgdet":
            raise ConfigError(
                f"require_overlap={overlap}: only for an SGDet test (task=sgdet); PredCls and SGCls score every "
                "ordered pair of the GT boxes"
            )
        if overlap != bool(run_cfg.model.sampling.get("test_require_overlap", True)):
            run_cfg.model.sampling.test_require_overlap = overlap
            overlap_changed = True
            suffix += "-overlapping-pairs" if overlap else "-all-pairs"
    split = str(cfg.get("split") or "test")
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r}: test (the run's test split) or val (its validation images)")
    suffix += "" if split == "test" else f"-{split}"
    relations = str(cfg.get("relations") or "all")
    if relations not in ("all", "seen", "zeroshot"):
        raise ConfigError(
            f"relations={relations!r}: all | seen (GT triplets of the training split only) | zeroshot (only the "
            "zero-shot triplets)"
        )
    suffix += "" if relations == "all" else f"-{relations}-relations"
    out_dir = (
        Path(cfg.out)
        if cfg.get("out")
        else run_dir / "evaluate" / f"{run_cfg.task.name}-{ckpt_path.stem}{suffix}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    run_cfg.paths.output_dir = str(out_dir)
    if cfg.get("data_dir"):
        run_cfg.paths.data_dir = str(cfg.data_dir)
    if cfg.get("num_threads"):
        run_cfg.num_threads = int(cfg.num_threads)
    configure_torch(run_cfg)
    pl.seed_everything(int(run_cfg.seed), workers=True)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if "detector_config" not in checkpoint:
        raise ConfigError(f"{ckpt_path} is not a scene-graph checkpoint of sgseg (no detector_config)")
    dm = build_datamodule(
        run_cfg, with_coco=run_cfg.model.get("refine") is not None, with_true_masks=source == "oracle"
    )
    check_data_paths(run_cfg)
    dm.test_split = split
    module, _ = build_scene_graph_module(run_cfg, dm, detector_from_config(checkpoint["detector_config"]))
    module.gt_relations = relations
    similarity = module.model.transfer.similarity.clone()  # S of `source` (the deranged one for shuffled)
    module.load_state_dict(checkpoint["state_dict"])
    module.model.transfer.similarity.copy_(similarity)  # the checkpoint's S is the trained source's
    (out_dir / "evaluation.json").write_text(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "checkpoint": str(ckpt_path),
                "task": str(run_cfg.task.name),
                "mask_source": source,
                "trained_mask_source": trained_source,
                "true_masks": str(run_cfg.data.get("true_masks")) if source == "oracle" else None,
                # σ of the true masks' blur (None: not blurred)
                "oracle_blur": module.model.oracle_blur or None,
                # the built model's setting (None: the run's own)
                "refine_passes": None if passes is None else int(module.model.refine_passes),
                # SGDet test pairs, where set against the run's own setting: only overlapping detections (true)
                # or all ordered pairs (false); None: the run's own
                "require_overlap": bool(overlap) if overlap_changed else None,
                # the VG split tested (test | val) and the GT relations scored (all | seen | zeroshot)
                "split": split,
                "relations": relations,
            },
            indent=2,
        )  # fmt: skip
    )
    trainer = hydra.utils.instantiate(
        run_cfg.trainer, default_root_dir=str(out_dir), logger=False, callbacks=[]
    )
    check_cpu_precision(trainer, module)
    trainer.test(module, datamodule=dm)
    mode = str(run_cfg.task.name)
    swap = "" if source == trained_source else f", grounded on {source} masks (trained on {trained_source})"
    if blur is not None:
        swap += f", true masks blurred by σ={float(blur):g}"
    if passes is not None:
        swap += f", refine_passes={int(passes)} (trained with {run_cfg.model.train_refine_passes})"
    if overlap_changed:
        swap += ", pairs of overlapping detections only" if overlap else ", all ordered pairs of detections"
    if split != "test":
        swap += f", on the {split} split"
    if relations != "all":
        swap += f", {relations} GT relations only"
    print(f"\n{run_cfg.model.name} / {mode}, {ckpt_path.name}{swap}  (recall in %)")
    print(results_table(module.test_metrics, mode))
    print(f"written to {out_dir}")
    return module.test_metrics


def _check_mask_swap(run_cfg: DictConfig, run_dir: Path, source: str) -> None:
    """``mask_source=`` of ``sgseg.evaluate``: a test-time swap of grounding's masks needs a run whose model is
    grounded (node or edge) and a known source."""
    if source not in ("transfer", "oracle", "shuffled", "empty"):
        raise ConfigError(
            f"mask_source={source!r}: choose transfer | oracle | shuffled | empty (or null: the run's own)"
        )
    grounding = run_cfg.model.get("grounding") or {}
    targets = [str((grounding.get(k) or {}).get("_target_", "")) for k in ("node", "edge")]
    # the classes without grounding by name (a prefix test would take NodeGrounding for one)
    if all(t.rsplit(".", 1)[-1] in ("", "NoNodeGrounding", "NoEdgeGrounding") for t in targets):
        raise ConfigError(
            f"mask_source={source}: {run_dir} has neither node nor edge grounding "
            f"({', '.join(targets)}), so its predictions do not read the masks; swap them in a grounded run"
        )


def stage_two_checkpoint(cfg: DictConfig) -> str:
    """``detector.checkpoint``, or ``detector.checkpoint_vgonly`` for a VG-only row of the ablation sweep."""
    det = cfg.detector
    key = (
        "checkpoint_vgonly"
        if det.get("joint", True) is False and "checkpoint_vgonly" in det
        else "checkpoint"
    )
    if OmegaConf.is_missing(det, key) or det.get(key) is None:
        raise ConfigError(
            f"detector.{key} is required for stage=scene_graph: pass the detector.pt written by "
            f"experiment=synthetic_detector{'_vgonly' if key != 'checkpoint' else ''} (or a detector_* experiment)"
        )
    return str(det.get(key))


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float))


def results_table(metrics: dict[str, Any], mode: str, ks=(20, 50, 100)) -> str:
    """A small text table of the headline numbers (in %)."""

    def pct(key: str) -> str:
        v = metrics.get(f"{mode}/{key}")
        return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"

    lines = [f"{'metric':<10}" + "".join(f"{'@' + str(k):>8}" for k in ks)]
    for name in ("R", "ngR", "mR", "ng-mR", "zsR", "ng-zsR"):
        lines.append(f"{name:<10}" + "".join(f"{pct(f'{name}@{k}'):>8}" for k in ks))
    masks = [(k, metrics[f"{mode}/mask_{k}_refined"], metrics[f"{mode}/mask_{k}_unrefined"])
             for k in ("AP", "AP50", "AP75") if f"{mode}/mask_{k}_refined" in metrics]  # fmt: skip
    if masks:
        lines.append("COCO mask " + "  ".join(f"{k} {100 * u:.1f} → {100 * r:.1f}" for k, r, u in masks)
                     + "  (unrefined → refined)")  # fmt: skip
    return "\n".join(lines)


def ddp_launch_error(cfg: DictConfig, multirun: bool, env: dict[str, str]) -> str | None:
    """Why this DDP run cannot start, or None. Outside SLURM / torchrun, Lightning starts DDP's other
    processes by re-running the command line, which in a sweep (``-m``) would re-run the whole sweep."""
    strategy = cfg.trainer.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy or "")
    devices = cfg.trainer.get("devices", 1)
    spawns = "ddp" in target.lower() and str(devices) not in ("1", "[0]")
    launched_outside = "SLURM_NTASKS" in env or "LOCAL_RANK" in env
    if multirun and spawns and not launched_outside:
        return (
            f"trainer.devices={devices} with trainer=ddp in a sweep (-m): Lightning would start the other "
            "processes by re-running the sweep; submit it with hydra/launcher=slurm (SLURM starts one task per "
            "device), or run the jobs one at a time without -m"
        )
    return None


def run(cfg: DictConfig) -> float | None:
    stage = cfg.get("stage", "pipeline")
    if stage not in STAGES:
        print(f"sgseg: stage={stage!r} is not one of {STAGES}", file=sys.stderr)
        return None
    configure_torch(cfg)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if (err := ddp_launch_error(cfg, multirun, dict(os.environ))) is not None:
        raise SystemExit(f"sgseg: {err}")
    pl.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        if stage in ("detector", "pipeline"):
            prepare_data(cfg)
        prev = previous_run(out_dir, overrides_without_resume()) if cfg.get("ckpt_path") == "last" else None
        detector_path = stage_two_checkpoint(cfg) if stage == "scene_graph" else None
        if stage in ("detector", "pipeline"):
            done = prev / "detector" / "detector.pt" if prev is not None else None
            if stage == "pipeline" and done is not None and done.is_file():
                print(f"stage 1 already finished in {prev}; reusing {done}")
                detector_path = done
            else:
                detector_path = run_detector(cfg, out_dir / "detector", prev / "detector" if prev else None)
        if stage == "detector":
            print(f"run directory: {out_dir}")
            return None
        metrics = run_scene_graph(cfg, out_dir, detector_path, prev)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        raise SystemExit(f"sgseg: {err}") from None  # one line on stderr, exit status 1
    finally:
        finish_wandb()  # else the next job of a multirun would log into this job's W&B run
    mode = str(cfg.task.name)
    print(f"\n{cfg.model.name} / {mode}  (recall in %, {time.time() - start:.0f} s)")
    print(results_table(metrics, mode))
    print(f"run directory: {out_dir}")
    wandb_dirs = sorted(out_dir.glob("wandb/offline-run-*"))
    if wandb_dirs:
        print(f"W&B offline run: {wandb_dirs[-1]}  (upload with `wandb sync {wandb_dirs[-1]}`)")
    key = f"{mode}/{cfg.model.get('monitor', 'mR@50')}"
    value = metrics.get(key)
    return float(value) if isinstance(value, float) else None
