"""The LightningDataModule: VG + COCO datasets → transforms → interleaved training batches.

Where this sits: glue between :mod:`sgseg.data` (loaders, transforms, collation, interleaving — all
Lightning-free) and the LightningModules. Training yields ``{"vg": (ImageBatch, Targets), "coco": (...)}``
per step (``"coco"`` absent when the COCO stream is off, e.g. the VG-only detector baseline). Validation
and test return a list of loaders: index 0 = VG, index 1 = COCO (when configured), each yielding
``{"vg": ...}`` or ``{"coco": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sgseg.data.collate import collate
from sgseg.data.interleave import InterleavedLoader, check_augment_draws
from sgseg.data.transforms import Compose, HorizontalFlip, Resize, TransformedDataset, flip_predicate_map


def _keyed_collate(items: list[dict[str, Any]], key: str, size_divisible: int) -> dict[str, Any]:
    return {key: collate(items, size_divisible=size_divisible)}


class SceneGraphDataModule(pl.LightningDataModule):
    """VG (+ optional COCO) data for both stages.

    vg: callable ``split -> Dataset`` (e.g. ``functools.partial(VisualGenome, root=...)``) for "train", "val",
        "test"; its datasets expose ``idx_to_predicate`` (predicate names 1..C) for flip-aware predicates.
    coco: callable ``split -> Dataset`` for "train" / "val", or None to switch the COCO stream off.
    prepare: optional callable run once in ``prepare_data`` (e.g. generate the synthetic benchmark).
    min_size / max_size: shorter-side resize (a sequence = multi-scale training) and longer-side cap.
    augment_draws: ``global`` (the process-wide ``random``) | ``keyed`` (per item, from its seed, epoch and
        position: exact after a resumption and with any ``num_workers``; :mod:`sgseg.data.interleave`).
    """

    def __init__(
        self,
        vg: Callable[..., Dataset],
        coco: Callable[..., Dataset] | None = None,
        batch_size_vg: int = 2,
        batch_size_coco: int = 2,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        min_size: int | Sequence[int] = 600,
        test_min_size: int = 600,
        max_size: int = 1000,
        flip_prob: float = 0.5,
        size_divisible: int = 32,
        seed: int = 0,
        prepare: Callable[[], Any] | None = None,
        augment_draws: str = "global",
    ) -> None:
        super().__init__()
        check_augment_draws(augment_draws, "SceneGraphDataModule")  # at construction, before any loader
        self.augment_draws = augment_draws
        self.vg_factory, self.coco_factory, self.prepare = vg, coco, prepare
        self.batch_size_vg, self.batch_size_coco, self.eval_batch_size = (
            batch_size_vg,
            batch_size_coco,
            eval_batch_size,
        )
        self.num_workers, self.seed, self.size_divisible = num_workers, seed, size_divisible
        self.min_size, self.test_min_size, self.max_size, self.flip_prob = (
            min_size,
            test_min_size,
            max_size,
            flip_prob,
        )
        self.datasets: dict[str, Dataset] = {}
        self.test_split = "test"  # the VG split the test stage runs on (`sgseg.evaluate split=val`: val)
        self._train_loader: InterleavedLoader | None = None

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def dataset(self, name: str, split: str) -> Dataset:
        """The raw (untransformed) dataset ``name`` (vg | coco) of ``split`` (train | val | test), built once."""
        if name == "coco" and self.coco_factory is None:
            raise ValueError("SceneGraphDataModule: no COCO stream (data.coco is null or not asked for)")
        key = f"{name}_{split}"
        if key not in self.datasets:
            factory = self.vg_factory if name == "vg" else self.coco_factory
            self.datasets[key] = factory(split=split)
        return self.datasets[key]

    def predicate_names(self) -> list[str]:
        return list(getattr(self.dataset("vg", "train"), "predicates", []))

    def _train_transform(self, flip_map) -> Compose:
        return Compose([Resize(self.min_size, self.max_size), HorizontalFlip(self.flip_prob, flip_map)])

    def _eval_transform(self) -> Compose:
        return Compose([Resize(self.test_min_size, self.max_size)])

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            vg = self.dataset("vg", "train")
            flip_map = flip_predicate_map(self.predicate_names()) if self.predicate_names() else None
            vg_t = TransformedDataset(vg, self._train_transform(flip_map))
            coco_t = None
            if self.coco_factory is not None:
                coco_t = TransformedDataset(self.dataset("coco", "train"), self._train_transform(None))
            rank = self.trainer.global_rank if self.trainer is not None else 0
            world = self.trainer.world_size if self.trainer is not None else 1
            self._train_loader = InterleavedLoader(
                vg_t,
                coco_t,
                partial(collate, size_divisible=self.size_divisible),
                self.batch_size_vg,
                self.batch_size_coco,
                seed=self.seed,
                num_workers=self.num_workers,
                rank=rank,
                world_size=world,
                augment_draws=self.augment_draws,
            )

    def train_dataloader(self) -> InterleavedLoader:
        if self._train_loader is None:
            self.setup("fit")
        return self._train_loader

    def _eval_loader(self, name: str, split: str) -> DataLoader:
        ds = TransformedDataset(self.dataset(name, split), self._eval_transform())
        return DataLoader(
            ds,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=partial(_keyed_collate, key=name, size_divisible=self.size_divisible),
            # keyed: building the loader leaves the global torch RNG (dropout, pair sampling) untouched
            generator=torch.Generator() if self.augment_draws == "keyed" else None,
        )

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self._eval_loader("vg", "val")]
        if self.coco_factory is not None:
            loaders.append(self._eval_loader("coco", "val"))
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        loaders = [self._eval_loader("vg", self.test_split)]
        if self.coco_factory is not None:
            loaders.append(self._eval_loader("coco", "val"))
        return loaders
