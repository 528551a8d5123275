"""The random number generators' states in every checkpoint, so a resumed run continues their streams.

Where this sits: a callback of every Trainer the runners build (``conf/callbacks/default.yaml``). Lightning
checkpoints the weights, the optimiser, the loops and the stateful training loader, but not the RNGs: a run
resumed with ``ckpt_path=last`` re-seeds them (``pl.seed_everything``) and so replays the draws of step 0 —
the model's dropout masks and relation-pair sampling (the global torch RNG), and with
``data.loader.augment_draws=global`` the training scales and flips (the global ``random``). This callback
stores Python's ``random``, NumPy's global and torch's CPU (and CUDA) generator states of every rank at each
checkpoint and puts them back when the run resumes.

Together with ``augment_draws=keyed`` (whose loaders draw nothing from the global generators) a run killed and
resumed on one process trains the same numbers as the uninterrupted run (tested through a real Trainer). With
``augment_draws=global`` the resumed run's augmentation continues from the state saved with the checkpoint, but
the loaders draw from the global generators too: not exact (a resumed tiny stage-2 run ends with other weights).
A checkpoint written by a different number of ranks than the resuming run's keeps the fresh seeds, with a warning.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback


def collect() -> dict[str, Any]:
    """This process's generator states, as tensors and plain Python values (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global state is what is saved)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
            pos,
            has_gauss,
            cached,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set this process's generators to ``state`` (from :func:`collect`)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            warnings.warn(
                f"RngStates: the checkpoint holds CUDA RNG states of {len(state['cuda'])} devices, this process "
                f"sees {torch.cuda.device_count()}; the CUDA generators keep their fresh seeds",
                stacklevel=2,
            )
        else:
            torch.cuda.set_rng_state_all(state["cuda"])


class RngStates(Callback):
    """Saves every rank's RNG states with each checkpoint (``state_dict``) and restores this rank's on resume
    (``load_state_dict``); see the module docstring."""

    def state_dict(self) -> dict[str, Any]:
        mine = collect()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, mine)  # every rank dumps the checkpoint; rank 0 writes it
            return {"ranks": ranks}
        return {"ranks": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks") or []
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        rank = dist.get_rank() if world > 1 else 0
        if len(ranks) != world:
            warnings.warn(
                f"RngStates: the checkpoint holds the RNG states of {len(ranks)} process(es), this run has "
                f"{world}; the random generators keep their fresh seeds (dropout, pair sampling and "
                "augmentation draws will differ from the uninterrupted run)",
                stacklevel=2,
            )
            return
        restore(ranks[rank])
