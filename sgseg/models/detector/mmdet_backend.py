"""MMDetection 3.x backend for stage 1: mmdet's Mask R-CNN behind :class:`~.detector.JointDetector`'s interface.

Where this sits: ``detector=mmdet_mask_rcnn`` (conf/detector/mmdet_mask_rcnn.yaml) builds
:class:`MMDetJointDetector` from an mmdet model config (a path, ``mmdet::mask_rcnn/...py`` from mmdet's
package, or a config shipped here in ``mmdet_configs/``); stage 1 trains it through Lightning
(:class:`~sgseg.lit.detector_module.DetectorPretrainModule`, never mmengine's Runner) and stage 2 uses it
unchanged (``features``, ``propose``, ``detect``, ``mask_logits``, ``roi_features``, ``training_losses``, the
same :mod:`sgseg.structures` out). Needs the optional stack (``make install-mmdet``); importing this module
without it raises an ImportError that says so.

What comes from mmdet (built by mmdet's registry from the config): the backbone and neck (``features``), the
RPN head with its anchors, proposal post-processing and losses (mmdet's ``loss_by_feat`` / ``predict_by_feat``,
settings from the config's ``train_cfg.rpn`` / ``rpn_proposal`` / ``test_cfg.rpn``), the RoI extractors (mmcv
RoIAlign with mmdet's FPN level mapping), the shared box head (its shared convs/fcs), the COCO classifier/
regressor pair (``fc_cls`` / ``fc_reg``) and the FCN mask head. sgseg adds the VG classifier/regressor pair
(same shapes, mmdet's init) and keeps its own RoI matching/sampling, Fast R-CNN / mask losses and SGDet
post-processing (JointDetector's, with the thresholds read from the config's ``train_cfg.rcnn`` /
``test_cfg.rcnn``), so both backends train the second stage the same way and only the model differs.

Layout: mmdet's classifiers put background LAST (``num_classes`` is background) and regress 4 × num_classes
(no background); :class:`MMDetPredictor` re-lays them out to torchvision's (background first, 4 zero deltas
for it), so ``Detections.label_logits`` mean the same for both backends. mmdet COCO models index classes by
the contiguous COCO order (category ids sorted), which is ours: class c here is mmdet's class c - 1.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sgseg.models.detector.detector import Dataset, JointDetector
from sgseg.structures import ImageBatch, InstanceMasks, Targets

try:
    import mmcv  # noqa: F401
    import mmcv.ops  # noqa: F401  (the compiled RoIAlign/NMS the heads import)
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config, ConfigDict
    from mmengine.structures import InstanceData
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"detector=mmdet_mask_rcnn needs the MMDetection stack (mmcv 2.1.0 with ops, mmengine, mmdet 3.3.0): "
        f"run `make install-mmdet` (README, 'MMDetection backend'); import failed with: {err}"
    ) from err

BACKEND = "mmdet"
CONFIG_DIR = Path(__file__).with_name("mmdet_configs")
_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        register_all_modules(init_default_scope=True)
        _registered = True


_register()  # mmdet's modules into its registries, default scope "mmdet" (what mmdet's own tools do first)


def resolve_model_config(name: str) -> Path | str:
    """An mmdet config reference → what ``Config.fromfile`` reads.

    ``name``: an existing file; a file name in sgseg's ``mmdet_configs/`` (e.g. ``tiny_mask_rcnn.py``); or
    ``mmdet::<dir>/<file>.py`` / ``<dir>/<file>.py`` from mmdet's packaged configs.
    """
    if Path(name).is_file():
        return Path(name)
    if (CONFIG_DIR / name).is_file():
        return CONFIG_DIR / name
    rel = name.removeprefix("mmdet::")
    packaged = Path(mmdet.__file__).parent / ".mim" / "configs" / rel
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"detector.model_config={name!r}: no such file, no {CONFIG_DIR / name}, and no packaged mmdet config "
        f"{packaged}; give a path, a file in {CONFIG_DIR}, or e.g. mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
    )


def load_model_config(name: str, cfg_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``model`` dict of an mmdet config (``cfg_options``: dotted overrides, e.g.
    ``{"model.test_cfg.rcnn.max_per_img": 50}``), as plain containers."""
    cfg = Config.fromfile(str(resolve_model_config(name)))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if "model" not in cfg:
        raise ValueError(f"detector.model_config={name!r} has no `model` section (not an mmdet model config)")
    return cfg.to_dict()["model"]


