"""Evaluation: scene-graph recall (R@K, ngR@K, zsR@K, mR@K) and COCO mask AP.

Where this sits: the bottom of the pipeline, importing only :mod:`sgseg.structures`-level code, numpy, torch
and pycocotools. The protocol is ``docs/evaluation.md`` of the shared docs.

* :class:`SceneGraphEvaluator` — per-image ``update``, ``compute`` → dict, ``merge`` for multi-process runs;
* :class:`SceneGraphMetric` — the same as a ``torchmetrics.Metric`` (imported lazily);
* :func:`coco_mask_ap`, :func:`paste_masks` — COCO segmentation AP via pycocotools;
* :func:`box_iou_plus1` — the benchmark's "+1 pixel" IoU.
"""

from __future__ import annotations

from typing import Any

from sgseg.evaluation.coco_masks import coco_mask_ap, paste_masks
from sgseg.evaluation.scene_graph import SceneGraphEvaluator
from sgseg.ops.boxes import box_iou_plus1

__all__ = ["SceneGraphEvaluator", "SceneGraphMetric", "box_iou_plus1", "coco_mask_ap", "paste_masks"]


def __getattr__(name: str) -> Any:
    if name == "SceneGraphMetric":  # torchmetrics only when asked for
        from sgseg.evaluation.metric import SceneGraphMetric

        return SceneGraphMetric
    raise AttributeError(f"module 'sgseg.evaluation' has no attribute {name!r}")
