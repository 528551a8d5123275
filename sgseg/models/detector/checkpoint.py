"""Saving, loading and converting detector weights.

Where this sits: between stage 1 and stage 2. Stage 1 exports the detector as a plain file
(``{"format", "config", "state_dict"}``) or leaves a Lightning checkpoint; stage 2 rebuilds the detector from
either with :func:`load_detector` (``detector.checkpoint=PATH``). :func:`load_torchvision_maskrcnn` starts
the detector from a COCO-trained torchvision Mask R-CNN (the paper's ResNeXt-101-FPN detector is COCO
initialised): backbone/FPN, RPN and box head load as they are, and the 91-way torchvision COCO layout
(indexed by COCO category id, with gaps) is mapped onto our contiguous 1..80 (box classifier/regressor rows,
mask channels).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sgseg.data.label_spaces import COCO_CATEGORY_IDS
from sgseg.models.detector.backbones import build_backbone
from sgseg.models.detector.detector import JointDetector

EXPORT_FORMAT = "sgseg.detector/1"


def build_detector(config: Mapping[str, Any]) -> JointDetector:
    """A fresh (untrained) JointDetector from its ``config`` dict (``JointDetector.config``)."""
    config = dict(config)
    backbone_cfg = dict(config.pop("backbone"))
    with warnings.catch_warnings():
        # the weights come from the checkpoint, the random-init warning would mislead
        warnings.simplefilter("ignore", UserWarning)
        backbone = build_backbone(**backbone_cfg, pretrained=None)
    return JointDetector(backbone, **config)


def export_detector(detector: JointDetector, path: str | os.PathLike) -> Path:
    """Save ``{"format", "config", "state_dict"}`` (CPU tensors) so :func:`load_detector` rebuilds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in detector.state_dict().items()}
    torch.save({"format": EXPORT_FORMAT, "config": detector.config, "state_dict": state}, path)
    return path


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> JointDetector:
    """Rebuild a trained detector from an exported file or a DetectorPretrainModule Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"detector checkpoint not found at {path}; set detector.checkpoint to the file stage 1 wrote "
            "(its export or its Lightning .ckpt)"
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if isinstance(ckpt, dict) and ckpt.get("format") == EXPORT_FORMAT:
        config, state = ckpt["config"], ckpt["state_dict"]
    elif isinstance(ckpt, dict) and "state_dict" in ckpt and "detector_config" in ckpt:
        config = ckpt["detector_config"]
        state = {
            k.removeprefix("detector."): v for k, v in ckpt["state_dict"].items() if k.startswith("detector.")
        }
    else:
        raise ValueError(
            f"{path} is neither a detector export ({EXPORT_FORMAT}) nor a DetectorPretrainModule checkpoint "
            "(a Lightning .ckpt with 'detector_config'); re-export it with export_detector(...)"
        )
    detector = build_detector(config)
    detector.load_state_dict(state)
    return detector.to(map_location)


def _coco_rows(t: Tensor, with_background: bool, per_class: int = 1) -> Tensor:
    """Rows of a torchvision 91-index COCO tensor rearranged to ours (background + 80 contiguous / 80)."""
    ids = list(COCO_CATEGORY_IDS)
    if with_background:
        ids = [0, *ids]
    idx = torch.tensor(ids, dtype=torch.long)
    if per_class > 1:
        idx = (idx[:, None] * per_class + torch.arange(per_class)).flatten()
    return t[idx]


def torchvision_maskrcnn_to_joint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision ``MaskRCNN`` state dict onto JointDetector names.

    backbone.* and rpn.* keep their names; ``roi_heads.box_head`` → ``box_head``; ``roi_heads.box_predictor``
    → ``coco_predictor`` with rows re-indexed from category ids (91) to 0..80; ``roi_heads.mask_head`` →
    ``mask_head``; ``roi_heads.mask_predictor`` → ``mask_predictor`` with the 91 mask channels re-indexed to
    our 80 (channel c-1 = class c). The VG classifier has no counterpart and is not in the result.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("backbone.", "rpn.")):
            out[key] = value
        elif key.startswith("roi_heads.box_head."):
            out[key.removeprefix("roi_heads.")] = value
        elif key.startswith("roi_heads.box_predictor."):
            name = key.removeprefix("roi_heads.box_predictor.")
            if value.shape[0] not in (91, 91 * 4):
                raise ValueError(
                    f"{key}: expected torchvision's 91-class COCO layout, got {tuple(value.shape)}"
                )
            per_class = 4 if name.startswith("bbox_pred") else 1
            out[f"coco_predictor.{name}"] = _coco_rows(value, with_background=True, per_class=per_class)
        elif key.startswith("roi_heads.mask_head."):
            out[key.removeprefix("roi_heads.")] = value
        elif key.startswith("roi_heads.mask_predictor."):
            name = key.removeprefix("roi_heads.mask_predictor.")
            if name.startswith("mask_fcn_logits"):
                if value.shape[0] != 91:
                    raise ValueError(f"{key}: expected 91 mask channels, got {tuple(value.shape)}")
                value = _coco_rows(value, with_background=False)
            out[f"mask_predictor.{name}"] = value
    return out


def load_torchvision_maskrcnn(
    detector: JointDetector, state_dict: Mapping[str, Tensor] | str | os.PathLike
) -> list[str]:
    """Load a torchvision COCO Mask R-CNN (state dict or file) into the shared parts and the COCO heads.

    Every detector weight except the VG classifier must be covered (else ``KeyError`` naming them); shapes
    must agree (same backbone, FPN width 256, box head 1024, mask head 4 × 256). Returns the detector keys
    left at their initialisation (the ``vg_predictor.*`` ones).
    """
    if not isinstance(state_dict, Mapping):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        if "model" in state_dict:  # torchvision reference-scripts checkpoints
            state_dict = state_dict["model"]
    mapped = torchvision_maskrcnn_to_joint(state_dict)
    result = detector.load_state_dict(mapped, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith("vg_predictor.") and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise KeyError(
            f"torchvision Mask R-CNN state dict lacks {len(missing)} detector weights, e.g. {missing[:4]}"
        )
    if result.unexpected_keys:
        raise KeyError(f"unexpected keys after mapping: {result.unexpected_keys[:4]}")
    return list(result.missing_keys)