class MMDetTrunk(nn.Module):
    """mmdet backbone + neck as one module with sgseg's backbone attributes (``out_channels``,
    ``featmap_names``); returns ``{"p2": …, "p3": …}`` (one level per neck output)."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, out_channels: int, num_levels: int) -> None:
        super().__init__()
        self.body = backbone
        self.neck = neck
        self.out_channels = int(out_channels)
        self.featmap_names = [f"p{i + 2}" for i in range(num_levels)]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        levels = self.neck(self.body(x))
        if len(levels) != len(self.featmap_names):
            raise ValueError(
                f"mmdet neck returned {len(levels)} levels, the config's neck.num_outs says "
                f"{len(self.featmap_names)}"
            )
        return OrderedDict(zip(self.featmap_names, levels))


class MMDetPredictor(nn.Module):
    """A classifier/regressor pair in mmdet's layout (``fc_cls``: C + 1 with background last; ``fc_reg``:
    4 × C, no background) whose forward returns torchvision's (background first; 4 × (C + 1), zeros for
    the background), so JointDetector's losses and post-processing read it unchanged.

    ``source``: an mmdet bbox head whose ``fc_cls`` / ``fc_reg`` are used (not registered here, so its
    weights keep mmdet's key names under ``roi_head.bbox_head``); else own ``fc_cls`` / ``fc_reg``.
    """

    def __init__(self, in_features: int, num_classes: int, source: nn.Module | None = None) -> None:
        super().__init__()
        self.num_classes = int(num_classes)  # foreground classes
        if source is None:
            self.fc_cls = nn.Linear(in_features, num_classes + 1)
            self.fc_reg = nn.Linear(in_features, 4 * num_classes)
            # mmdet's bbox head init (Normal std 0.01 / 0.001, zero bias)
            nn.init.normal_(self.fc_cls.weight, std=0.01)
            nn.init.normal_(self.fc_reg.weight, std=0.001)
            nn.init.zeros_(self.fc_cls.bias)
            nn.init.zeros_(self.fc_reg.bias)
            self._source = None
        else:
            object.__setattr__(self, "_source", source)

    def layers(self) -> tuple[nn.Linear, nn.Linear]:
        src = self._source if self._source is not None else self
        return src.fc_cls, src.fc_reg

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fc_cls, fc_reg = self.layers()
        scores, deltas = fc_cls(x), fc_reg(x)
        n = self.num_classes
        if scores.shape[1] != n + 1 or deltas.shape[1] != 4 * n:
            raise ValueError(
                f"mmdet bbox head gives {scores.shape[1]} class logits / {deltas.shape[1]} deltas, expected "
                f"{n + 1} / {4 * n} (reg_class_agnostic=False, num_classes={n})"
            )
        scores = torch.cat([scores[:, n:], scores[:, :n]], dim=1)
        deltas = torch.cat([deltas.new_zeros(len(deltas), 4), deltas], dim=1)
        return scores, deltas


class MMDetJointDetector(JointDetector):
    """Mask R-CNN built by MMDetection, with a second (VG) classifier/regressor pair on its shared box head.

    model_cfg: an mmdet ``model`` dict (type ``MaskRCNN``: backbone, neck, rpn_head, roi_head with
        bbox_roi_extractor, a ConvFC bbox_head without separate cls/reg branches, mask_roi_extractor,
        mask_head; train_cfg / test_cfg). Its ``roi_head.bbox_head.num_classes`` / ``mask_head.num_classes``
        are set to ``num_coco_classes``.
    The RCNN sampling and SGDet post-processing thresholds come from ``train_cfg.rcnn`` / ``test_cfg.rcnn``;
    ``config`` (for export/load) holds the model dict, so :func:`build_mmdet_detector` rebuilds it.
    """

    def __init__(
        self, model_cfg: Mapping[str, Any], num_vg_classes: int = 150, num_coco_classes: int = 80
    ) -> None:
        nn.Module.__init__(self)
        _register()
        model_cfg = copy.deepcopy(dict(model_cfg))
        roi = model_cfg.get("roi_head") or {}
        for part in ("backbone", "neck", "rpn_head"):
            if part not in model_cfg:
                raise ValueError(f"mmdet model config has no `model.{part}`; a Mask R-CNN config is needed")
        for part in ("bbox_roi_extractor", "bbox_head", "mask_roi_extractor", "mask_head"):
            if part not in roi:
                raise ValueError(
                    f"mmdet model config has no `model.roi_head.{part}`; a Mask R-CNN config is needed"
                )
        roi["bbox_head"]["num_classes"] = num_coco_classes
        roi["mask_head"]["num_classes"] = num_coco_classes
        # weights come from detector.init or training; never download an ImageNet backbone here
        model_cfg["backbone"].pop("init_cfg", None)
        model = MODELS.build(ConfigDict(model_cfg))
        model.init_weights()
        self.mmdet_model_cfg = model_cfg

        prep = model_cfg.get("data_preprocessor") or {}
        mean = prep.get("mean", [123.675, 116.28, 103.53])
        std = prep.get("std", [58.395, 57.12, 57.375])
        # mmdet loads BGR images; bgr_to_rgb=True means the network sees RGB, else BGR
        self.network_bgr = not bool(prep.get("bgr_to_rgb", False))
        train_rcnn = model.train_cfg.rcnn if model.train_cfg else None
        test_rcnn = model.test_cfg.rcnn
        neck = model_cfg["neck"]
        self.config: dict[str, Any] = {
            "backend": BACKEND,
            "mmdet_model": model_cfg,
            "num_vg_classes": num_vg_classes,
            "num_coco_classes": num_coco_classes,
            "mask_roi_size": int(roi["mask_roi_extractor"]["roi_layer"]["output_size"]),
        }
        self.num_vg_classes = num_vg_classes
        self.num_coco_classes = num_coco_classes
        self.backbone = MMDetTrunk(model.backbone, model.neck, neck["out_channels"], neck["num_outs"])
        self.featmap_names = list(self.backbone.featmap_names)
        self.rpn_head = model.rpn_head
        self.rpn_train_cfg = model.train_cfg.rpn_proposal if model.train_cfg else None
        self.bbox_roi_extractor = model.roi_head.bbox_roi_extractor
        self.bbox_head = model.roi_head.bbox_head
        self.mask_roi_extractor = model.roi_head.mask_roi_extractor
        self.mask_head = model.roi_head.mask_head
        bh = self.bbox_head
        if getattr(bh, "reg_class_agnostic", False) or any(
            getattr(bh, k, 0) for k in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs")
        ):
            raise ValueError(
                "MMDetJointDetector needs a shared ConvFC bbox head (Shared2FC / Shared4Conv1FC) with class-"
                "specific regression; the config's bbox_head has separate cls/reg branches or is class-agnostic"
            )
        rep = int(bh.fc_cls.in_features)
        self.config["representation_size"] = rep
        self.coco_predictor = MMDetPredictor(rep, num_coco_classes, source=bh)
        self.vg_predictor = MMDetPredictor(rep, num_vg_classes)
        self._extractors: dict[int, nn.Module] = {}

        stds = [float(s) for s in bh.bbox_coder.stds]
        if any(float(m) != 0.0 for m in bh.bbox_coder.means):
            raise ValueError("MMDetJointDetector: the bbox coder's target_means must be zero")
        from torchvision.models.detection import _utils as det_utils

        self.box_coder = det_utils.BoxCoder(tuple(1.0 / s for s in stds))
        assigner = (train_rcnn or {}).get("assigner", {})
        sampler = (train_rcnn or {}).get("sampler", {})
        self.box_matcher = det_utils.Matcher(
            float(assigner.get("pos_iou_thr", 0.5)), float(assigner.get("neg_iou_thr", 0.5)), False
        )
        self.box_sampler = det_utils.BalancedPositiveNegativeSampler(
            int(sampler.get("num", 512)), float(sampler.get("pos_fraction", 0.25))
        )
        self.score_thresh = float(test_rcnn.get("score_thr", 0.05))
        self.nms_thresh = float(test_rcnn.get("nms", {}).get("iou_threshold", 0.5))
        self.detections_per_img = int(test_rcnn.get("max_per_img", 100))
        self.sampling_ratio = int(roi["bbox_roi_extractor"]["roi_layer"].get("sampling_ratio", 0))
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32) / 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32) / 255.0, persistent=False)

    # ------------------------------------------------------------------ features and proposals
    def features(self, images: ImageBatch) -> OrderedDict[str, Tensor]:
        """mmdet backbone + neck levels of RGB [0, 1] images, normalised with the config's
        ``data_preprocessor`` mean/std (0-255 scale) in the channel order the network was trained on; the
        padding is re-zeroed after normalising, as mmdet pads normalised images with 0."""
        x = images.tensors
        if x.shape[1] != 3:
            raise ValueError(f"ImageBatch.tensors must be Float[B, 3, H, W] RGB, got {tuple(x.shape)}")
        if self.network_bgr:
            x = x.flip(1)
        x = (x - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        valid = self._valid_pixels(images)
        return self.backbone(x * valid[:, None].to(x.dtype))

    @staticmethod
    def _img_metas(images: ImageBatch) -> list[dict[str, Any]]:
        frame = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
        return [
            {
                "img_shape": (int(h), int(w)),
                "pad_shape": frame,
                "batch_input_shape": frame,
                "scale_factor": (1.0, 1.0),
            }
            for h, w in images.image_sizes.tolist()
        ]

    def _propose(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, targets: Targets | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        feats = tuple(features.values())
        metas = self._img_metas(images)
        cls_scores, bbox_preds = self.rpn_head(feats)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            gts = []
            for i in range(images.num_images):
                rows = targets.image_index == i
                gts.append(
                    InstanceData(
                        bboxes=targets.boxes[rows].float(),
                        labels=torch.zeros(int(rows.sum()), dtype=torch.long, device=targets.boxes.device),
                    )
                )
            raw = self.rpn_head.loss_by_feat(cls_scores, bbox_preds, gts, metas)
            losses["rpn_cls"] = torch.stack([v for v in raw["loss_rpn_cls"]]).sum()
            losses["rpn_box"] = torch.stack([v for v in raw["loss_rpn_bbox"]]).sum()
        cfg = (
            self.rpn_train_cfg
            if (targets is not None and self.rpn_train_cfg is not None)
            else self.rpn_head.test_cfg
        )
        # Faster R-CNN does not backprop through the proposals
        results = self.rpn_head.predict_by_feat(
            [c.detach() for c in cls_scores], [b.detach() for b in bbox_preds], batch_img_metas=metas,
            cfg=cfg, rescale=False,
        )  # fmt: skip
        boxes = torch.cat([r.bboxes for r in results])
        image_index = torch.cat(
            [
                torch.full((len(r.bboxes),), i, dtype=torch.long, device=boxes.device)
                for i, r in enumerate(results)
            ]
        )
        return boxes.float(), image_index, losses

    # ------------------------------------------------------------------ RoI features
    @staticmethod
    def _rois(boxes: Tensor, image_index: Tensor) -> Tensor:
        return torch.cat([image_index[:, None].to(boxes.dtype), boxes.float()], dim=1)

    def _extract(
        self, extractor: nn.Module, features: OrderedDict[str, Tensor], boxes: Tensor, image_index: Tensor
    ) -> Tensor:
        feats = tuple(features.values())[: extractor.num_inputs]
        if len(boxes) == 0:
            s = extractor.roi_layers[0].output_size
            return feats[0].new_zeros(0, extractor.out_channels, *s)
        return extractor(feats, self._rois(boxes, image_index))

    def roi_features(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor, image_index: Tensor,
        output_size: int,
    ) -> Tensor:  # fmt: skip
        """Float[N, D, s, s]: mmdet's RoI extractor (mmcv RoIAlign, FPN level by box size) at size s."""
        if output_size not in self._extractors:
            cfg = copy.deepcopy(self.mmdet_model_cfg["roi_head"]["bbox_roi_extractor"])
            cfg["roi_layer"]["output_size"] = int(output_size)
            self._extractors[output_size] = MODELS.build(cfg).to(boxes.device)
        return self._extract(self._extractors[output_size], features, boxes, image_index)

    def box_features(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor, image_index: Tensor
    ) -> Tensor:
        """Float[N, representation_size]: mmdet's shared box head (shared convs, flatten, shared fcs + ReLU)."""
        bh = self.bbox_head
        x = self._extract(self.bbox_roi_extractor, features, boxes, image_index)
        for conv in bh.shared_convs:
            x = conv(x)
        if bh.num_shared_fcs > 0:
            if bh.with_avg_pool:
                x = bh.avg_pool(x)
            x = x.flatten(1)
            for fc in bh.shared_fcs:
                x = bh.relu(fc(x))
        return x

    def set_coco_extra_background(self, n: int) -> None:
        raise NotImplementedError(
            "mmdet COCO classifiers have exactly num_classes + 1 rows (no unused category ids); "
            "extra background rows are a torchvision-backend feature"
        )

    def _predictor(self, dataset: Dataset) -> MMDetPredictor:
        if dataset == "vg":
            return self.vg_predictor
        if dataset == "coco":
            return self.coco_predictor
        raise ValueError(f"dataset/head must be 'vg' or 'coco', got {dataset!r}")

    @property
    def box_feature_dim(self) -> int:
        """D_box: the shared box head's output width (mmdet's ``fc_cls`` input, read when built)."""
        return int(self.config["representation_size"])

    @property
    def mask_side(self) -> int:
        """M: 2 × the output side of mmdet's mask RoI extractor (read from the built model)."""
        return 2 * int(self.config["mask_roi_size"])

    def mask_logits(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor, image_index: Tensor
    ) -> InstanceMasks:
        """COCO mask logits of mmdet's FCN mask head for GIVEN boxes: Float[N, 80, M, M] (channel c-1 = class c)."""
        x = self._extract(self.mask_roi_extractor, features, boxes, image_index)
        if len(boxes) == 0:
            m = 2 * self.config["mask_roi_size"]
            logits = x.new_zeros(0, self.num_coco_classes, m, m)
        else:
            logits = self.mask_head(x)
        return InstanceMasks(logits, boxes, image_index)


def build_mmdet_detector(config: Mapping[str, Any]) -> MMDetJointDetector:
    """A fresh MMDetJointDetector from its exported ``config`` (``MMDetJointDetector.config``)."""
    return MMDetJointDetector(
        config["mmdet_model"], int(config["num_vg_classes"]), int(config["num_coco_classes"])
    )


# ---------------------------------------------------------------------------------------------- checkpoints
MMDET_PARTS = {
    "backbone.": "backbone.body.",
    "neck.": "backbone.neck.",
    "rpn_head.": "rpn_head.",
    "roi_head.bbox_roi_extractor.": "bbox_roi_extractor.",
    "roi_head.bbox_head.": "bbox_head.",
    "roi_head.mask_roi_extractor.": "mask_roi_extractor.",
    "roi_head.mask_head.": "mask_head.",
}


def mmdet_maskrcnn_to_joint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an mmdet ``MaskRCNN`` state dict (``backbone.*``, ``neck.*``, ``rpn_head.*``, ``roi_head.*``) to
    MMDetJointDetector names. The COCO classifier/regressor (``roi_head.bbox_head.fc_cls`` / ``fc_reg``) and
    the mask logits keep mmdet's contiguous class order, which is ours (our class c = mmdet class c - 1;
    :class:`MMDetPredictor` moves background first at run time). Unknown keys raise."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for src, dst in MMDET_PARTS.items():
            if key.startswith(src):
                out[dst + key.removeprefix(src)] = value
                break
        else:
            raise KeyError(
                f"mmdet checkpoint key {key!r} is not part of a Mask R-CNN (backbone/neck/rpn_head/roi_head)"
            )
    return out


