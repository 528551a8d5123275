"""Backbones of the stage-1 detector, chosen by name from config.

Where this sits: the first block of :class:`sgseg.models.detector.JointDetector`. A backbone maps a
normalised image batch ``Float[B, 3, H, W]`` to an ``OrderedDict[str, Float[B, D, h_l, w_l]]`` of feature
levels and carries the attributes the detector needs to build its RPN and RoI poolers:

``out_channels``   D, the channel count of every level,
``featmap_names``  the levels RoIAlign pools from (FPN: ``'0'..'3'``, not ``'pool'``),
``anchor_sizes``   one tuple of anchor sides (pixels) per returned level, a sensible default for the RPN,
``build_config``   the ``build_backbone`` kwargs that rebuild this architecture (for :mod:`.checkpoint`).

Names: ``vgg16`` (paper; conv5_3, one level ``'0'`` at stride 16), ``resnext101_32x8d_fpn`` (paper),
``resnet50_fpn``, ``resnet18_fpn`` (CPU work) and ``tiny`` (a few channels, random init, for CPU tests and the
synthetic benchmark).

Pretrained weights come from a file path or a torchvision weight-enum name (``"IMAGENET1K_V1"``,
``"DEFAULT"``). This project runs offline: an enum whose file is not in the torch hub cache raises a clear
error instead of trying to download (pass ``allow_download=True`` on a machine with network).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

FPN_ANCHOR_SIZES: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))

_RESNETS: dict[str, tuple[str, type[WeightsEnum]]] = {
    "resnet18_fpn": ("resnet18", torchvision.models.ResNet18_Weights),
    "resnet50_fpn": ("resnet50", torchvision.models.ResNet50_Weights),
    "resnext101_32x8d_fpn": ("resnext101_32x8d", torchvision.models.ResNeXt101_32X8D_Weights),
}

BACKBONE_NAMES: tuple[str, ...] = ("vgg16", *_RESNETS, "tiny")
# FPN conv normalisation: none (torchvision's maskrcnn_resnet50_fpn) or BN (maskrcnn_resnet50_fpn_v2)
_FPN_NORMS: dict[str | None, type[nn.Module] | None] = {None: None, "bn": nn.BatchNorm2d}


def load_pretrained_state_dict(
    pretrained: str | os.PathLike,
    weights_enum: type[WeightsEnum] | None,
    allow_download: bool = False,
) -> dict[str, Tensor]:
    """The state dict named by ``pretrained``: an existing file, or an entry of ``weights_enum``.

    Never touches the network unless ``allow_download``: a weight-enum entry whose file is missing from
    the torch hub cache raises ``FileNotFoundError`` naming the file and the ways out.
    """
    path = Path(pretrained)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    name = str(pretrained)
    if weights_enum is None or "/" in name or name.endswith((".pth", ".pt", ".ckpt")):
        raise FileNotFoundError(
            f"pretrained weights file not found: {name!r}; fix the path or set pretrained=null"
        )
    choices = [w.name for w in weights_enum] + ["DEFAULT"]
    if name.split(".")[-1] not in choices:
        raise ValueError(
            f"pretrained={name!r} is neither an existing file nor a {weights_enum.__name__} entry ({choices})"
        )
    weights = weights_enum[name.split(".")[-1]] if name.split(".")[-1] != "DEFAULT" else weights_enum.DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file() and not allow_download:
        raise FileNotFoundError(
            f"{weights_enum.__name__}.{weights.name} is not in the torch hub cache ({cached}); this machine has "
            f"no network. Download {weights.url} to that path on a networked machine, pass a file path as "
            "`pretrained`, or set pretrained=null for random init (allow_download=true to fetch it here)."
        )
    return weights.get_state_dict(progress=False, check_hash=False)


def _load_into(
    model: nn.Module, state: dict[str, Tensor], ignore_prefixes: tuple[str, ...], what: str
) -> None:
    """Load ``state`` into ``model``, failing loudly if a backbone weight is absent (heads may be absent)."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    result = model.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith(ignore_prefixes) and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise KeyError(
            f"pretrained weights for {what} lack {len(missing)} keys (e.g. {missing[:3]}); "
            "is it a state dict of the same architecture?"
        )


def _warn_random(name: str) -> None:
    warnings.warn(
        f"backbone {name!r}: no pretrained weights given, random initialisation "
        "(set model.detector.backbone.pretrained to a file or a torchvision weight name)",
        stacklevel=3,
    )


class VGG16Backbone(nn.Module):
    """VGG-16 conv1_1 … conv5_3 (+ReLU), no last max-pool: one level ``'0'`` at stride 16, 512 channels."""

    def __init__(self, body: nn.Module, out_channels: int = 512) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.featmap_names = ["0"]
        # one level carries every scale, as in the Faster R-CNN VGG-16 setup
        self.anchor_sizes: tuple[tuple[int, ...], ...] = ((32, 64, 128, 256, 512),)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.body(x))])


