"""The checkpoint tested after stage 2 is the one validated best — not a later step's weights.

With only the periodic ``every_n_train_steps`` checkpoint monitoring ``val/mR@50``, Lightning saved "best" from
the train loop using the previous validation's value, so the main job tested the weights of step 450 while
its best validation was at step 850. ``sgseg.lit.factory.callbacks`` adds a checkpoint saved at validation end.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.demos.boring_classes import BoringModel

from sgseg.lit.factory import best_checkpoint
from sgseg.lit.factory import callbacks as _callbacks
from sgseg.predict import find_checkpoint


class _Improving(BoringModel):
    """Validation score = 1 - 1/(1 + step): better at every validation."""

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val/mR@50", 1.0 - 1.0 / (1.0 + self.global_step))
        return out


def test_best_checkpoint_is_the_validated_step(tmp_path):
    cfg = OmegaConf.create(
        {"callbacks": {"model_checkpoint": {
            "_target_": "pytorch_lightning.callbacks.ModelCheckpoint", "save_last": True,
            "every_n_train_steps": 3}}}
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=5, limit_val_batches=2, num_sanity_val_steps=0,
        callbacks=_callbacks(cfg, tmp_path, "val/mR@50"), logger=False, enable_progress_bar=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(_Improving())
    best = best_checkpoint(trainer)
    # validations end epochs at steps 5 and 10; the periodic callback saved at steps 3, 6, 9 (+ last)
    assert best.endswith("best-step=10.ckpt"), best
    assert torch.load(best, weights_only=False)["global_step"] == 10
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # sgseg.predict / notebooks load the same file as "best", not the periodic checkpoint beside it
    assert len(list((tmp_path / "checkpoints").glob("*.ckpt"))) == 3
    assert find_checkpoint(tmp_path, "best") == Path(best)
