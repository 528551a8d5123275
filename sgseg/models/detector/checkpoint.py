"""Saving, loading and converting detector weights.

Where this sits: between stage 1 and stage 2, and before stage 1. Stage 1 exports the detector as a plain
file (``{"format", "config", "state_dict"}``) or leaves a Lightning checkpoint; stage 2 rebuilds the detector
from either with :func:`load_detector` (``detector.checkpoint=PATH``). Stage 1 itself can start from a
COCO-trained Mask R-CNN (``detector.init=PATH``, :func:`load_coco_maskrcnn`; the paper's ResNeXt-101-FPN
detector is COCO initialised), in any of three forms:

* torchvision's ``maskrcnn_resnet50_fpn`` / ``_v2`` weights (:func:`torchvision_maskrcnn_to_joint`; the _v2
  layout needs the detector built as conf/detector/resnet50_fpn_v2.yaml): backbone/FPN, RPN and box head
  load as they are; the 91-way COCO layout (indexed by category id, with gaps) is mapped onto
  our contiguous 1..80 (box classifier/regressor rows, mask channels), and the 10 unused ids stay in the
  softmax as extra background logits (:class:`~.detector.MergedBackgroundPredictor`), so the COCO head gives
  torchvision's own scores.
* a detectron2 Mask R-CNN checkpoint (``model_final_*.pkl`` of the model zoo, or a detectron2 ``.pth``),
  read without detectron2 (:func:`read_detectron2_checkpoint`, a restricted unpickler) and renamed by
  :func:`detectron2_maskrcnn_to_joint`; detectron2's BGR 0-255 input normalisation is folded into the first
  conv so the detector keeps its RGB [0, 1] input and ImageNet statistics.
* the output of ``python -m sgseg.models.detector.convert SRC DST`` (either of the above, already in
  JointDetector names).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sgseg.data.label_spaces import COCO_CATEGORY_IDS
from sgseg.models.detector.backbones import _RESNETS, build_backbone
from sgseg.models.detector.detector import IMAGENET_MEAN, IMAGENET_STD, JointDetector

EXPORT_FORMAT = "sgseg.detector/1"
INIT_FORMAT = "sgseg.detector-init/1"

# detectron2's input normalisation (cfg.MODEL.PIXEL_MEAN / PIXEL_STD, BGR order, 0-255 pixels): the mean is
# the default of every model-zoo model; the std is that of the FAIR ResNeXt models (X-101-32x8d, the
# paper's); MSRA ResNets use (1, 1, 1)
DETECTRON2_PIXEL_MEAN = (103.530, 116.280, 123.675)
DETECTRON2_X101_PIXEL_STD = (57.375, 57.120, 58.395)


def build_detector(config: Mapping[str, Any]) -> JointDetector:
    """A fresh (untrained) JointDetector from its ``config`` dict (``JointDetector.config``)."""
    config = dict(config)
    if config.get("backend") == "mmdet":  # detector=mmdet_mask_rcnn (optional stack, imported on demand)
        from sgseg.models.detector.mmdet_backend import build_mmdet_detector

        return build_mmdet_detector(config)
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


PROVENANCE_FILE = "detector_source.json"


def detector_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a frozen detector file: its resolved path, size, SHA-256 and, when stage 1 wrote them
    beside it, its validation metrics (``detector_metrics.json``; else None).

    Stage 2 writes this into its run directory (:data:`PROVENANCE_FILE`), so that runs can be matched to the
    detector they were trained on by content, not by path: a detector re-trained with the same command on a
    machine with other CPU kernels is a different file (measured: VG mAP@0.5 84.4 on one machine, 82.6 on
    another, from the same command and seed), and paired comparisons need both runs on the same one."""
    path = Path(path)
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    metrics_file = path.parent / "detector_metrics.json"
    metrics = None
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{metrics_file} (beside the detector {path}) is not readable JSON ({err}); fix or remove it"
            ) from err
    return {
        "checkpoint": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "metrics": metrics,
    }


