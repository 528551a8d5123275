"""`detector=mmdet_mask_rcnn` / `mmdet_tiny` compose in every venv; without the optional stack building one is
one clear error naming the install command (the backend itself is tested in test_mmdet_backend.py)."""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir

from sgseg.lit.build import ConfigError, build_detector

from .conftest import REPO


def _compose(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=synthetic_detector", *overrides])


@pytest.mark.parametrize("name", ["mmdet_mask_rcnn", "mmdet_tiny"])
def test_mmdet_detector_configs_compose(name):
    cfg = _compose(f"detector={name}")
    assert cfg.detector.backend == "mmdet"
    assert cfg.detector.model_config == (
        "tiny_mask_rcnn.py" if name == "mmdet_tiny" else "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
    )
    # the torchvision detector's keys are not carried over into the mmdet one
    assert "backbone" not in cfg.detector and "net" not in cfg.detector
    assert cfg.detector.trainer.max_steps == (800 if name == "mmdet_tiny" else 270000)


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is not None, reason="mmdet is installed here")
def test_without_mmdet_the_error_names_the_install_command():
    with pytest.raises(ConfigError, match="make install-mmdet"):
        build_detector(_compose("detector=mmdet_tiny"), 150, 80)
