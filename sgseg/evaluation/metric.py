"""torchmetrics wrapper of :class:`~sgseg.evaluation.scene_graph.SceneGraphEvaluator` for DDP runs.

Where this sits: used by the LightningModules' test/validation steps. Each process keeps one record per image
(the evaluator's integer counts, held exactly in a 1-D float state; a list state reduced by concatenation), so
``compute()`` under DDP sees every process' images and gives the same numbers as one process. Pass ``image_id`` to ``update`` so that the images
``DistributedSampler`` repeats to even out the shards are counted once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from sgseg.evaluation.scene_graph import check_image_id, make_protocol

_FLOAT32_EXACT = 2**24


class SceneGraphMetric(Metric):
    """Same arguments and outputs as :class:`~sgseg.evaluation.scene_graph.SceneGraphEvaluator`.

    ``update(gt, pred, image_id=None)`` takes one image's dicts, or sequences of them (one per image, with a
    sequence of ids or None). Extra keyword arguments go to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        mode: str = "sgdet",
        num_predicates: int = 51,
        ks: Sequence[int] = (20, 50, 100),
        iou_threshold: float = 0.5,
        zeroshot_triplets: Any = None,
        num_object_classes: int = 151,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.protocol = make_protocol(
            mode, num_predicates, ks, iou_threshold, zeroshot_triplets, num_object_classes
        )
        self.add_state("records", default=[], dist_reduce_fx="cat")
        self._num_updates = 0

    def update(self, gt: Any, pred: Any, image_id: Any = None) -> None:
        if isinstance(gt, Mapping):
            gts, preds, ids = [gt], [pred], [image_id]
        else:
            gts, preds = list(gt), list(pred)
            if len(gts) != len(preds):
                raise ValueError(f"got {len(gts)} GT dicts but {len(preds)} prediction dicts")
            ids = [None] * len(gts) if image_id is None else [int(i) for i in image_id]
            if len(ids) != len(gts):
                raise ValueError(f"got {len(ids)} image ids for {len(gts)} images")
        for g, p, i in zip(gts, preds, ids):
            rec = self.protocol.evaluate_image(g, p, self._num_updates, check_image_id(i))
            self._num_updates += 1
            self.records.append(torch.from_numpy(_encode(rec)).to(self.device, self._state_dtype()))

    def _state_dtype(self) -> torch.dtype:
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"SceneGraphMetric keeps its records in float32/float64, not {self.dtype}")
        return self.dtype

    def compute(self) -> dict[str, Any]:
        return self.protocol.aggregate(self._records_array())

    def per_image(self) -> dict[str, np.ndarray]:
        """The per-image hit and GT counts behind R@K / mR@K (:meth:`_Protocol.per_image`), every process'
        images under DDP (synced as ``compute`` syncs; call it on every rank)."""
        with self.sync_context(should_sync=self.sync_on_compute):
            return self.protocol.per_image(self._records_array())

    def _records_array(self) -> np.ndarray:
        records = self.records
        if isinstance(records, list):
            records = dim_zero_cat(records) if records else torch.zeros(0)
        width = self.protocol.layout.width + 1
        return _decode(records.reshape(-1, width).cpu().double().numpy())

    def reset(self) -> None:
        super().reset()
        self._num_updates = 0


def _encode(rec: np.ndarray) -> np.ndarray:
    """Int32[L] record -> Float32[L + 1] that float32 holds exactly: the image id split in two 16-bit halves.

    The states are 1-D floats of the metric's dtype because torchmetrics stands an empty tensor of that
    dtype in for a rank that saw no image; all ranks must gather the same dtype.
    """
    image_id = int(rec[0])
    halves = [image_id >> 16, image_id & 0xFFFF] if image_id >= 0 else [-1, -1]
    if rec[1:].max(initial=0) >= _FLOAT32_EXACT:
        raise ValueError(f"a count of {int(rec[1:].max())} is too large for the float32 metric state")
    return np.concatenate([np.array(halves), rec[1:]]).astype(np.float32)


def _decode(states: np.ndarray) -> np.ndarray:
    hi, lo = states[:, 0].astype(np.int64), states[:, 1].astype(np.int64)
    image_id = np.where(hi >= 0, hi * 65536 + lo, -1)
    return np.concatenate([image_id[:, None], states[:, 2:].astype(np.int64)], 1).astype(np.int32)
