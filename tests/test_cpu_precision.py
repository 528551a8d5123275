"""bf16 autocast on a CPU whose oneDNN LSTM cannot run under it: one clear error before training, not a crash."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

import sgseg.lit.build as build
from sgseg.lit.build import ConfigError, check_cpu_precision


def _trainer(precision: str) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False)


def test_probe_says_whether_lstm_runs_under_cpu_bf16_autocast():
    lstm = torch.nn.LSTM(3, 5)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.ones(4, 2, 3))
        works = True
    except RuntimeError:
        works = False
    assert build.cpu_autocast_lstm_works() is works


def test_bf16_mixed_with_lstm_on_such_a_cpu_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setattr(build, "cpu_autocast_lstm_works", lambda: False)
    with_lstm = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LSTM(2, 2))
    with pytest.raises(ConfigError, match=r"trainer\.precision=bf16-mixed.*trainer\.precision=32"):
        check_cpu_precision(_trainer("bf16-mixed"), with_lstm)
    check_cpu_precision(_trainer("32-true"), with_lstm)  # float32: nothing to refuse
    check_cpu_precision(_trainer("bf16-mixed"), torch.nn.Linear(2, 2))  # no LSTM (the detector): fine
    monkeypatch.setattr(build, "cpu_autocast_lstm_works", lambda: True)
    check_cpu_precision(_trainer("bf16-mixed"), with_lstm)  # a CPU where it runs
