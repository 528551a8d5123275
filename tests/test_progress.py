"""The main job's progress output: rich bar in a terminal, plain timed lines in a log file."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import RichProgressBar

from sgseg.lit import progress
from sgseg.lit.progress import LogProgress, progress_bar


def test_progress_bar_is_rich_in_a_terminal_and_lines_in_a_file(monkeypatch):
    assert isinstance(progress_bar(terminal=True), RichProgressBar)
    assert isinstance(progress_bar(interval_s=5, terminal=False), LogProgress)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    bar = progress_bar(interval_s=7)
    assert isinstance(bar, LogProgress) and bar.interval_s == 7.0
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(), RichProgressBar)
    with pytest.raises(ValueError, match="interval_s"):
        LogProgress(interval_s=-1)


def test_log_progress_prints_at_the_interval_with_rate_and_eta(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    trainer = SimpleNamespace(
        global_step=0, estimated_stepping_batches=10, current_epoch=0, is_global_zero=True,
        callback_metrics={"train/loss": torch.tensor(1.5), "train/loss_rel": torch.tensor(0.25), "val/mR@50": 0.3},
    )  # fmt: skip
    bar = LogProgress(interval_s=30)
    bar.on_train_start(trainer, None)

    def step(n: int, t: float) -> str:
        trainer.global_step, clock[0] = n, 100.0 + t
        bar.on_train_batch_end(trainer, None, None, None, n - 1)
        return capsys.readouterr().out

    assert step(1, 10.0) == ""  # within the interval: nothing
    assert step(2, 29.9) == ""
    line = step(3, 31.0)  # 3 steps in 31 s: 0.10 it/s; 7 left at that rate: 72 s
    assert line == (
        "[train] step 3/10 (30%) epoch 0 | loss 1.5000 loss_rel 0.2500 | 0.10 it/s | elapsed 0:31 | ETA 1:12\n"
    )
    assert step(4, 40.0) == ""  # the interval restarts at the last line
    line = step(10, 50.0)  # the last step always prints; rate over the lines' interval: 7 steps in 19 s
    assert line.startswith("[train] step 10/10 (100%)") and "| 0.37 it/s | elapsed 0:50 | ETA 0:00" in line
    bar.on_train_end(trainer, None)
    assert capsys.readouterr().out == ""  # already said


def test_log_progress_without_a_known_total(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=float("inf"), current_epoch=2,
                              is_global_zero=True, callback_metrics={})  # fmt: skip
    bar = LogProgress(interval_s=0)
    bar.on_train_start(trainer, None)
    trainer.global_step, clock[0] = 5, 10.0
    bar.on_train_batch_end(trainer, None, None, None, 4)
    out = capsys.readouterr().out
    assert out == "[train] step 5/? epoch 2 | loss n/a | 0.50 it/s | elapsed 0:10 | ETA ?\n"