def read_mmdet_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The model state dict of an mmdet checkpoint file (``{"meta", "state_dict"}`` or a bare state dict)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict) or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} is not an mmdet checkpoint (a dict with `state_dict` of tensors)")
    return dict(ckpt)


def load_mmdet_maskrcnn(detector: MMDetJointDetector, state_dict: Mapping[str, Tensor]) -> MMDetJointDetector:
    """Load an mmdet COCO Mask R-CNN state dict into the trunk, RPN, shared box head, COCO pair and mask head.

    Every detector weight but the VG pair must be in the checkpoint, with matching shapes (a wrong
    ``num_classes`` or head width names the key); the VG pair keeps its fresh init."""
    mapped = mmdet_maskrcnn_to_joint(state_dict)
    own = detector.state_dict()
    for key, value in mapped.items():
        if key not in own:
            raise KeyError(
                f"mmdet checkpoint key for {key!r} has no counterpart in the detector built from the config"
            )
        if tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"mmdet checkpoint tensor {key!r} has shape {tuple(value.shape)}, the detector built from the config "
                f"has {tuple(own[key].shape)} (does the config match the checkpoint? num_classes=80?)"
            )
    missing = [k for k in own if k not in mapped and not k.startswith("vg_predictor.")]
    if missing:
        raise KeyError(f"mmdet checkpoint lacks {len(missing)} detector weights, e.g. {missing[:5]}")
    detector.load_state_dict(mapped, strict=False)
    return detector
