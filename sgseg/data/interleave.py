"""Deterministic, resumable, DDP-aware interleaving of the VG and COCO training streams.

Where this sits: between the datasets and the training loop. Every training step needs one VG batch
(scene-graph / box losses) and one COCO batch (mask losses): :class:`InterleavedLoader` yields
``{"vg": batch, "coco": batch}`` dicts. An epoch is defined by VG; COCO cycles through its own epochs
independently.

Order is a pure function of (seed, epoch, position): the VG permutation of epoch e is drawn from
``seed + e``, the COCO stream from ``seed + 1_000_003 + its own epoch``. So a run killed mid-epoch and
resumed from a checkpoint (``state_dict`` / ``load_state_dict``, which Lightning calls on stateful
iterables) sees exactly the batches the uninterrupted run would have seen. Under DDP each rank takes a
strided shard of the same permutation (the ``DistributedSampler`` convention, padded by wrapping so all
ranks have the same number of batches).

Augmentation draws (``augment_draws``): ``global`` leaves them to the process-wide ``random`` module, as the
transforms always did — the batches repeat exactly after a resumption but the scales and flips drawn for them do
not, and worker processes draw from their own seeds. ``keyed`` hands every item to the dataset as
``(index, key)``, the key naming (seed, stream, epoch, position in the epoch's full order), and
:class:`~sgseg.data.transforms.TransformedDataset` draws that item's scale and flip from ``random.Random(key)``:
the same augmentation with any number of workers, after a resumption, and for every item on any number of DDP
ranks. In ``keyed`` mode the DataLoaders also take a private ``torch.Generator``, so building them does not
advance the global torch RNG (which the model's dropout and pair sampling use; see
:class:`sgseg.lit.rng.RngStates`, which checkpoints it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

_COCO_SEED_OFFSET = 1_000_003
AUGMENT_DRAWS = ("global", "keyed")


def check_augment_draws(value: str, where: str) -> bool:
    """True for ``keyed``, False for ``global``; anything else raises naming ``where`` and the config key."""
    if value not in AUGMENT_DRAWS:
        raise ValueError(
            f"{where}: augment_draws must be one of {AUGMENT_DRAWS}, got {value!r} (data.loader.augment_draws)"
        )
    return value == "keyed"


def epoch_indices(
    num_items: int, epoch: int, seed: int, shuffle: bool, rank: int, world_size: int
) -> list[int]:
    """The dataset indices this rank sees in ``epoch``, in order (padded by wrap-around under DDP)."""
    if num_items <= 0:
        raise ValueError("epoch_indices: the dataset is empty")
    if shuffle:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(num_items, generator=g).tolist()
    else:
        order = list(range(num_items))
    per_rank = -(-num_items // world_size)
    total = per_rank * world_size
    order = (order * (total // num_items + 1))[:total]
    return order[rank:total:world_size]


def epoch_batches(
    num_items: int,
    batch_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    rank: int,
    world_size: int,
    key_prefix: str | None = None,
) -> list[list[Any]]:
    """This rank's batches of ``epoch``: lists of dataset indices, or with ``key_prefix`` of ``(index, key)``
    pairs whose key ``"<key_prefix>:<epoch>:<position>"`` names the item's position in the epoch's full
    (all-rank, padded) order — so an item's key does not depend on the number of ranks."""
    idx: list[Any] = epoch_indices(num_items, epoch, seed, shuffle, rank, world_size)
    if key_prefix is not None:
        total = -(-num_items // world_size) * world_size
        idx = [(i, f"{key_prefix}:{epoch}:{p}") for i, p in zip(idx, range(rank, total, world_size))]
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class _ListBatchSampler:
    """A batch sampler over a precomputed list of batches (DataLoader workers prefetch from it)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _CyclingBatchSampler:
    """Infinite batch sampler for the auxiliary (COCO) stream, starting at global batch ``start``."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start: int,
        rank: int,
        world_size: int,
        key_prefix: str | None = None,
    ):
        self.args = (num_items, batch_size, seed, rank, world_size)
        self.start = start
        self.key_prefix = key_prefix

    def per_epoch(self) -> int:
        num_items, batch_size, seed, rank, world_size = self.args
        return len(epoch_batches(num_items, batch_size, 0, seed, True, True, rank, world_size)) or 1

    def __iter__(self) -> Iterator[list[int]]:
        num_items, batch_size, seed, rank, world_size = self.args
        k = self.start
        while True:
            epoch, pos = divmod(k, self.per_epoch())
            keys = self.key_prefix
            batches = epoch_batches(num_items, batch_size, epoch, seed, True, True, rank, world_size, keys)
            if not batches:  # fewer items than one batch: keep the short batch rather than loop forever
                batches = epoch_batches(
                    num_items, batch_size, epoch, seed, True, False, rank, world_size, keys
                )
            for b in batches[pos:]:
                yield b
                k += 1


