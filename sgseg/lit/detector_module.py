"""Stage-1 LightningModule: joint VG + COCO detector pretraining (paper Sec. 2.3, Eq. 10).

Where this sits: ``sgseg.train`` (``stage=detector``) builds it around a :class:`JointDetector` and feeds it
the DataModule's interleaved stream. One training step sees ``{"vg": (ImageBatch, Targets), "coco": (...)}``
and minimises L_obj = L_rcnn(VG) + L_rcnn(COCO) + L_seg(COCO) (weights 1); the paper's VG-only baseline is
the same module with the COCO stream off (no ``"coco"`` key). Validation computes VG box mAP@0.5 and COCO
box / mask AP. The checkpoint carries the detector's config so stage 2 rebuilds it with
``sgseg.models.detector.load_detector(path)``; :meth:`export_detector` writes the plain-state-dict form.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

from sgseg.evaluation.detection import box_map, coco_ap, encode_masks, paste_masks
from sgseg.models.detector.checkpoint import export_detector
from sgseg.models.detector.detector import JointDetector
from sgseg.structures import Detections, ImageBatch, Targets

DATASETS = ("vg", "coco")


def warmup_multistep(
    step: int, warmup_iters: int, warmup_factor: float, milestones: Sequence[int], gamma: float
) -> float:
    """LR multiplier at ``step``: linear warm-up from ``warmup_factor`` to 1, then × gamma at each milestone."""
    warm = 1.0
    if step < warmup_iters:
        alpha = step / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** bisect.bisect_right(list(milestones), step)


class DetectorPretrainModule(pl.LightningModule):
    """Trains a JointDetector on interleaved VG (+ COCO) batches and validates its boxes and masks.

    detector: the model. optimizer: optional factory ``params -> Optimizer`` (a Hydra ``_partial_``); by
        default SGD(lr, momentum, weight_decay). Schedule per step: linear warm-up over ``warmup_iters`` from
        ``warmup_factor``, then × ``gamma`` at each of ``milestones`` (steps).
    eval_masks: compute COCO mask AP in validation (pastes masks of up to ``detections_per_img`` boxes).
    mask_threshold: probability at which pasted masks are binarised.
    """

    def __init__(
        self,
        detector: JointDetector,
        optimizer: Callable[[Iterable[torch.nn.Parameter]], Optimizer] | None = None,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_iters: int = 500,
        warmup_factor: float = 1.0 / 3,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        eval_masks: bool = True,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["detector", "optimizer"])
        self.detector = detector
        self.optimizer_factory = optimizer
        self.milestones = [int(m) for m in milestones]
        self._eval: dict[str, dict[str, list]] = {}

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, tuple[ImageBatch, Targets]], batch_idx: int) -> Tensor:
        unknown = set(batch) - set(DATASETS)
        if unknown or "vg" not in batch:
            raise ValueError(
                f"training batch must be {{'vg': (ImageBatch, Targets)[, 'coco': ...]}}, got keys {sorted(batch)}"
            )
        losses: dict[str, Tensor] = {}
        batch_size = 0
        for name in DATASETS:
            if name in batch:
                images, targets = batch[name]
                batch_size += images.num_images
                for key, value in self.detector.training_losses(images, targets, name).items():
                    losses[f"{name}_{key}"] = value
        loss = torch.stack(list(losses.values())).sum()
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.detector.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(params)
        else:
            hp = self.hparams
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        hp = self.hparams
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: warmup_multistep(step, hp.warmup_iters, hp.warmup_factor, self.milestones, hp.gamma),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._eval = {}

    def on_test_epoch_start(self) -> None:
        self._eval = {}

    def validation_step(
        self, batch: dict[str, tuple[ImageBatch, Targets]], batch_idx: int, dataloader_idx: int = 0
    ):
        self._eval_step(batch)

    def test_step(
        self, batch: dict[str, tuple[ImageBatch, Targets]], batch_idx: int, dataloader_idx: int = 0
    ):
        self._eval_step(batch)

    @torch.no_grad()
    def _eval_step(self, batch: dict[str, tuple[ImageBatch, Targets]]) -> None:
        """Detect, split per image at this boundary, keep CPU boxes (and mask RLEs) until epoch end."""
        for name, (images, targets) in batch.items():
            if name not in DATASETS:
                raise ValueError(f"evaluation batch key must be 'vg' or 'coco', got {name!r}")
            store = self._eval.setdefault(name, {"pred": [], "gt": [], "sizes": [], "ids": []})
            features = self.detector.features(images)
            dets = self.detector.detect(features, images, head=name)
            with_masks = name == "coco" and self.hparams.eval_masks and targets.masks is not None
            probs = None
            if with_masks:
                logits = self.detector.mask_logits(features, images, dets.boxes, dets.image_index).logits
                probs = (
                    logits[torch.arange(len(dets), device=logits.device), dets.labels - 1].float().sigmoid()
                )
            for b, (h, w) in enumerate(images.image_sizes.tolist()):
                pred, gt = self._split(dets, targets, b)
                if with_masks:
                    keep = dets.image_index == b
                    pasted = paste_masks(probs[keep], dets.boxes[keep], h, w, self.hparams.mask_threshold)
                    pred["masks"] = encode_masks(pasted)
                    gt["masks"] = encode_masks(targets.masks[targets.image_index == b][:, :h, :w])
                store["pred"].append(pred)
                store["gt"].append(gt)
                store["sizes"].append((h, w))
                store["ids"].append(int(images.image_ids[b]))

    @staticmethod
    def _split(dets: Detections, targets: Targets, b: int) -> tuple[dict[str, Any], dict[str, Any]]:
        keep = dets.image_index == b
        pred = {
            "boxes": dets.boxes[keep].cpu(),
            "labels": dets.labels[keep].cpu(),
            "scores": dets.scores[keep].cpu(),
        }
        keep = targets.image_index == b
        gt = {"boxes": targets.boxes[keep].cpu(), "labels": targets.labels[keep].cpu()}
        return pred, gt

    def _gathered(self) -> dict[str, dict[str, list]]:
        """Per-image results of every rank (each rank evaluates a shard under DDP; metrics need them all)."""
        dist = torch.distributed
        if (
            self._trainer is None
            or self.trainer.world_size == 1
            or not (dist.is_available() and dist.is_initialized())
        ):
            return self._eval
        shards: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(shards, self._eval)
        merged: dict[str, dict[str, list]] = {}
        for shard in shards:
            for name, store in shard.items():
                into = merged.setdefault(name, {"pred": [], "gt": [], "sizes": [], "ids": []})
                for i, image_id in enumerate(store["ids"]):
                    if image_id in into["ids"]:
                        continue  # an image DistributedSampler repeated to even out the shards
                    for key, values in store.items():
                        into[key].append(values[i])
        return merged

    def _metrics(self) -> dict[str, float]:
        self._eval = self._gathered()
        metrics: dict[str, float] = {}
        if "vg" in self._eval:
            metrics["vg_map50"] = box_map(self._eval["vg"]["pred"], self._eval["vg"]["gt"], 0.5)["map"]
        if "coco" in self._eval:
            e = self._eval["coco"]
            box = coco_ap(e["pred"], e["gt"], "bbox", e["sizes"])
            metrics["coco_box_ap"], metrics["coco_box_ap50"] = box["ap"], box["ap50"]
            if e["pred"] and "masks" in e["pred"][0]:
                seg = coco_ap(e["pred"], e["gt"], "segm", e["sizes"])
                metrics["coco_mask_ap"], metrics["coco_mask_ap50"] = seg["ap"], seg["ap50"]
        # nan (no GT at all in a tiny split) would poison checkpoint monitoring; nothing detected = 0
        return {k: (0.0 if math.isnan(v) else v) for k, v in metrics.items()}

    def on_validation_epoch_end(self) -> None:
        for key, value in self._metrics().items():
            self.log(
                f"val/{key}", value, prog_bar=key in ("vg_map50", "coco_mask_ap"), add_dataloader_idx=False
            )
        self._eval = {}

    def on_test_epoch_end(self) -> None:
        for key, value in self._metrics().items():
            self.log(f"test/{key}", value, add_dataloader_idx=False)
        self._eval = {}

    # ------------------------------------------------------------------ hand-over to stage 2
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # lets load_detector(path) rebuild the architecture from the Lightning checkpoint alone
        checkpoint["detector_config"] = self.detector.config

    def export_detector(self, path: str | os.PathLike) -> Path:
        """Write the detector as a plain state dict + its constructor config (see ``load_detector``)."""
        return export_detector(self.detector, path)