def _vgg16(
    pretrained: str | None, trainable_layers: int, allow_download: bool, width: int = 64
) -> VGG16Backbone:
    """``width`` scales the channel plan (64 = the real VGG-16); narrow widths exist for CPU tests."""
    plan: list[int | str] = [
        width, width, "M", 2 * width, 2 * width, "M", 4 * width, 4 * width, 4 * width, "M",
        8 * width, 8 * width, 8 * width, "M", 8 * width, 8 * width, 8 * width,
    ]  # fmt: skip
    body = torchvision.models.vgg.make_layers(plan, batch_norm=False)
    if pretrained is not None:
        if width != 64:
            raise ValueError(f"vgg16: pretrained weights need width=64, got width={width}")
        state = load_pretrained_state_dict(pretrained, torchvision.models.VGG16_Weights, allow_download)
        # torchvision's classifier stores features under 'features.*'; a bare body state dict has none
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier")}
        _load_into(body, state, (), "vgg16")
    else:
        _warn_random("vgg16")
    # freeze from the input up: the 5 conv blocks are the "layers" (as trainable_layers counts them for ResNets)
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"vgg16: trainable_layers must be in 0..5, got {trainable_layers}")
    block = 0
    frozen_blocks = 5 - trainable_layers
    for module in body:
        if isinstance(module, nn.MaxPool2d):
            block += 1
        elif block < frozen_blocks:
            module.requires_grad_(False)
    return VGG16Backbone(body, out_channels=8 * width)


def _resnet_fpn(
    name: str,
    pretrained: str | None,
    trainable_layers: int,
    allow_download: bool,
    norm: str,
    out_channels: int = 256,
    fpn_norm: str | None = None,
) -> BackboneWithFPN:
    arch, weights_enum = _RESNETS[name]
    if norm not in ("frozen_bn", "bn"):
        raise ValueError(f"{name}: norm must be 'frozen_bn' or 'bn', got {norm!r}")
    if fpn_norm not in _FPN_NORMS:
        raise ValueError(f"{name}: fpn_norm must be null or 'bn', got {fpn_norm!r}")
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
    net = torchvision.models.resnet.__dict__[arch](weights=None, norm_layer=norm_layer)
    if pretrained is not None:
        state = load_pretrained_state_dict(pretrained, weights_enum, allow_download)
        _load_into(net, state, ("fc.",), name)
    else:
        _warn_random(name)
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"{name}: trainable_layers must be in 0..5, got {trainable_layers}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for pname, p in net.named_parameters():
        if not pname.startswith(tuple(train)):
            p.requires_grad_(False)
    c2 = net.inplanes // 8  # channels of layer1's output (64 for basic blocks, 256 for bottlenecks)
    backbone = BackboneWithFPN(
        net,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[c2, 2 * c2, 4 * c2, 8 * c2],
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=_FPN_NORMS[fpn_norm],
    )
    backbone.featmap_names = ["0", "1", "2", "3"]
    backbone.anchor_sizes = FPN_ANCHOR_SIZES
    return backbone


class TinyBackbone(nn.Module):
    """A 4-stage conv net + FPN with a few channels, for CPU tests and the synthetic benchmark.

    Stages at strides 4, 8, 16, 32 (each: stride-2 conv + conv, GroupNorm, ReLU); the FPN takes strides
    8/16/32 (levels ``'0'``, ``'1'``, ``'2'``) plus a max-pooled ``'pool'`` at 64. GroupNorm rather than BN so
    that 2-image batches train and evaluate alike. Anchors 16/32/64/128 suit 128–256 px images.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), out_channels: int = 64) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"tiny backbone: `channels` needs 4 stage widths, got {channels}")

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.GroupNorm(min(8, cout // 4) or 1, cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.GroupNorm(min(8, cout // 4) or 1, cout),
                nn.ReLU(inplace=True),
            )

        self.stem = nn.Sequential(
            block(3, channels[0] // 2 or 1, 2), block(channels[0] // 2 or 1, channels[0], 2)
        )
        self.stages = nn.ModuleList(
            [
                block(channels[0], channels[1], 2),
                block(channels[1], channels[2], 2),
                block(channels[2], channels[3], 2),
            ]
        )
        self.fpn = FeaturePyramidNetwork(list(channels[1:]), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.featmap_names = ["0", "1", "2"]
        self.anchor_sizes: tuple[tuple[int, ...], ...] = ((16,), (32,), (64,), (128,))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        levels = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            levels[str(i)] = x
        return self.fpn(levels)


def build_backbone(
    name: str,
    pretrained: str | None = None,
    trainable_layers: int | None = None,
    allow_download: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a detector backbone by name (see the module docstring for names and attributes).

    pretrained: a state-dict file, or a torchvision weight-enum entry name (``"IMAGENET1K_V1"``); ``None``
        gives random init and a warning.
    trainable_layers: blocks left trainable counted from the top (0..5); default 3 with pretrained weights,
        5 without (torchvision's recipe).
    kwargs: per backbone — ``vgg16``: ``width`` (64 = real VGG-16); ResNets: ``norm`` ('frozen_bn' | 'bn'),
        ``out_channels`` (FPN width, 256), ``fpn_norm`` (null | 'bn', the latter for torchvision's _v2); ``tiny``: ``channels`` (4 stage widths), ``out_channels``.
    """
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # Hydra ListConfig
    if name == "vgg16":
        trainable_layers = 3 if trainable_layers is None else trainable_layers
        backbone: nn.Module = _vgg16(pretrained, trainable_layers, allow_download, **kwargs)
    elif name in _RESNETS:
        # torchvision's recipe: frozen BN statistics with pretrained weights, trainable BN from scratch
        kwargs["norm"] = kwargs.get("norm") or ("frozen_bn" if pretrained is not None else "bn")
        if trainable_layers is None:
            trainable_layers = 3 if pretrained is not None else 5
        backbone = _resnet_fpn(name, pretrained, trainable_layers, allow_download, **kwargs)
    elif name == "tiny":
        backbone = TinyBackbone(**kwargs)
        if pretrained is not None:
            _load_into(backbone, load_pretrained_state_dict(pretrained, None), (), "tiny")
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONE_NAMES}")
    # architecture only: the weights travel in the detector's state dict
    backbone.build_config = {"name": name, "trainable_layers": trainable_layers, **kwargs}
    return backbone
