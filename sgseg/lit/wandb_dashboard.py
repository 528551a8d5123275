"""The W&B panels a researcher opens first, under stable names (callback; does nothing without a W&B logger).

Where this sits: a callback of every Trainer the runners build (``conf/callbacks/default.yaml``). What the
LightningModules log themselves, and this callback adds, per run (``<task>`` = predcls | sgcls | sgdet):

stage 2 (``scene_graph`` job type)
    curves   ``val/R@K``, ``val/mR@K``, ``val/zsR@K`` (and ``ng…``) per validation, K in 20/50/100;
             ``train/loss``, ``train/loss_rel`` …; test values under ``<task>/R@K`` …
    tables   ``<task>/per_predicate_recall`` (predicate, R@100, ngR@100), ``<task>/summary`` (a row per K),
             ``<task>/coco_mask_ap`` (this callback: Table-2 settings × unrefined / refined AP, AP50, AP75)
    charts   ``<task>/per_predicate_recall_bar`` (this callback: W&B bar chart of R@100 per predicate),
             ``<task>/per_predicate_recall_plot`` (the same as a picture)
    scalars  ``<task>/mask_<setting>_<AP|AP50|AP75>_<refined|unrefined>`` for setting predcls | sgcls | sgdet
    images   ``val/predictions``, ``test/predictions`` (masks, boxes, top relations)
stage 1 (``detector`` job type)
    curves   ``val/vg_map50``, ``val/coco_box_ap``, ``val/coco_box_ap50``, ``val/coco_mask_ap``, ``train/loss``
both: the whole composed Hydra config as the run config; a sweep's runs share one group.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

SETTINGS = ("predcls", "sgcls", "sgdet")  # paper Table 2: GT boxes + labels, GT boxes, detected boxes
AP_KINDS = ("AP", "AP50", "AP75")


def mask_ap_rows(metrics: dict[str, Any], prefix: str) -> list[list[Any]]:
    """One row per Table-2 setting present: [setting, AP unrefined, AP refined, AP50 …, AP75 …]."""
    rows = []
    for setting in SETTINGS:
        cells = []
        for kind in AP_KINDS:
            for which in ("unrefined", "refined"):
                value = metrics.get(f"{prefix}/mask_{setting}_{kind}_{which}")
                cells.append(
                    None if value is None or (isinstance(value, float) and math.isnan(value)) else value
                )
        if any(c is not None for c in cells):
            rows.append([setting, *cells])
    return rows


class WandbDashboard(Callback):
    """Adds the per-predicate bar chart and the COCO mask-AP table to a stage-2 W&B run at the end of test."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pytorch_lightning.loggers import WandbLogger

        from sgseg.lit.scene_graph_module import SceneGraphModule

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not trainer.is_global_zero or not isinstance(pl_module, SceneGraphModule):
            return
        import wandb

        mode, metrics = pl_module.mode, pl_module.test_metrics
        k = max(pl_module.ks)
        recalls = metrics.get(f"{mode}/mR_per_predicate@{k}")
        names = pl_module.predicate_names or [str(i + 1) for i in range(len(recalls or []))]
        rows = mask_ap_rows(metrics, mode)
        columns = ["setting"] + [f"{kind} {which}" for kind in AP_KINDS for which in ("unrefined", "refined")]
        for lg in loggers:
            run = lg.experiment
            payload: dict[str, Any] = {}
            if recalls is not None:
                table = wandb.Table(
                    columns=["predicate", f"R@{k}"], data=[[n, r] for n, r in zip(names, recalls)]
                )
                payload[f"{mode}/per_predicate_recall_bar"] = wandb.plot.bar(
                    table, "predicate", f"R@{k}", title=f"{mode}: per-predicate R@{k}"
                )
            if rows:
                payload[f"{mode}/coco_mask_ap"] = wandb.Table(columns=columns, data=rows)
            if payload:
                run.log(payload)