def _coco_rows(t: Tensor, with_background: bool, per_class: int = 1, unused: bool = False) -> Tensor:
    """Rows of a torchvision 91-index COCO tensor rearranged to ours: [background,] the 80 contiguous
    classes [, the 10 unused category ids as extra background rows when ``unused``]."""
    ids = list(COCO_CATEGORY_IDS)
    if with_background:
        ids = [0, *ids]
    if unused:
        ids += sorted(set(range(1, 91)) - set(COCO_CATEGORY_IDS))
    idx = torch.tensor(ids, dtype=torch.long)
    if per_class > 1:
        idx = (idx[:, None] * per_class + torch.arange(per_class)).flatten()
    return t[idx]


def torchvision_maskrcnn_to_joint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision ``MaskRCNN`` state dict (``maskrcnn_resnet50_fpn`` or ``_v2``) onto JointDetector names.

    backbone.* and rpn.* keep their names; ``roi_heads.box_head`` → ``box_head``; ``roi_heads.box_predictor``
    → ``coco_predictor``: classifier rows [0, the 80 used category ids, the 10 unused ids] (91 rows: load
    into a detector with ``coco_extra_background=10``, which :func:`load_coco_maskrcnn` sets), regressor
    rows [0, the 80 used ids] × 4; ``roi_heads.mask_head`` → ``mask_head``; ``roi_heads.mask_predictor`` →
    ``mask_predictor`` with the 91 mask channels re-indexed to our 80 (channel c-1 = class c). The VG
    classifier has no counterpart and is not in the result.
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
            if name.startswith("bbox_pred"):
                out[f"coco_predictor.{name}"] = _coco_rows(value, with_background=True, per_class=4)
            else:
                out[f"coco_predictor.{name}"] = _coco_rows(value, with_background=True, unused=True)
        elif key.startswith("roi_heads.mask_head."):
            out[key.removeprefix("roi_heads.")] = value
        elif key.startswith("roi_heads.mask_predictor."):
            name = key.removeprefix("roi_heads.mask_predictor.")
            if name.startswith("mask_fcn_logits"):
                if value.shape[0] != 91:
                    raise ValueError(f"{key}: expected 91 mask channels, got {tuple(value.shape)}")
                value = _coco_rows(value, with_background=False)
            out[f"mask_predictor.{name}"] = value
        else:
            raise KeyError(f"{key}: not a torchvision MaskRCNN weight this mapping knows")
    return out


