"""A LightningModule that records what each training step saw — for the resumption tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch


class Recorder(pl.LightningModule):
    """Appends ``record(batch, noise)`` to ``self.seen`` every step; ``noise`` is ``torch.rand(3)`` from the
    global generator, where the model's dropout masks and pair sampling draw."""

    def __init__(self, record: Callable[[Any, list[float]], Any]) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.record = record
        self.seen: list[Any] = []

    def training_step(self, batch, batch_idx):
        noise = torch.rand(3)
        self.seen.append(self.record(batch, noise.tolist()))
        return self.lin(noise[:1, None]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
