"""Keyed augmentation draws and checkpointed RNG states: a resumed run continues every random stream."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from sgseg.data.interleave import InterleavedLoader
from sgseg.data.transforms import Compose, HorizontalFlip, Resize, TransformedDataset
from sgseg.lit.datamodule import SceneGraphDataModule
from sgseg.lit.rng import RngStates, collect, restore


def _item(h=10, w=20):
    return {
        "image": torch.zeros(3, h, w, dtype=torch.uint8),
        "boxes": torch.tensor([[2.0, 1.0, 6.0, 5.0]]),
        "labels": torch.tensor([3]),
    }


def test_transforms_draw_from_the_given_rng_and_from_global_random_by_default():
    resize = Resize((10, 20, 30), 1000)
    # default: the process-wide `random`, draw for draw what the transforms always did
    random.seed(5)
    got = [resize(_item())["image"].shape[-2] for _ in range(20)]
    random.seed(5)
    assert got == [random.choice((10, 20, 30)) for _ in range(20)]
    # with an rng: its draws, and the global state is left alone
    before = random.getstate()
    for key in ("a", "b", "c:0:17"):
        assert resize(_item(), rng=random.Random(key))["image"].shape[-2] == random.Random(key).choice(
            (10, 20, 30)
        )
        flipped = HorizontalFlip(0.5)(_item(), rng=random.Random(key))["boxes"][0, 0].item() == 14.0
        assert flipped == (random.Random(key).random() < 0.5)
    assert random.getstate() == before
    # Compose hands the rng to every transform, in order (one generator: scale first, then flip)
    both = Compose([Resize((10, 20), 1000), HorizontalFlip(0.5)])
    g = random.Random("k")
    size, flip = g.choice((10, 20)), g.random() < 0.5
    out = both(_item(), rng=random.Random("k"))
    assert out["image"].shape[-2] == size
    assert (out["boxes"][0, 2].item() == out["image"].shape[-1] - 2 * size / 10) == flip
    # TransformedDataset: (index, key) → that key's draws; a plain index → the global random
    ds = TransformedDataset([_item()] * 3, Resize((10, 20, 30), 1000))
    assert ds[(1, "k")]["image"].shape[-2] == random.Random("k").choice((10, 20, 30))
    random.seed(9)
    plain = ds[2]["image"].shape[-2]
    random.seed(9)
    assert plain == random.choice((10, 20, 30))


def _draw(item, rng=None):
    """A transform whose output is its item and one draw: what the loaders hand out shows the augmentation."""
    return (item, round((rng or random).random(), 12))


def _ds(n, base=0):
    return TransformedDataset(list(range(base, base + n)), _draw)


def _loader(mode, workers=0, rank=0, world=1, seed=3, n=12):
    return InterleavedLoader(
        _ds(n), _ds(5, base=100), list, 3, 2, seed=seed, num_workers=workers, rank=rank, world_size=world,
        augment_draws=mode,
    )  # fmt: skip


def _take(loader, steps=None):
    out = []
    for k, b in enumerate(loader):
        out.append((tuple(b["vg"]), tuple(b["coco"])))
        if steps is not None and k + 1 == steps:
            break
    return out


def test_keyed_draws_are_the_same_in_worker_processes_and_global_ones_are_not():
    def two_epochs(loader):
        return _take(loader) + _take(loader)

    keyed = two_epochs(_loader("keyed"))
    assert two_epochs(_loader("keyed", workers=2)) == keyed
    draws = [d for vg, _ in keyed for _, d in vg]
    assert len(set(draws)) == len(draws)  # a fresh draw per item
    random.seed(0)
    main = _take(_loader("global"))
    random.seed(0)
    workers = _take(_loader("global", workers=2))
    assert [[i for i, _ in vg] for vg, _ in main] == [[i for i, _ in vg] for vg, _ in workers]  # same batches
    assert main != workers  # ... but the workers draw from their own seeds


def test_keyed_resume_mid_epoch_continues_the_draws_and_global_does_not():
    for mode in ("keyed", "global"):
        random.seed(1)
        full = _loader(mode)
        reference = _take(full) + _take(full)
        random.seed(1)  # the run's seed_everything
        killed = _loader(mode)
        first = _take(killed, steps=3)
        state = killed.state_dict()
        random.seed(1)  # the resumed process seeds again
        resumed = _loader(mode)
        resumed.load_state_dict(state)
        rest = _take(resumed) + _take(resumed)
        strip = [([i for i, _ in v], [i for i, _ in c]) for v, c in first + rest]
        assert strip == [([i for i, _ in v], [i for i, _ in c]) for v, c in reference]  # batches: both modes
        assert (first + rest == reference) == (mode == "keyed")


def test_keyed_draws_of_an_item_do_not_depend_on_the_number_of_ranks():
    def per_item(world):
        out = {}
        for rank in range(world):
            for vg, _ in _take(_loader("keyed", rank=rank, world=world)):
                out.update(dict(vg))
        return out

    one = per_item(1)
    assert len(one) == 12 and per_item(2) == one and per_item(4) == one  # 6 and 3 items per rank: no drop


def test_keyed_loaders_leave_the_global_torch_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _take(_loader("keyed"), steps=5)
    assert torch.equal(torch.get_rng_state(), before)
    _take(_loader("global"), steps=5)  # a DataLoader draws its base seed from the global generator
    assert not torch.equal(torch.get_rng_state(), before)


def test_unknown_augment_draws_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="augment_draws"):
        _loader("per-worker")
    with pytest.raises(ValueError, match=r"data\.loader\.augment_draws"):
        SceneGraphDataModule(vg=lambda split: None, augment_draws="per-worker")


def _draws():
    """One draw from each global generator the checkpoint covers (NumPy's legacy global state included)."""
    return random.random(), np.random.rand(), torch.rand(2).tolist()  # noqa: NPY002


def test_rng_states_round_trip_and_refuse_another_number_of_ranks():
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002
    torch.manual_seed(3)
    saved = collect()
    first = _draws()
    restore(saved)
    assert _draws() == first
    cb = RngStates()
    state = cb.state_dict()
    assert len(state["ranks"]) == 1
    after = _draws()
    cb.load_state_dict(state)
    assert _draws() == after
    # what a checkpoint holds loads with torch.load(weights_only=True): tensors and plain Python values only
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    cb.load_state_dict(torch.load(buf, weights_only=True))
    assert _draws() == after
    with pytest.warns(UserWarning, match="2 process"):
        cb.load_state_dict({"ranks": [saved, saved]})


@pytest.mark.parametrize("with_rng_states", [True, False])
def test_lightning_resume_continues_data_and_model_randomness(tmp_path, with_rng_states):
    """Through a real Trainer: a run resumed from a mid-epoch checkpoint sees the same batches, the same
    augmentation draws and the same model-side random numbers (dropout, pair sampling: the global torch RNG) as
    the uninterrupted run — with :class:`RngStates`; without it the model-side draws restart from the seed."""
    import pytorch_lightning as pl

    from .lightning_recorder import Recorder

    def record(batch, noise):
        return batch["vg"], batch["coco"], noise

    def fit(ckpt=None, callbacks=()):
        pl.seed_everything(11)
        module = Recorder(record)
        trainer = pl.Trainer(
            max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=bool(callbacks), callbacks=list(callbacks), default_root_dir=tmp_path / "root",
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=_loader("keyed", n=10), ckpt_path=ckpt)
        return module.seen

    ck = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}"
    )
    extra = [RngStates()] if with_rng_states else []
    full = fit(callbacks=[ck, *extra])
    assert len(full) == 6  # 10 items, batches of 3, last dropped: 3 steps per epoch
    for step in (2, 4):  # mid-epoch 0, and mid-epoch 1 after an epoch boundary
        resumed = fit(str(tmp_path / f"step={step}.ckpt"), callbacks=extra)
        assert [s[:2] for s in resumed] == [s[:2] for s in full[step:]]  # batches + augmentation: keyed
        assert (resumed == full[step:]) == with_rng_states