# ---------------------------------------------------------------------------------------------- detectron2
class _Detectron2Unpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and torch tensors only: a downloaded .pkl runs no other code."""

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return getattr(np._core.multiarray if hasattr(np, "_core") else np.core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy") and module.endswith(".dtypes") and name.endswith("DType"):
            return getattr(np.dtypes, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), weights_only=True)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: a detectron2 checkpoint holds only arrays and dicts"
        )


def read_detectron2_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The model weights of a detectron2 checkpoint: ``{name: Tensor}`` in detectron2's names.

    Reads a model-zoo ``.pkl`` (a pickled ``{"model": {name: numpy array}, "__author__": ...}``, with a
    restricted unpickler, no detectron2 needed) or a ``.pth`` written by detectron2's checkpointer
    (``torch.save({"model": state_dict, ...})``). Caffe2-era Detectron files (``{"blobs": ...}``) are
    refused: their names need detectron2's own ``c2_model_loading`` heuristics.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 checkpoint not found at {path}")
    if zipfile.is_zipfile(path):
        data = torch.load(path, map_location="cpu", weights_only=True)
    else:
        with path.open("rb") as f:
            data = _Detectron2Unpickler(f, encoding="latin1").load()
    if isinstance(data, Mapping) and "blobs" in data:
        raise ValueError(
            f"{path} is a Caffe2 Detectron (v1) blob file; convert it with detectron2 first "
            "(load it in detectron2 and save model.state_dict())"
        )
    model = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping):
        raise ValueError(f"{path}: expected a dict with a 'model' state dict, got {type(data).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in model.items():
        if not isinstance(value, Tensor):
            import numpy as np

            if not isinstance(value, np.ndarray):
                raise ValueError(f"{path}: {key} is a {type(value).__name__}, not an array")
            value = torch.from_numpy(np.ascontiguousarray(value))
        out[str(key)] = value
    return out


_D2_RULES: list[tuple[str, str]] = [
    (r"backbone\.bottom_up\.stem\.conv1\.weight", "backbone.body.conv1.weight"),
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)", r"backbone.body.bn1.\1"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight", r"backbone.body.layer{\1}.\2.conv\3.weight"),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)", r"backbone.body.layer{\1}.\2.bn\3.\4"),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight",
        r"backbone.body.layer{\1}.\2.downsample.0.weight",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)",
        r"backbone.body.layer{\1}.\2.downsample.1.\3",
    ),
    (r"backbone\.fpn_lateral(\d)\.(weight|bias)", r"backbone.fpn.inner_blocks.<\1>.0.\2"),
    (r"backbone\.fpn_output(\d)\.(weight|bias)", r"backbone.fpn.layer_blocks.<\1>.0.\2"),
    (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    (r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    (r"roi_heads\.box_head\.fc1\.(weight|bias)", r"box_head.fc6.\1"),
    (r"roi_heads\.box_head\.fc2\.(weight|bias)", r"box_head.fc7.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"coco_predictor.cls_score.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"coco_predictor.bbox_pred.\1"),
    (r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", r"mask_head.{\1}.0.\2"),
    (r"roi_heads\.mask_head\.deconv\.(weight|bias)", r"mask_predictor.conv5_mask.\1"),
    (r"roi_heads\.mask_head\.predictor\.(weight|bias)", r"mask_predictor.mask_fcn_logits.\1"),
]
# keys with no weight to load: the normalisation (handled explicitly), anchors (rebuilt from config)
_D2_SKIP = re.compile(
    r"pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+|.*num_batches_tracked"
)


def _d2_name(key: str) -> str | None:
    for pattern, repl in _D2_RULES:
        m = re.fullmatch(pattern, key)
        if m is None:
            continue
        name = m.expand(repl)
        # {k} → k - 1 (res2..res5 → layer1..layer4, mask_fcn1..4 → mask_head 0..3), <k> → k - 2 (FPN p2..p5)
        name = re.sub(r"<(\d)>", lambda g: str(int(g.group(1)) - 2), name)
        return re.sub(r"\{(\d)\}", lambda g: str(int(g.group(1)) - 1), name)
    return None


def _fold_normalisation(
    conv1: Tensor,
    pixel_mean: tuple[float, float, float],
    pixel_std: tuple[float, float, float],
    input_format: str,
    image_mean: tuple[float, ...],
    image_std: tuple[float, ...],
) -> Tensor:
    """The first conv for our input: RGB in [0, 1], normalised with ``image_mean``/``image_std``.

    detectron2 feeds ``(x255 - pixel_mean) / pixel_std`` in ``input_format`` channel order. With
    ``pixel_mean == 255 · image_mean`` (channel for channel) its normalised input is ours times
    ``255 · image_std / pixel_std`` per channel, so permuting the input channels and scaling them reproduces
    detectron2's first layer exactly — including at the zero-padded border, which is why a differing mean
    (a constant offset, not zero in the padding) is refused instead of folded.
    """
    if input_format not in ("BGR", "RGB"):
        raise ValueError(
            f"input_format must be 'BGR' or 'RGB' (detectron2's INPUT.FORMAT), got {input_format!r}"
        )
    order = [2, 1, 0] if input_format == "BGR" else [0, 1, 2]  # our RGB channel c is their channel order[c]
    mean = torch.tensor(pixel_mean, dtype=torch.float64)[order]
    std = torch.tensor(pixel_std, dtype=torch.float64)[order]
    ours_mean = 255 * torch.tensor(image_mean, dtype=torch.float64)
    if not torch.allclose(mean, ours_mean, atol=0.01, rtol=0):
        raise ValueError(
            f"detectron2 pixel_mean {tuple(pixel_mean)} ({input_format}, 0-255) is not the detector's image_mean "
            f"{tuple(image_mean)} (RGB, 0-1) × 255: set detector.net.image_mean to "
            f"{[round(float(m) / 255, 6) for m in mean]} so the normalisation can be folded into conv1"
        )
    scale = 255 * torch.tensor(image_std, dtype=torch.float64) / std
    return (conv1[:, order].double() * scale.view(1, 3, 1, 1)).to(conv1.dtype)


def detectron2_maskrcnn_to_joint(
    state_dict: Mapping[str, Tensor],
    *,
    pixel_mean: tuple[float, float, float] | None = None,
    pixel_std: tuple[float, float, float] | None = None,
    input_format: str = "BGR",
    image_mean: tuple[float, ...] = IMAGENET_MEAN,
    image_std: tuple[float, ...] = IMAGENET_STD,
    stride_in_1x1: bool | None = None,
) -> dict[str, Tensor]:
    """Map a detectron2 Mask R-CNN (ResNet/ResNeXt-FPN, ``StandardRPNHead``, ``FastRCNNConvFCHead`` with two
    fc, ``MaskRCNNConvUpsampleHead``, COCO's 80 classes) onto JointDetector names.

    Names: ``backbone.bottom_up.stem``/``res2..res5`` → ``backbone.body.conv1``/``bn1``/``layer1..layer4``
    (``convK.norm`` → ``bnK``, ``shortcut`` → ``downsample``); ``backbone.fpn_lateral{2..5}`` /
    ``fpn_output{2..5}`` → ``backbone.fpn.inner_blocks`` / ``layer_blocks`` 0..3; ``proposal_generator.rpn_head``
    ``conv`` / ``objectness_logits`` / ``anchor_deltas`` → ``rpn.head`` ``conv`` / ``cls_logits`` / ``bbox_pred``;
    ``roi_heads.box_head.fc1/fc2`` → ``box_head.fc6/fc7``; ``roi_heads.mask_head.mask_fcn1..4`` / ``deconv``
    / ``predictor`` → ``mask_head.0..3`` / ``mask_predictor.conv5_mask`` / ``mask_fcn_logits``.

    Values: the classifier's background is detectron2's last row (81 = 80 classes + background) and our
    first; the class-specific regressor has no background block in detectron2 (80 × 4 rows; a zero block
    is put first, never read) and a class-agnostic one (4 rows) is repeated for every class; the 80 mask
    channels keep their order (detectron2's contiguous ids sort COCO by category id, as ours do). The first
    conv absorbs the input normalisation (:func:`_fold_normalisation`): ``pixel_mean``/``pixel_std`` default
    to the checkpoint's own ``pixel_mean``/``pixel_std`` buffers when it has them, else detectron2's default
    mean and the X-101-32x8d std (pass ``pixel_std=(1, 1, 1)`` for an MSRA ResNet model).

    ``stride_in_1x1``: detectron2 ResNets put a stage's stride in the first 1×1 conv when
    ``RESNETS.STRIDE_IN_1X1`` (the default, MSRA models), torchvision's in the 3×3 conv; the weights do not
    tell. ResNeXt checkpoints (grouped 3×3 convs) are the FAIR ones, trained with ``STRIDE_IN_1X1=False``;
    for a plain ResNet pass ``stride_in_1x1=False`` if it was trained so, else it is refused.
    """
    unknown = [k for k in state_dict if _d2_name(k) is None and not _D2_SKIP.fullmatch(k)]
    if unknown:
        raise KeyError(
            f"{len(unknown)} detectron2 weights have no JointDetector counterpart, e.g. {unknown[:4]}; only "
            "ResNet/ResNeXt-FPN Mask R-CNNs with the standard 2-fc box head and 4-conv mask head convert"
        )
    if "backbone.bottom_up.res2.0.conv2.weight" in state_dict:
        width = state_dict["backbone.bottom_up.res2.0.conv1.weight"].shape[0]
        groups = width // state_dict["backbone.bottom_up.res2.0.conv2.weight"].shape[1]
        if stride_in_1x1 is None:
            stride_in_1x1 = groups == 1
        if stride_in_1x1:
            raise ValueError(
                "a plain-ResNet detectron2 checkpoint: MSRA models put the stride in the 1x1 conv "
                "(RESNETS.STRIDE_IN_1X1=True), which torchvision's Bottleneck cannot; pass stride_in_1x1=False "
                "(--stride-in-3x3) only if it was trained with STRIDE_IN_1X1=False, or start a ResNet-50 from "
                "torchvision's maskrcnn_resnet50_fpn weights"
            )

    def buffer(name: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        if name in state_dict:
            return tuple(float(v) for v in state_dict[name].flatten())  # type: ignore[return-value]
        return default

    mean = tuple(pixel_mean) if pixel_mean is not None else buffer("pixel_mean", DETECTRON2_PIXEL_MEAN)
    std = tuple(pixel_std) if pixel_std is not None else buffer("pixel_std", DETECTRON2_X101_PIXEL_STD)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _d2_name(key)
        if name is None:
            continue
        value = value.detach().clone()
        if name == "backbone.body.conv1.weight":
            value = _fold_normalisation(value, mean, std, input_format, tuple(image_mean), tuple(image_std))
        elif name.startswith("coco_predictor.cls_score."):
            # detectron2: rows 0..79 classes, 80 background → ours: 0 background, 1..80 classes
            value = torch.cat([value[-1:], value[:-1]])
        elif name.startswith("coco_predictor.bbox_pred."):
            if value.shape[0] == 4:  # CLS_AGNOSTIC_BBOX_REG: one box for every class
                n = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
                value = value.repeat(n, *([1] * (value.dim() - 1)))
            else:
                value = torch.cat([torch.zeros_like(value[:4]), value])
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------- loading
def _load_mapped(detector: JointDetector, mapped: Mapping[str, Tensor], source: str) -> list[str]:
    """Load JointDetector-named weights; every weight but the VG classifier must be covered."""
    v2 = "box_head.0.0.weight" in mapped
    if v2 != bool(detector.config.get("box_head_convs")):
        raise ValueError(
            f"{source} has {'a' if v2 else 'no'} conv box head (torchvision's maskrcnn_resnet50_fpn"
            f"{'_v2' if v2 else ''} layout) and the detector {'does not' if v2 else 'does'}: use "
            f"detector={'resnet50_fpn_v2' if v2 else 'resnet50_fpn'} (or its net/backbone settings)"
        )
    key = "coco_predictor.cls_score.weight"
    if key in mapped:
        extra = mapped[key].shape[0] - (detector.num_coco_classes + 1)
        if extra < 0:
            raise ValueError(
                f"{source}: the COCO classifier has {mapped[key].shape[0]} rows, the detector "
                f"{detector.num_coco_classes} classes + background; a COCO Mask R-CNN needs num_coco_classes=80"
            )
        if extra != detector.coco_predictor.extra_background:
            detector.set_coco_extra_background(extra)
    try:
        result = detector.load_state_dict(dict(mapped), strict=False)
    except RuntimeError as err:
        lines = str(err).splitlines()
        detail = "\n".join(lines[:4] + (["\t…"] if len(lines) > 4 else []))
        raise ValueError(
            f"{source} does not fit the detector's architecture (backbone "
            f"{detector.config['backbone'].get('name')!r}, FPN width {detector.backbone.out_channels}, box head "
            f"{detector.config['representation_size']}, mask head {detector.config['mask_head_channels']}): {detail}"
        ) from None
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith("vg_predictor.") and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise KeyError(f"{source} lacks {len(missing)} detector weights, e.g. {missing[:4]}")
    if result.unexpected_keys:
        raise KeyError(f"{source}: unexpected keys after mapping: {result.unexpected_keys[:4]}")
    return list(result.missing_keys)


def load_torchvision_maskrcnn(
    detector: JointDetector, state_dict: Mapping[str, Tensor] | str | os.PathLike
) -> list[str]:
    """Load a torchvision COCO Mask R-CNN (state dict or file) into the shared parts and the COCO heads.

    Every detector weight except the VG classifier must be covered (else ``KeyError`` naming them); shapes
    must agree (same backbone, FPN width 256, box head 1024, mask head 4 × 256). The COCO classifier gets
    the 10 unused category ids as extra background rows (``detector.config["coco_extra_background"] = 10``).
    Returns the detector keys left at their initialisation (the ``vg_predictor.*`` ones).
    """
    source = "torchvision Mask R-CNN state dict"
    if not isinstance(state_dict, Mapping):
        source = str(state_dict)
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        if "model" in state_dict:  # torchvision reference-scripts checkpoints
            state_dict = state_dict["model"]
    return _load_mapped(detector, torchvision_maskrcnn_to_joint(state_dict), source)


def coco_maskrcnn_to_joint(
    path: str | os.PathLike, **detectron2_options: Any
) -> tuple[dict[str, Tensor], str]:
    """JointDetector-named weights of a COCO Mask R-CNN file and its kind ("torchvision" | "detectron2" |
    "converted"), told apart by the names inside; ``detectron2_options`` go to
    :func:`detectron2_maskrcnn_to_joint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO Mask R-CNN file not found: {path} (README, 'Detector initialisation', says where to get one)"
        )
    if path.suffix == ".pkl" and not zipfile.is_zipfile(path):
        return detectron2_maskrcnn_to_joint(
            read_detectron2_checkpoint(path), **detectron2_options
        ), "detectron2"
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, Mapping) and data.get("format") == INIT_FORMAT:
        return dict(data["state_dict"]), "converted"
    state = data.get("model", data) if isinstance(data, Mapping) else {}
    if any(str(k).startswith("backbone.bottom_up.") for k in state):
        return detectron2_maskrcnn_to_joint(
            read_detectron2_checkpoint(path), **detectron2_options
        ), "detectron2"
    if any(str(k).startswith("roi_heads.") for k in state) and any(
        str(k).startswith("backbone.body.") for k in state
    ):
        return torchvision_maskrcnn_to_joint(state), "torchvision"
    raise ValueError(
        f"{path} is not a COCO Mask R-CNN this project reads: expected torchvision MaskRCNN names "
        "(backbone.body.*, roi_heads.*), detectron2 names (backbone.bottom_up.*, roi_heads.*) or a file "
        "written by `python -m sgseg.models.detector.convert`"
    )


def load_coco_maskrcnn(
    detector: JointDetector, path: str | os.PathLike, **detectron2_options: Any
) -> list[str]:
    """Start ``detector`` from the COCO Mask R-CNN at ``path`` (torchvision, detectron2 or converted; see the
    module docstring); returns the keys left at their initialisation (the VG classifier)."""
    mapped, _ = coco_maskrcnn_to_joint(path, **detectron2_options)
    return _load_mapped(detector, mapped, str(path))


def detector_from_coco_maskrcnn(
    init: str | os.PathLike,
    backbone: Mapping[str, Any],
    num_vg_classes: int,
    num_coco_classes: int,
    **net: Any,
) -> JointDetector:
    """A JointDetector built from ``build_backbone`` kwargs and ``JointDetector`` kwargs whose every weight but
    the VG classifier comes from the COCO Mask R-CNN ``init``. The backbone's own ``pretrained`` is ignored
    (the file replaces it); ResNets get frozen BN statistics and 3 trainable stages unless the config says
    otherwise, as torchvision's recipe for a pretrained start."""
    backbone = {**backbone, "pretrained": None}
    if backbone.get("name") in _RESNETS:
        backbone["norm"] = backbone.get("norm") or "frozen_bn"
        if backbone.get("trainable_layers") is None:
            backbone["trainable_layers"] = 3
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random initialisation.*", category=UserWarning)
        detector = JointDetector(build_backbone(**backbone), num_vg_classes, num_coco_classes, **net)
    load_coco_maskrcnn(detector, init)
    return detector


def convert(src: str | os.PathLike, dst: str | os.PathLike, **detectron2_options: Any) -> Path:
    """Write the COCO Mask R-CNN ``src`` in JointDetector names (``{"format", "source", "kind",
    "state_dict"}``), a file ``detector.init`` reads with no pickle and no renaming."""
    mapped, kind = coco_maskrcnn_to_joint(src, **detectron2_options)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in mapped.items()}
    torch.save({"format": INIT_FORMAT, "source": str(src), "kind": kind, "state_dict": state}, dst)
    return dst
