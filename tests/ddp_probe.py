"""A Lightning callback that records, per rank, what a DDP run did — read back by tests/test_ddp.py.

Passed to ``python -m sgseg.train`` as ``+callbacks.probe._target_=tests.ddp_probe.DDPProbe``. Writes into
``<stage dir>/probe/``: ``{stage}_rank{r}.jsonl`` (one line per training batch: epoch, step, the VG and COCO
image ids; plus ``start`` / ``end`` lines with hashes of the frozen detector and of the trainable weights)
and, after ``trainer.test``, ``test_rank{r}.pt`` (every ``(gt, pred, image_id)`` the rank's metric was fed,
the metric's protocol and the rank's COCO mask detections), so that one process can score them again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


def state_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _stage(pl_module: pl.LightningModule) -> str:
    return "detector" if hasattr(pl_module, "detector") else "scene_graph"


class DDPProbe(pl.Callback):
    def __init__(self) -> None:
        self._records: list[tuple[Any, Any, Any]] = []

    def _path(self, trainer: pl.Trainer, name: str) -> Path:
        d = Path(trainer.default_root_dir) / "probe"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{name}_rank{trainer.global_rank}"

    def _line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, record: dict[str, Any]) -> None:
        with open(self._path(trainer, _stage(pl_module)).with_suffix(".jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: str) -> None:
        record: dict[str, Any] = {"event": event, "world_size": trainer.world_size}
        trainable = {n: p for n, p in pl_module.named_parameters() if p.requires_grad}
        record["trainable"] = state_hash(trainable)
        if _stage(pl_module) == "scene_graph":
            det = pl_module.model.detector
            record["detector"] = state_hash(det.state_dict())
            record["detector_requires_grad"] = sum(p.requires_grad for p in det.parameters())
            record["detector_training"] = det.training
        loader = trainer.datamodule._train_loader
        record["num_vg"] = len(loader.vg)
        record["num_coco"] = len(loader.coco) if loader.coco is not None else 0
        self._line(trainer, pl_module, record)

    def on_train_start(self, trainer, pl_module) -> None:
        self._weights(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module) -> None:
        self._weights(trainer, pl_module, "end")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        record = {"event": "batch", "epoch": trainer.current_epoch, "step": trainer.global_step}
        for name in ("vg", "coco"):
            if name in batch:
                record[name] = batch[name][0].image_ids.tolist()
        self._line(trainer, pl_module, record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if _stage(pl_module) == "scene_graph":  # the detector is frozen after every optimiser step too
            det = pl_module.model.detector
            assert not any(p.grad is not None for p in det.parameters()), "a detector weight got a gradient"

    # -- test: what each rank's metric was fed ---------------------------------------------------------
    def on_test_start(self, trainer, pl_module) -> None:
        if _stage(pl_module) != "scene_graph":
            return
        self._records = []
        update = pl_module.metric.update

        def recording_update(gt, pred, image_id=None):
            self._records.append(copy.deepcopy((gt, pred, image_id)))
            return update(gt, pred, image_id=image_id)

        pl_module.metric.update = recording_update

    def on_test_end(self, trainer, pl_module) -> None:
        if _stage(pl_module) != "scene_graph":
            return
        torch.save(
            {
                "records": self._records,
                "protocol": pl_module.metric.protocol,
                "coco_dets": pl_module._coco_dets,
                "coco_gt": pl_module.coco_val_gt.dataset if pl_module.coco_val_gt is not None else None,
                "mode": pl_module.mode,
                "num_predicates": pl_module.num_predicates,
                "num_object_classes": pl_module.num_object_classes,
            },
            self._path(trainer, "test").with_suffix(".pt"),
        )