class InterleavedLoader:
    """Yields ``{"vg": vg_batch, "coco": coco_batch}`` per step (``"coco"`` absent when ``coco`` is None).

    vg, coco: map-style datasets (already wrapping their transforms); collate_fn turns a list of items into
    a batch. ``len()`` is the number of VG batches of one epoch on this rank. Call :meth:`set_epoch` before
    iterating (the DataModule does it from the trainer's epoch); :meth:`state_dict` records the epoch and
    the number of batches handed out so far. augment_draws: ``global`` | ``keyed`` (module docstring).
    """

    def __init__(
        self,
        vg: Dataset,
        coco: Dataset | None,
        collate_fn: Callable[[list[Any]], Any],
        batch_size_vg: int,
        batch_size_coco: int,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        augment_draws: str = "global",
    ) -> None:
        self.keyed = check_augment_draws(augment_draws, "InterleavedLoader")
        if batch_size_vg <= 0 or (coco is not None and batch_size_coco <= 0):
            raise ValueError(
                f"InterleavedLoader: batch sizes must be positive ({batch_size_vg}, {batch_size_coco})"
            )
        self.vg, self.coco = vg, coco
        self.collate_fn = collate_fn
        self.batch_size_vg, self.batch_size_coco = batch_size_vg, batch_size_coco
        self.seed, self.num_workers, self.drop_last = seed, num_workers, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._vg_start = 0  # batches of the current epoch already handed out
        self._coco_start = 0  # COCO batches handed out since the start of training
        self._handed = 0
        self._coco_handed = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._vg_start = 0

    def _vg_batches(self) -> list[list[int]]:
        return epoch_batches(
            len(self.vg),
            self.batch_size_vg,
            self.epoch,
            self.seed,
            True,
            self.drop_last,
            self.rank,
            self.world_size,
            f"aug:{self.seed}:vg" if self.keyed else None,
        )

    def __len__(self) -> int:
        return len(self._vg_batches())

    def _loader(self, dataset: Dataset, batch_sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.seed) if self.keyed else None,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        vg_batches = self._vg_batches()[self._vg_start :]
        vg_iter = iter(self._loader(self.vg, _ListBatchSampler(vg_batches)))
        coco_iter = None
        if self.coco is not None:
            sampler = _CyclingBatchSampler(
                len(self.coco), self.batch_size_coco, self.seed + _COCO_SEED_OFFSET, self._coco_start,
                self.rank, self.world_size, f"aug:{self.seed}:coco" if self.keyed else None,
            )  # fmt: skip
            coco_iter = iter(self._loader(self.coco, sampler))
        self._handed = self._vg_start
        self._coco_handed = self._coco_start
        remaining = len(vg_batches)
        for vg_batch in vg_iter:
            out = {"vg": vg_batch}
            if coco_iter is not None:
                out["coco"] = next(coco_iter)
                self._coco_handed += 1
            self._handed += 1
            remaining -= 1
            if remaining == 0:
                # The last batch of the epoch is handed out: move the state to the start of the next epoch
                # now, because the training loop stops after len(self) batches without exhausting us.
                self.epoch += 1
                self._handed = 0
            self._vg_start, self._coco_start = self._handed, self._coco_handed
            yield out

    # -- resumption (Lightning calls these on stateful iterables) ---------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "vg_batches": self._handed, "coco_batches": self._coco_handed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._vg_start = int(state["vg_batches"])
        self._coco_start = int(state["coco_batches"])
