"""Stage 2 as a LightningModule: L = L_sg (VG) + L_seg (COCO), evaluation with the standard protocol.

Where this sits: wraps :class:`sgseg.models.scene_graph.SceneGraphModel` (whose detector is frozen) for the
Trainer. Every training step takes one VG batch (relation CE + object CE in SGCls/SGDet + VCTree's tree BCE)
and, when present and the refinement head is on, one COCO batch (per-pixel BCE of the refined masks, paper
Eq. 9). Validation runs :class:`~sgseg.evaluation.SceneGraphMetric` on the VG val split (never test) and,
with a refinement head, COCO mask AP of refined vs. unrefined masks; test does the same on the test split and
writes ``metrics.json`` (flat keys ``predcls/mR@50``), the per-image counts (``predcls_per_image.npz``), the
per-predicate recall table and a bar plot into the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from sgseg.evaluation import coco_mask_ap
from sgseg.evaluation.metric import SceneGraphMetric
from sgseg.lit.detector_module import warmup_multistep
from sgseg.models.masks.refine import refinement_loss
from sgseg.models.relation.losses import object_loss, relation_loss
from sgseg.models.scene_graph import SceneGraphModel
from sgseg.ops.boxes import boxes_to_original, local_index
from sgseg.structures import ImageBatch, Targets

Batch = dict[str, tuple[ImageBatch, Targets]]


class SceneGraphModule(pl.LightningModule):
    """model: the stage-2 model; mode: predcls | sgcls | sgdet.
    object_names / predicate_names: VG label names (foreground, index order), stored in checkpoints.

    num_object_classes / num_predicates: C_obj / C_rel of the VG label space (with background).
    zeroshot_triplets: Long[Z, 3] (subject, object, predicate) for zsR@K, or None.
    predicate_names: names of predicates 1..C_rel-1 (for the per-predicate table and plot).
    lr, momentum, weight_decay, warmup_steps, warmup_factor, milestones, gamma: SGD + linear warm-up +
        multi-step decay (reference: 0.01, 0.9, 1e-4, warm-up, ×0.1 at 25k and 35k of 40k).
    ks: the K of R@K. coco_val_gt: the COCO val instances json (path / dict / COCO) for mask AP, or None.
    coco_label_to_category: contiguous COCO label → json category id (for the AP detections).
    stage_two_inputs: what the model was built from (label spaces, similarity, statistics; the fields of
        :class:`sgseg.lit.build.StageTwoInputs`), stored in checkpoints so that the model can be rebuilt without
        the datasets (:mod:`sgseg.predict`).
    """

    def __init__(
        self,
        model: SceneGraphModel,
        mode: str,
        num_object_classes: int,
        num_predicates: int,
        zeroshot_triplets: Tensor | None = None,
        predicate_names: Sequence[str] | None = None,
        object_names: Sequence[str] | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 500,
        warmup_factor: float = 0.1,
        milestones: Sequence[int] = (25000, 35000),
        gamma: float = 0.1,
        ks: Sequence[int] = (20, 50, 100),
        coco_val_gt: Any = None,
        coco_label_to_category: dict[int, int] | None = None,
        loss_weights: dict[str, float] | None = None,
        num_pictures: int = 2,
        stage_two_inputs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stage_two_inputs = stage_two_inputs
        self.model = model
        self.mode = mode
        self.num_object_classes, self.num_predicates = num_object_classes, num_predicates
        self.predicate_names = list(predicate_names) if predicate_names else None
        self.object_names = list(object_names) if object_names else None
        self.opt = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.sched = {"warmup_iters": warmup_steps, "warmup_factor": warmup_factor,
                      "milestones": list(milestones), "gamma": gamma}  # fmt: skip
        self.ks = tuple(ks)
        self.coco_val_gt = coco_val_gt
        self.coco_label_to_category = coco_label_to_category
        self.num_pictures = num_pictures
        self.loss_weights = {"rel": 1.0, "obj": 1.0, "tree": 1.0, "seg": 1.0, **(loss_weights or {})}
        self.metric = SceneGraphMetric(
            mode=mode, num_predicates=num_predicates, ks=self.ks, zeroshot_triplets=zeroshot_triplets,
            num_object_classes=num_object_classes,
        )  # fmt: skip
        self._coco_dets: dict[str, list[dict[str, Any]]] = {}
        self.test_metrics: dict[str, Any] = {}
        # which GT relations the metric scores: all | seen (triplets of the training split) | zeroshot (only the
        # zero-shot triplets: R@K then equals zsR@K); a test-time choice of `sgseg.evaluate relations=`
        self.gt_relations = "all"
        self.save_hyperparameters(ignore=["model", "zeroshot_triplets", "coco_val_gt", "stage_two_inputs"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # enough to rebuild the model without the datasets (python -m sgseg.predict)
        checkpoint["detector_config"] = self.model.detector.config
        checkpoint["label_names"] = {"objects": self.object_names, "predicates": self.predicate_names}
        if self.stage_two_inputs is not None:
            checkpoint["stage_two_inputs"] = self.stage_two_inputs

    # ------------------------------------------------------------------ training
    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """All loss terms of one step (unweighted), keyed ``rel``, ``obj``, ``seg`` and the context model's own
        (:meth:`~sgseg.models.context.ContextOutput.extra_losses`, VCTree: ``tree``)."""
        out: dict[str, Tensor] = {}
        images, targets = batch["vg"]
        res = self.model(images, targets, self.mode)
        out["rel"] = relation_loss(res.predictions.rel_logits, res.rel_labels)
        if self.mode != "predcls":
            out["obj"] = object_loss(res.context.obj_logits, res.obj_targets)
        # the context model's own terms (VCTree: ``tree``). Related pairs: every GT relation of the image (SGB's
        # rel_binarys), not only the sampled pairs; SGDet has no GT boxes among its objects, so there they are
        # the foreground-matched sampled pairs
        related = targets.relations[:, :2] if self.mode != "sgdet" else res.positive_pairs
        out.update(res.context.extra_losses(related, res.predictions.image_index))
        if "coco" in batch and self.model.refinement is not None:
            c_images, c_targets = batch["coco"]
            refined, _ = self.model.coco_refinement_logits(c_images, c_targets, mode=self.mode)
            out["seg"] = refinement_loss(refined, c_targets.labels, c_targets.masks, c_targets.boxes)
        return out

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        parts = self.losses(batch)
        loss = sum(self.loss_weights.get(k, 1.0) * v for k, v in parts.items())
        bs = batch["vg"][0].num_images
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v.detach(), batch_size=bs)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        params = self.model.trainable_parameters()
        optimizer = torch.optim.SGD(params, **self.opt)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_multistep, **self.sched))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def on_test_epoch_start(self) -> None:
        self._reset_eval()
        info = self._test_split_info()
        if info and self.trainer.is_global_zero:
            print(
                f"test split: {info['test_images_before_filter']:d} images "
                f"({info['test_images_with_relations_before_filter']:d} with a relation), "
                f"{info['test_images_dropped_max_boxes']:d} dropped with more than "
                f"{info['max_test_boxes']} GT boxes, {info['test_images']:d} to run"
            )

    def _test_split_info(self) -> dict[str, Any]:
        """The VG test split's image counts (before / after the ``max_test_boxes`` filter), {} without one."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        ds = (
            dm.dataset("vg", getattr(dm, "test_split", "test"))
            if dm is not None and hasattr(dm, "dataset")
            else None
        )
        if ds is None or not hasattr(ds, "num_dropped_max_boxes"):
            return {}
        return {
            "test_images_before_filter": int(ds.num_images_before_box_filter),
            "test_images_with_relations_before_filter": int(ds.num_with_relations_before_box_filter),
            "test_images_dropped_max_boxes": int(ds.num_dropped_max_boxes),
            "test_images": len(ds),
            "max_test_boxes": ds.max_test_boxes,
        }

    def _reset_eval(self) -> None:
        self.metric.reset()
        self._coco_dets = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        res = self._eval_step(batch)
        if res is not None and batch_idx == 0 and not self.trainer.sanity_checking:
            self._draw_predictions(batch["vg"][0], res, "val", num_images=self.num_pictures)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        res = self._eval_step(batch)
        if res is not None and batch_idx == 0:
            self._draw_predictions(batch["vg"][0], res, "test", num_images=self.num_pictures)

    @torch.no_grad()
    def _eval_step(self, batch: Batch):
        res = None
        if "vg" in batch:
            images, targets = batch["vg"]
            res = self.model(images, targets, self.mode)
            self.update_metric(res.predictions, images, targets)
        if "coco" in batch and self.model.refinement is not None and self.coco_val_gt is not None:
            self._coco_masks(*batch["coco"])
        return res

    def _wandb(self):
        from pytorch_lightning.loggers import WandbLogger

        return [lg for lg in self.loggers if isinstance(lg, WandbLogger)]

    def _draw_predictions(self, images: ImageBatch, res, stage: str, num_images: int) -> None:
        """Save (and log to W&B) pictures of the first images' predictions: masks, boxes, top relations."""
        if (
            num_images <= 0
            or not self.object_names
            or not self.predicate_names
            or not self.trainer.is_global_zero
        ):
            return
        from sgseg.visualize import draw_scene_graph, top_triplets

        p = res.predictions
        rel_scores = p.rel_logits.softmax(-1)
        paths = []
        for b in range(min(num_images, images.num_images)):
            objs = (p.image_index == b).nonzero().flatten()
            local = local_index(objs, p.image_index.numel())
            rows = (p.rel_image_index == b).nonzero().flatten()
            trip = top_triplets(local[p.pair_index[rows]], rel_scores[rows], p.scores[objs], k=8)
            h, w = images.image_sizes[b].tolist()
            pixels = (images.tensors[b, :, :h, :w] * 255).round().clamp(0, 255).to(torch.uint8)
            labels = p.labels[objs]
            masks = res.vg_mask_probs[objs, labels - 1]
            path = draw_scene_graph(
                pixels.cpu(), p.boxes[objs].cpu(), [self.object_names[int(c) - 1] for c in labels],
                [(s, o, self.predicate_names[c - 1], sc) for s, o, c, sc in trip],
                Path(self.trainer.default_root_dir) / f"{stage}_predictions" / f"epoch{self.current_epoch}_{b}.png",
                masks.cpu(), title=f"{self.mode} · image {int(images.image_ids[b])}",
                only_related=self.mode == "sgdet",
            )  # fmt: skip
            paths.append(str(path))
        for lg in self._wandb():
            lg.log_image(key=f"{stage}/predictions", images=paths, step=self.global_step)

    def update_metric(self, predictions, images: ImageBatch, targets: Targets) -> None:
        # per_image ranks the rows; the evaluator's frame is original-image pixels
        boxes = boxes_to_original(predictions.boxes, predictions.image_index, images)
        preds = dataclasses.replace(predictions, boxes=boxes).per_image(images.num_images)
        gt_boxes = boxes_to_original(targets.boxes, targets.image_index, images)
        for b, pred in enumerate(preds):
            keep = targets.image_index == b
            objects = keep.nonzero().flatten()
            local = local_index(objects, targets.image_index.numel())
            rels = targets.relations[targets.rel_image_index == b]
            if self.gt_relations != "all":
                rels = rels[
                    self._keep_relations(targets.labels[rels[:, 0]], targets.labels[rels[:, 1]], rels[:, 2])
                ]
            gt = {
                "boxes": gt_boxes[keep],
                "labels": targets.labels[keep],
                "relations": torch.cat([local[rels[:, :2]], rels[:, 2:]], 1),
            }
            self.metric.update(gt, pred, image_id=images.image_ids[b])

    def _keep_relations(self, subj: Tensor, obj: Tensor, pred: Tensor) -> Tensor:
        """Bool[R]: the GT relations ``gt_relations`` keeps — their (subject label, object label, predicate) is a
        zero-shot triplet (``zeroshot``) or is not (``seen``), by the evaluator's own zsR@K test."""
        if self.gt_relations not in ("seen", "zeroshot"):
            raise ValueError(f"gt_relations={self.gt_relations!r}: all | seen | zeroshot")
        protocol = self.metric.protocol
        if protocol.zeroshot_keys is None:
            raise ValueError(f"gt_relations={self.gt_relations}: this module has no zero-shot triplets")
        is_zs = protocol.is_zeroshot(*(t.cpu().numpy() for t in (subj, obj, pred)))
        keep = is_zs if self.gt_relations == "zeroshot" else ~is_zs
        return torch.from_numpy(keep).to(subj.device)

    def _coco_masks(self, images: ImageBatch, targets: Targets) -> None:
        """COCO mask AP detections, refined and unrefined, in the three settings of paper Table 2:
        ``predcls`` (GT boxes + GT labels), ``sgcls`` (GT boxes, labels from the detector's COCO head),
        ``sgdet`` (boxes, labels and scores detected by the COCO head)."""
        detector = self.model.detector
        features = detector.features(images)
        on_gt = detector.detect(features, images, targets.boxes, targets.image_index, head="coco")
        detected = detector.detect(features, images, head="coco")
        ones = torch.ones_like(targets.labels, dtype=torch.float32)
        settings = {
            "predcls": (targets.boxes, targets.image_index, targets.labels, ones),
            "sgcls": (targets.boxes, targets.image_index, on_gt.labels, on_gt.scores),
            "sgdet": (detected.boxes, detected.image_index, detected.labels, detected.scores),
        }
        for setting, (boxes, index, labels, scores) in settings.items():
            refined, unrefined = self.model.coco_refinement_logits(
                images, boxes=boxes, image_index=index, features=features, mode=setting, labels=labels
            )
            boxes_orig = boxes_to_original(boxes, index, images).float().cpu()
            rows = torch.arange(labels.shape[0], device=labels.device)
            categories = torch.tensor(
                [self.coco_label_to_category[int(c)] for c in labels.tolist()], dtype=torch.long
            )
            for name, logits in (("refined", refined), ("unrefined", unrefined)):
                probs = logits[rows, labels - 1].sigmoid().float().cpu()
                for b in range(images.num_images):
                    keep = (index == b).cpu()
                    self._coco_dets.setdefault(f"{setting}_{name}", []).append({
                        "image_id": int(images.image_ids[b]),
                        "scores": scores.float().cpu()[keep],
                        "category_ids": categories[keep],
                        "mask_probs": probs[keep],
                        "boxes": boxes_orig[keep],
                    })  # fmt: skip

    def _eval_results(self, prefix: str) -> dict[str, Any]:
        result = self.metric.compute()
        flat: dict[str, Any] = {}
        for key, value in result.items():
            if isinstance(value, (list, tuple)):
                flat[f"{prefix}/{key}"] = [float(v) for v in value]
            elif isinstance(value, (int, float)):
                flat[f"{prefix}/{key}"] = float(value)
        for name, dets in _all_ranks(self, self._coco_dets).items():
            if dets:
                image_ids = sorted({d["image_id"] for d in dets})
                ap = coco_mask_ap(self.coco_val_gt, dets, image_ids=image_ids)
                setting, kind = name.split("_")
                for k, v in ap.items():
                    flat[f"{prefix}/mask_{setting}_{k}_{kind}"] = float(v)
                    if setting == self.mode:  # the setting of this run's task, under the short key too
                        flat[f"{prefix}/mask_{k}_{kind}"] = float(v)
        return flat

    def _log_scalars(self, flat: dict[str, Any]) -> None:
        scalars = {k: v for k, v in flat.items() if isinstance(v, float) and not math.isnan(v)}
        self.log_dict(scalars, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.metric.reset()
            return
        self._log_scalars(self._eval_results("val"))

    def on_test_epoch_end(self) -> None:
        flat = self._eval_results(self.mode)
        # how many test images were scored (num_images) and how many the max_test_boxes filter dropped
        flat.update({f"{self.mode}/{k}": v for k, v in self._test_split_info().items() if v is not None})
        self.test_metrics = flat
        self._log_scalars(flat)
        per_image = self.metric.per_image()  # a collective under DDP: every rank calls it
        if self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir)
            write_metrics(flat, out, self.mode, self.predicate_names, self.ks)
            write_per_image(per_image, out, self.mode, self.predicate_names)
            self._log_tables(flat, out)

    def _log_tables(self, flat: dict[str, Any], out: Path) -> None:
        """W&B: the per-predicate recall table and plot, and a Table-1-style summary row per K."""
        loggers = self._wandb()
        if not loggers:
            return
        k = max(self.ks)
        names = self.predicate_names or [str(i + 1) for i in range(self.num_predicates - 1)]
        gc, ng = (
            flat.get(f"{self.mode}/mR_per_predicate@{k}"),
            flat.get(f"{self.mode}/ng-mR_per_predicate@{k}"),
        )
        summary_cols = ["K", "R", "mR", "zsR", "ngR", "ng-mR", "ng-zsR"]
        summary = [[kk] + [flat.get(f"{self.mode}/{m}@{kk}") for m in summary_cols[1:]] for kk in self.ks]
        for lg in loggers:
            if gc is not None:
                lg.log_table(key=f"{self.mode}/per_predicate_recall", columns=["predicate", f"R@{k}", f"ngR@{k}"],
                             data=[[n, a, b] for n, a, b in zip(names, gc, ng or gc)])  # fmt: skip
            lg.log_table(key=f"{self.mode}/summary", columns=summary_cols, data=summary)
            plot = out / f"{self.mode}_per_predicate_recall.png"
            if plot.is_file():
                lg.log_image(key=f"{self.mode}/per_predicate_recall_plot", images=[str(plot)])


