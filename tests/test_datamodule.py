"""Transforms, collation and the interleaved, resumable VG + COCO stream."""

from __future__ import annotations

import pytest
import torch

from sgseg.data.collate import collate
from sgseg.data.interleave import InterleavedLoader, epoch_indices
from sgseg.data.transforms import HorizontalFlip, Resize, flip_predicate_map, hflip


def _item(image_id=0, h=10, w=20, with_masks=False):
    img = torch.arange(3 * h * w, dtype=torch.int64).reshape(3, h, w).remainder(256).to(torch.uint8)
    boxes = torch.tensor([[2.0, 1.0, 6.0, 5.0], [10.0, 0.0, 20.0, 10.0]])
    item = {
        "image": img,
        "boxes": boxes,
        "labels": torch.tensor([3, 7]),
        "relations": torch.tensor([[0, 1, 1], [1, 0, 2]]),
        "image_id": image_id,
    }
    if with_masks:
        m = torch.zeros((2, h, w), dtype=torch.uint8)
        m[0, 1:5, 2:6] = 1
        m[1, 0:10, 10:20] = 1
        item["masks"] = m
        del item["relations"]
    return item


def _mask_box(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_flip_predicate_map_swaps_left_right_only():
    m = flip_predicate_map(["left of", "above", "right of", "on"])
    assert m.tolist() == [0, 3, 2, 1, 4]
    # only "left of" exists: it is kept and marked (negated) for a subject/object swap
    assert flip_predicate_map(["__background__", "above", "left of"]).tolist() == [0, 1, -2]


def test_hflip_swaps_subject_object_of_one_directional_predicates():
    it = _item()
    it["relations"] = torch.tensor([[0, 1, 2], [1, 0, 1]])  # 0 "left of" 1; 1 "above" 0
    out = hflip(it, flip_predicate_map(["above", "left of"]))
    # box 0 [2..6] is left of box 1 [10..20]; after the flip box 1 [0..10] is left of box 0 [14..18]
    assert out["relations"].tolist() == [[1, 0, 2], [1, 0, 1]]
    assert out["boxes"][1, 2] <= out["boxes"][0, 0]


def test_hflip_boxes_masks_predicates_by_hand():
    item = _item(w=20, with_masks=True)
    out = hflip(item)
    # W = 20: box [2, 1, 6, 5] -> [20 - 6, 1, 20 - 2, 5] = [14, 1, 18, 5]
    assert out["boxes"][0].tolist() == [14.0, 1.0, 18.0, 5.0]
    assert out["boxes"][1].tolist() == [0.0, 0.0, 10.0, 10.0]
    # masks follow their boxes exactly
    for k in range(2):
        assert _mask_box(out["masks"][k]) == out["boxes"][k].tolist()
    # flipping twice is the identity
    back = hflip(out)
    assert torch.equal(back["image"], item["image"]) and torch.equal(back["boxes"], item["boxes"])
    assert torch.equal(back["masks"], item["masks"])
    # predicates: 1 = "left of" <-> 3 = "right of"
    pm = flip_predicate_map(["left of", "above", "right of"])
    it = _item()
    it["relations"] = torch.tensor([[0, 1, 1], [1, 0, 2], [0, 1, 3]])
    assert hflip(it, pm)["relations"][:, 2].tolist() == [3, 2, 1]


def test_flip_probability_extremes():
    item = _item()
    assert HorizontalFlip(0.0)(item) is item
    assert torch.equal(HorizontalFlip(1.0)(item)["boxes"], hflip(item)["boxes"])


def test_resize_by_hand_and_masks_stay_binary():
    item = _item(h=10, w=20, with_masks=True)
    out = Resize(20, 1000)(item)
    # shorter side 10 -> 20: scale 2 on both axes
    assert tuple(out["image"].shape) == (3, 20, 40)
    assert out["boxes"][0].tolist() == [4.0, 2.0, 12.0, 10.0]
    assert out["orig_size"] == (10, 20)
    assert set(out["masks"].unique().tolist()) <= {0, 1}
    assert _mask_box(out["masks"][0]) == [4, 2, 12, 10]
    # the max-size cap wins: longer side 20 -> 30 means scale 1.5
    capped = Resize(100, 30)(item)
    assert tuple(capped["image"].shape) == (3, 15, 30)


def test_collate_flat_layout_and_offsets():
    a, b = _item(image_id=5, h=10, w=20), _item(image_id=9, h=12, w=7)
    b["boxes"] = torch.tensor([[0.0, 0.0, 3.0, 3.0], [1.0, 1.0, 5.0, 5.0]])
    images, targets = collate([a, b], size_divisible=32)
    assert tuple(images.tensors.shape) == (2, 3, 32, 32)
    assert images.image_sizes.tolist() == [[10, 20], [12, 7]]
    assert images.image_ids.tolist() == [5, 9]
    assert torch.allclose(images.tensors[0, :, :10, :20], a["image"].float() / 255)
    assert images.tensors[1, :, 12:, :].abs().sum() == 0 and images.tensors[1, :, :, 7:].abs().sum() == 0
    assert targets.image_index.tolist() == [0, 0, 1, 1]
    # second image's relations shifted by 2 boxes
    assert targets.relations.tolist() == [[0, 1, 1], [1, 0, 2], [2, 3, 1], [3, 2, 2]]
    assert targets.rel_image_index.tolist() == [0, 0, 1, 1]


def test_collate_masks_padded_and_errors():
    images, targets = collate([_item(h=10, w=20, with_masks=True)])
    assert tuple(targets.masks.shape) == (2, 32, 32)
    assert targets.masks[:, :10, :20].sum() == 16 + 100
    bad = _item()
    bad["relations"] = torch.tensor([[0, 5, 1]])
    with pytest.raises(ValueError, match="relation refers to object 5"):
        collate([bad])
    with pytest.raises(ValueError, match="do not mix"):
        collate([_item(), _item(with_masks=True)])


class _Ids(torch.utils.data.Dataset):
    def __init__(self, n, base=0):
        self.n, self.base = n, base

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.base + i


def _ids(batch):
    return list(batch)


def _run(loader, steps=None):
    out = []
    for k, b in enumerate(loader):
        out.append((tuple(b["vg"]), tuple(b["coco"]) if "coco" in b else None))
        if steps is not None and k + 1 == steps:
            break
    return out


def test_interleave_one_coco_batch_per_vg_batch_and_epoch_by_vg():
    loader = InterleavedLoader(_Ids(10), _Ids(3, base=100), _ids, batch_size_vg=2, batch_size_coco=2, seed=1)
    assert len(loader) == 5
    ep0 = _run(loader)
    assert len(ep0) == 5
    assert sorted(x for vg, _ in ep0 for x in vg) == list(range(10))  # every VG item once per epoch
    assert all(len(c) == 2 and all(100 <= x < 103 for x in c) for _, c in ep0)  # COCO cycles
    ep1 = _run(loader)
    assert [v for v, _ in ep1] != [v for v, _ in ep0]  # a new permutation in epoch 1
    # deterministic: a fresh loader with the same seed repeats the same two epochs
    again = InterleavedLoader(_Ids(10), _Ids(3, base=100), _ids, batch_size_vg=2, batch_size_coco=2, seed=1)
    assert _run(again) == ep0 and _run(again) == ep1
    # VG-only baseline: no "coco" key
    vg_only = InterleavedLoader(_Ids(4), None, _ids, batch_size_vg=2, batch_size_coco=2)
    assert all(c is None for _, c in _run(vg_only))


def test_interleave_resume_mid_epoch_matches_uninterrupted():
    def make():
        return InterleavedLoader(
            _Ids(10), _Ids(3, base=100), _ids, batch_size_vg=2, batch_size_coco=2, seed=7
        )

    full = make()
    reference = _run(full) + _run(full)
    killed = make()
    first = _run(killed, steps=3)
    state = killed.state_dict()
    assert state == {"epoch": 0, "vg_batches": 3, "coco_batches": 3}
    resumed = make()
    resumed.load_state_dict(state)
    rest = _run(resumed) + _run(resumed)
    assert first + rest == reference


def test_ddp_shards_are_disjoint_and_cover_the_epoch():
    shards = [epoch_indices(10, epoch=3, seed=0, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # 10 items padded to 12 by wrap-around
    flat = [x for s in shards for x in s]
    assert set(flat) == set(range(10)) and len(flat) == 12


def test_lightning_resume_mid_epoch_sees_the_same_batches(tmp_path):
    """Kill-and-resume through a real Trainer: the checkpoint carries the loader state (Lightning calls
    state_dict/load_state_dict on stateful iterables) and the resumed run continues the exact sequence."""
    import pytorch_lightning as pl

    from .lightning_recorder import Recorder

    def record(batch, noise):
        return batch["vg"].tolist(), batch["coco"].tolist()

    def loader():
        return InterleavedLoader(_Ids(10), _Ids(3, base=100), torch.tensor, 2, 2, seed=3)

    def trainer(**kw):
        return pl.Trainer(
            max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False, **kw
        )

    ck = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    full = Recorder(record)
    trainer(callbacks=[ck]).fit(full, train_dataloaders=loader())
    assert len(full.seen) == 10
    assert full.seen[:5] != full.seen[5:]  # epoch 1 has its own permutation
    for step in (3, 6):  # mid-epoch 0, and mid-epoch 1 after an epoch boundary
        resumed = Recorder(record)
        trainer(enable_checkpointing=False).fit(
            resumed, train_dataloaders=loader(), ckpt_path=str(tmp_path / f"step={step}.ckpt")
        )
        assert resumed.seen == full.seen[step:]


def test_interleave_with_worker_processes_gives_the_same_batches():
    def make(workers):
        return InterleavedLoader(_Ids(12), _Ids(5, base=100), _ids, 3, 2, seed=5, num_workers=workers)

    assert _run(make(2)) == _run(make(0))
