"""``trainer.deterministic=cpu`` (the default, :func:`sgseg.lit.factory.build_trainer`): torch's deterministic
algorithms on a CPU run, so a multi-threaded run is bit-reproducible across processes (README "Run to run")."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from sgseg.lit.build import ConfigError
from sgseg.lit.factory import build_trainer

from .conftest import REPO


def _cfg(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=["trainer.accelerator=cpu", "logger={}", "callbacks={}", f"paths.output_dir={tmp_path}",
                       *overrides],
        )  # fmt: skip


def _indexing_grad(src: torch.Tensor, idx: torch.Tensor, threads: int) -> torch.Tensor:
    """The gradient of a gather by advanced indexing (its backward: ``index_put_`` with accumulate)."""
    torch.set_num_threads(threads)
    x = torch.zeros(500, src.shape[1], requires_grad=True)
    (x[idx] * src).sum().backward()
    return x.grad


def test_cpu_default_makes_the_indexing_backward_thread_independent(tmp_path):
    """Without deterministic algorithms, two threads add the rows of repeated indices in a varying order
    (measured: 5 repeats in one process, 4 unlike the first, none equal to one thread's); with them every
    repeat equals the 1-thread result bit for bit."""
    threads = torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(False)
        build_trainer(_cfg(tmp_path), None, tmp_path, "x", None)
        assert torch.are_deterministic_algorithms_enabled()
        g = torch.Generator().manual_seed(0)
        src, idx = torch.randn(200_000, 64, generator=g), torch.randint(0, 500, (200_000,), generator=g)
        one = _indexing_grad(src, idx, 1)
        for _ in range(5):
            assert torch.equal(_indexing_grad(src, idx, 2), one)
        # Lightning's own values keep their meaning
        build_trainer(_cfg(tmp_path, "trainer.deterministic=false"), None, tmp_path, "x", None)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


def test_deterministic_value_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.deterministic='gpu'.*cpu"):
        build_trainer(_cfg(tmp_path, "trainer.deterministic=gpu"), None, tmp_path, "x", None)