def _all_ranks(module: pl.LightningModule, dets: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict]]:
    """Under DDP each rank holds the COCO detections of its shard of the val images: gather them all (the
    AP needs every image), each image once (``DistributedSampler`` repeats images to even out the shards)."""
    dist = torch.distributed
    if module._trainer is None or module.trainer.world_size == 1 or not dist.is_initialized():
        return dets
    shards: list[Any] = [None] * module.trainer.world_size
    dist.all_gather_object(shards, dets)
    merged: dict[str, list[dict[str, Any]]] = {}
    for shard in shards:
        for name, items in shard.items():
            seen = {d["image_id"] for d in merged.get(name, [])}
            merged.setdefault(name, []).extend(d for d in items if d["image_id"] not in seen)
    return merged


def write_metrics(
    flat: dict[str, Any], out_dir: Path, mode: str, predicate_names: Sequence[str] | None, ks: Sequence[int]
) -> Path:
    """metrics.json (flat keys), per_predicate_recall.csv and per_predicate_recall.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(flat)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True, allow_nan=True))
    k = max(ks)
    per_pred = flat.get(f"{mode}/mR_per_predicate@{k}")
    if per_pred is not None:
        names = list(predicate_names) if predicate_names else [str(i + 1) for i in range(len(per_pred))]
        with open(out_dir / f"{mode}_per_predicate_recall.csv", "w") as f:
            f.write(f"predicate,R@{k}\n")
            for n, r in zip(names, per_pred):
                f.write(f"{n},{r:.6f}\n")
        plot_per_predicate(names, per_pred, out_dir / f"{mode}_per_predicate_recall.png", f"{mode} R@{k}")
    return path


def write_per_image(
    per_image: dict[str, Any], out_dir: Path, mode: str, predicate_names: Sequence[str] | None
) -> Path:
    """``<mode>_per_image.npz``: per test image, the GT relation and hit counts behind R@K / mR@K (graph
    constraint; :meth:`sgseg.evaluation.metric.SceneGraphMetric.per_image`) plus ``mode`` and
    ``predicate_names``, for the paired bootstrap of ``python -m sgseg.results``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{mode}_per_image.npz"
    names = list(predicate_names) if predicate_names else []
    np.savez_compressed(path, **per_image, mode=np.array(mode), predicate_names=np.array(names, dtype=str))
    return path


def plot_per_predicate(names: Sequence[str], recalls: Sequence[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(names) + 1.5), 3.5))
    ax.bar(range(len(names)), [100 * r for r in recalls], color="#4C72B0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-predicate {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
