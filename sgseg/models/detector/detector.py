"""The stage-1 joint detector: one backbone/RPN/box head, two box classifiers (VG, COCO), one COCO mask head.

Where this sits: stage 1 trains it on interleaved VG and COCO batches (paper Sec. 2.3, Eq. 10:
L_obj = L_rcnn(VG) + L_rcnn(COCO) + L_seg(COCO)); stage 2 freezes it and calls its pieces separately:

``features(images)``                         normalised images → backbone (+FPN) levels,
``propose(features, images)``                RPN proposals (flat, with ``image_index``),
``detect(features, images[, boxes])``        VG label distributions + box features for GIVEN boxes
                                             (PredCls/SGCls) or full SGDet inference (boxes=None),
``mask_logits(features, images, boxes, …)``  80 COCO class mask logits (28 × 28) for GIVEN boxes,
``roi_features(…, output_size)``             RoIAlign features at any size (grounding, refinement),
``training_losses(images, targets, dataset)`` the loss dict of one VG or COCO batch.

It is composed from torchvision's public detection parts (AnchorGenerator, RPNHead/RegionProposalNetwork,
MultiScaleRoIAlign, TwoMLPHead, FastRCNNPredictor, MaskRCNNHeads/Predictor, Matcher, BalancedPositive-
NegativeSampler, BoxCoder, batched_nms) with module names that match torchvision's Mask R-CNN, so a COCO
checkpoint maps onto it (:mod:`.checkpoint`). All batch tensors are flat with an ``image_index``. The RoI
poolers are torchvision's MultiScaleRoIAlign over :func:`sgseg.ops.roi_align.roi_align` (on CPU RoIAlign as two
matrix products: torchvision's numbers up to float rounding, a 3× faster backward).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import batched_nms, box_iou, remove_small_boxes

from sgseg.models.losses import fast_rcnn_loss, mask_rcnn_loss, rpn_loss
from sgseg.ops.roi_align import MultiScaleRoIAlign
from sgseg.structures import Detections, ImageBatch, InstanceMasks, Targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Dataset = Literal["vg", "coco"]


class MergedBackgroundPredictor(FastRCNNPredictor):
    """A FastRCNNPredictor whose classifier has ``extra_background`` more rows that all count as background.

    Rows: 0 background, 1..num_classes-1 the classes, then the extra rows. ``forward`` returns
    ``num_classes`` logits whose background logit is ``logsumexp`` of row 0 and the extra rows, so the
    softmax gives every class exactly the probability it has in the full softmax, and the extra rows never
    become a detection. This is how torchvision's 91-way COCO classifier (category ids 1..90, 10 of them
    unused) keeps its scores on our contiguous 1..80 (:func:`.checkpoint.torchvision_maskrcnn_to_joint`);
    training pushes the merged background exactly as a plain background logit. ``extra_background=0``
    is torchvision's FastRCNNPredictor.
    """

    def __init__(self, in_channels: int, num_classes: int, extra_background: int = 0) -> None:
        super().__init__(in_channels, num_classes)
        if extra_background < 0:
            raise ValueError(f"extra_background must be >= 0, got {extra_background}")
        self.num_classes = num_classes
        self.extra_background = int(extra_background)
        if extra_background:
            self.cls_score = nn.Linear(in_channels, num_classes + extra_background)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        if self.extra_background:
            n = self.num_classes
            background = torch.cat([scores[:, :1], scores[:, n:]], dim=1).float().logsumexp(1, keepdim=True)
            scores = torch.cat([background.to(scores.dtype), scores[:, 1:n]], dim=1)
        return scores, deltas


# False pools every row, repeated or not (the plain path, kept for scripts/bench_stage2.py)
POOL_REPEATED_BOXES_ONCE = True


class JointDetector(nn.Module):
    """Mask R-CNN-style detector with a shared trunk and per-dataset box classifiers (see module docstring).

    backbone: a module from :func:`.backbones.build_backbone` (``out_channels``, ``featmap_names``,
        ``anchor_sizes``, ``build_config``); it returns one feature level per entry of ``anchor_sizes``.
    num_vg_classes / num_coco_classes: foreground classes (150 / 80); the classifiers add background.
    anchor_sizes: per level anchor sides in pixels; default the backbone's ``anchor_sizes``.
    rpn_*: torchvision's RPN settings. box_*: RoI sampling for the box losses; ``bbox_reg_weights`` the
        BoxCoder weights. score_thresh / nms_thresh / detections_per_img: SGDet post-processing.
    mask_*: RoI size (14, → 28 × 28 logits after the deconv) and conv widths of the mask head.
    rpn_conv_depth / box_head_convs / head_norm: the head layout. Defaults (1, (), None): torchvision's
        ``maskrcnn_resnet50_fpn`` (one RPN conv, two-fc box head, mask convs with bias). ``maskrcnn_resnet50_fpn
        _v2``'s is (2, (256,) * 4, "bn"): two RPN convs, four 3 × 3 convs (BN) before one fc, BN in the mask head.
    image_mean / image_std: RGB statistics that ``features`` normalises [0, 1] images with.
    coco_extra_background: extra COCO classifier rows that count as background (see
        :class:`MergedBackgroundPredictor`; 10 after loading torchvision's 91-way COCO classifier, else 0).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_vg_classes: int = 150,
        num_coco_classes: int = 80,
        *,
        anchor_sizes: Sequence[Sequence[int]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        box_roi_size: int = 7,
        sampling_ratio: int = 2,
        representation_size: int = 1024,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        mask_roi_size: int = 14,
        mask_head_channels: Sequence[int] = (256, 256, 256, 256),
        mask_dim_reduced: int = 256,
        rpn_conv_depth: int = 1,
        box_head_convs: Sequence[int] = (),
        head_norm: str | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        coco_extra_background: int = 0,
    ) -> None:
        super().__init__()
        for attr in ("out_channels", "featmap_names"):
            if not hasattr(backbone, attr):
                raise ValueError(
                    f"JointDetector: backbone lacks `.{attr}`; build it with build_backbone(...)"
                )
        if anchor_sizes is None:
            anchor_sizes = getattr(backbone, "anchor_sizes", None)
            if anchor_sizes is None:
                raise ValueError("JointDetector: pass `anchor_sizes` (the backbone has no default)")
        anchor_sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
        aspect_ratios = tuple(float(r) for r in aspect_ratios)
        # the constructor's numbers, so export/load can rebuild the same architecture without Hydra
        self.config: dict[str, Any] = {
            "backbone": dict(getattr(backbone, "build_config", {})),
            "num_vg_classes": num_vg_classes,
            "num_coco_classes": num_coco_classes,
            "anchor_sizes": [list(a) for a in anchor_sizes],
            "aspect_ratios": list(aspect_ratios),
            "rpn_pre_nms_top_n_train": rpn_pre_nms_top_n_train,
            "rpn_pre_nms_top_n_test": rpn_pre_nms_top_n_test,
            "rpn_post_nms_top_n_train": rpn_post_nms_top_n_train,
            "rpn_post_nms_top_n_test": rpn_post_nms_top_n_test,
            "rpn_nms_thresh": rpn_nms_thresh,
            "rpn_fg_iou_thresh": rpn_fg_iou_thresh,
            "rpn_bg_iou_thresh": rpn_bg_iou_thresh,
            "rpn_batch_size_per_image": rpn_batch_size_per_image,
            "rpn_positive_fraction": rpn_positive_fraction,
            "box_roi_size": box_roi_size,
            "sampling_ratio": sampling_ratio,
            "representation_size": representation_size,
            "box_fg_iou_thresh": box_fg_iou_thresh,
            "box_bg_iou_thresh": box_bg_iou_thresh,
            "box_batch_size_per_image": box_batch_size_per_image,
            "box_positive_fraction": box_positive_fraction,
            "bbox_reg_weights": [float(w) for w in bbox_reg_weights],
            "score_thresh": score_thresh,
            "nms_thresh": nms_thresh,
            "detections_per_img": detections_per_img,
            "mask_roi_size": mask_roi_size,
            "mask_head_channels": [int(c) for c in mask_head_channels],
            "mask_dim_reduced": mask_dim_reduced,
            "rpn_conv_depth": int(rpn_conv_depth),
            "box_head_convs": [int(c) for c in box_head_convs],
            "head_norm": head_norm,
            "image_mean": [float(m) for m in image_mean],
            "image_std": [float(s) for s in image_std],
            "coco_extra_background": int(coco_extra_background),
        }
        self.num_vg_classes = num_vg_classes
        self.num_coco_classes = num_coco_classes
        self.featmap_names = list(backbone.featmap_names)
        self.sampling_ratio = sampling_ratio
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32), persistent=False)

        if head_norm not in (None, "bn"):
            raise ValueError(f"JointDetector: head_norm must be null or 'bn', got {head_norm!r}")
        norm_layer = nn.BatchNorm2d if head_norm == "bn" else None
        d = backbone.out_channels
        self.backbone = backbone
        anchors = AnchorGenerator(anchor_sizes, (aspect_ratios,) * len(anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(d, anchors.num_anchors_per_location()[0], conv_depth=rpn_conv_depth),
            rpn_fg_iou_thresh,
            rpn_bg_iou_thresh,
            rpn_batch_size_per_image,
            rpn_positive_fraction,
            {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            rpn_nms_thresh,
        )
        self.box_roi_pool = MultiScaleRoIAlign(self.featmap_names, box_roi_size, sampling_ratio)
        if box_head_convs:
            self.box_head: nn.Module = FastRCNNConvFCHead(
                (d, box_roi_size, box_roi_size), list(box_head_convs), [representation_size], norm_layer
            )
        else:
            self.box_head = TwoMLPHead(d * box_roi_size**2, representation_size)
        self.vg_predictor = FastRCNNPredictor(representation_size, num_vg_classes + 1)
        self.coco_predictor = MergedBackgroundPredictor(
            representation_size, num_coco_classes + 1, coco_extra_background
        )
        self.mask_roi_pool = MultiScaleRoIAlign(self.featmap_names, mask_roi_size, sampling_ratio)
        self.mask_head = MaskRCNNHeads(d, list(mask_head_channels), 1, norm_layer=norm_layer)
        # 80 channels, no background: channel c-1 is COCO class c
        self.mask_predictor = MaskRCNNPredictor(mask_head_channels[-1], mask_dim_reduced, num_coco_classes)

        # RoI sampling for the box losses (no low-quality matches, as in torchvision's RoIHeads)
        self.box_matcher = det_utils.Matcher(
            box_fg_iou_thresh, box_bg_iou_thresh, allow_low_quality_matches=False
        )
        self.box_sampler = det_utils.BalancedPositiveNegativeSampler(
            box_batch_size_per_image, box_positive_fraction
        )
        self.box_coder = det_utils.BoxCoder(tuple(float(w) for w in bbox_reg_weights))
        self._poolers: dict[int, MultiScaleRoIAlign] = {}

    # ------------------------------------------------------------------ features and proposals
    def features(self, images: ImageBatch) -> OrderedDict[str, Tensor]:
        """Backbone (+FPN) levels ``{name: Float[B, D, h_l, w_l]}`` of images in [0, 1].

        Normalises with ``image_mean``/``image_std`` and re-zeroes the padding, so the pad reads as the mean
        colour exactly as in torchvision (which pads after normalising).
        """
        x = images.tensors
        if x.shape[1] != 3:
            raise ValueError(f"ImageBatch.tensors must be Float[B, 3, H, W] RGB, got {tuple(x.shape)}")
        x = (x - self.image_mean.view(1, 3, 1, 1)) / self.image_std.view(1, 3, 1, 1)
        valid = self._valid_pixels(images)
        return self.backbone(x * valid[:, None].to(x.dtype))

    @staticmethod
    def _valid_pixels(images: ImageBatch) -> Tensor:
        """Bool[B, H, W]: pixels inside each image (not padding)."""
        _, _, h, w = images.tensors.shape
        dev = images.tensors.device
        sizes = images.image_sizes.to(dev)
        rows = torch.arange(h, device=dev)[None, :, None] < sizes[:, 0, None, None]
        cols = torch.arange(w, device=dev)[None, None, :] < sizes[:, 1, None, None]
        return rows & cols

    @staticmethod
    def _image_shapes(images: ImageBatch) -> list[tuple[int, int]]:
        return [(int(h), int(w)) for h, w in images.image_sizes.tolist()]

    def propose(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, targets: Targets | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """RPN proposals of the batch.

        Returns (proposals: Float[P, 4] xyxy resized pixels, clipped to each image; proposal_image_index:
        Long[P] sorted by image, objectness-descending within an image; rpn_losses: ``{"rpn_cls",
        "rpn_box"}`` when ``targets`` is given and the module is training, else ``{}``).
        """
        return self._propose(features, images, targets if self.training else None)

    def _propose(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, targets: Targets | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        feats = list(features.values())
        b = images.num_images
        objectness, deltas = self.rpn.head(feats)
        image_list = ImageList(images.tensors, self._image_shapes(images))
        # anchors only read shapes, dtype and device: float32 slices keep them exact under bf16 autocast
        anchors = self.rpn.anchor_generator(image_list, [f[:1, :1].float() for f in feats])
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        objectness, deltas = objectness.float(), deltas.float()
        # Faster R-CNN does not backprop through the proposals
        proposals = self.rpn.box_coder.decode(deltas.detach(), anchors).view(b, -1, 4)
        boxes, _ = self.rpn.filter_proposals(
            proposals, objectness, image_list.image_sizes, num_anchors_per_level
        )
        image_index = torch.cat(
            [torch.full((len(p),), i, dtype=torch.long, device=p.device) for i, p in enumerate(boxes)]
        )
        losses: dict[str, Tensor] = {}
        if targets is not None:
            per_image = [{"boxes": targets.boxes[targets.image_index == i].float()} for i in range(b)]
            labels, matched_gt = self.rpn.assign_targets_to_anchors(anchors, per_image)
            regression_targets = self.rpn.box_coder.encode(matched_gt, anchors)
            pos, neg = self.rpn.fg_bg_sampler(labels)
            sampled = torch.where(torch.cat(pos) | torch.cat(neg))[0]
            losses["rpn_cls"], losses["rpn_box"] = rpn_loss(
                objectness.flatten(), deltas, torch.cat(labels), torch.cat(regression_targets), sampled
            )
        return torch.cat(boxes), image_index, losses

    # ------------------------------------------------------------------ RoI features
    def _pool(
        self, pooler: MultiScaleRoIAlign, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor,
        image_index: Tensor,
    ) -> Tensor:  # fmt: skip
        """MultiScaleRoIAlign on flat boxes in any image order (it wants per-image lists)."""
        b = images.num_images
        counts = torch.bincount(image_index, minlength=b).tolist()
        # every image shares the padded frame, which is what the level scales are relative to
        frame = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
        if image_index.numel() < 2 or bool((image_index[1:] >= image_index[:-1]).all()):
            return pooler(features, list(boxes.float().split(counts)), [frame] * b)  # in image order already
        order = torch.argsort(image_index, stable=True)
        pooled = pooler(features, list(boxes[order].float().split(counts)), [frame] * b)
        return torch.empty_like(pooled).index_copy_(0, order, pooled)

    def roi_features(
        self,
        features: OrderedDict[str, Tensor],
        images: ImageBatch,
        boxes: Tensor,
        image_index: Tensor,
        output_size: int,
    ) -> Tensor:
        """Float[N, D, s, s]: multi-scale RoIAlign (FPN level by box size) of boxes xyxy in resized pixels.

        Repeated (image, box) rows are pooled once and copied: the union boxes of (j, j') and (j', j) are the
        same, and every box is pooled on its own (level by its own size), so the result is the same bit for bit.
        """
        if output_size not in self._poolers:
            self._poolers[output_size] = MultiScaleRoIAlign(
                self.featmap_names, output_size, self.sampling_ratio
            )
        pooler = self._poolers[output_size]
        if POOL_REPEATED_BOXES_ONCE and boxes.shape[0] > 1:
            rows = torch.cat([image_index[:, None].to(boxes.dtype), boxes], 1)
            distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
            if distinct.shape[0] < rows.shape[0]:
                pooled = self._pool(pooler, features, images, distinct[:, 1:], distinct[:, 0].long())
                return pooled[inverse]
        return self._pool(pooler, features, images, boxes, image_index)

    def box_features(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor, image_index: Tensor
    ) -> Tensor:
        """Float[N, representation_size]: the shared box head's output (the paper's z_j)."""
        return self.box_head(self._pool(self.box_roi_pool, features, images, boxes, image_index))

    @property
    def box_feature_dim(self) -> int:
        """D_box: the width of :meth:`box_features` (read from the VG classifier's input)."""
        return int(self.vg_predictor.cls_score.in_features)

    @property
    def mask_side(self) -> int:
        """M: the side of :meth:`mask_logits` (2 × the mask RoIAlign's output side)."""
        return 2 * int(self.mask_roi_pool.output_size[0])

    def set_coco_extra_background(self, n: int) -> None:
        """Give the COCO classifier ``n`` extra background rows (fresh init; the other rows are kept)."""
        old = self.coco_predictor
        new = MergedBackgroundPredictor(old.cls_score.in_features, self.num_coco_classes + 1, n)
        k = min(old.cls_score.out_features, new.cls_score.out_features)
        with torch.no_grad():
            new.cls_score.weight[:k] = old.cls_score.weight[:k]
            new.cls_score.bias[:k] = old.cls_score.bias[:k]
        new.bbox_pred = old.bbox_pred
        self.coco_predictor = new.to(old.cls_score.weight.device)
        self.config["coco_extra_background"] = int(n)

    def _predictor(self, dataset: Dataset) -> FastRCNNPredictor:
        if dataset == "vg":
            return self.vg_predictor
        if dataset == "coco":
            return self.coco_predictor
        raise ValueError(f"dataset/head must be 'vg' or 'coco', got {dataset!r}")

    # ------------------------------------------------------------------ inference
    def detect(
        self,
        features: OrderedDict[str, Tensor],
        images: ImageBatch,
        boxes: Tensor | None = None,
        image_index: Tensor | None = None,
        head: Dataset = "vg",
    ) -> Detections:
        """Classify given boxes (PredCls/SGCls) or detect from scratch (SGDet, ``boxes=None``).

        boxes: Float[N, 4] xyxy resized pixels with image_index: Long[N] — exactly these boxes are classified
            (no regression, no NMS): ``label_logits`` Float[N, C+1], ``labels`` the foreground argmax,
            ``scores`` its softmax probability, ``box_features`` Float[N, 1024].
        boxes=None: proposals → classifier → class-specific box regression → clip → ``score > score_thresh``
            → per-image, per-class NMS → the ``detections_per_img`` best per image. Each detection keeps the
            ``label_logits`` and ``box_features`` of the proposal it was regressed from; its ``labels`` /
            ``scores`` are the detected class and that class's probability (not always the argmax); its
            ``class_boxes`` Float[N, C+1, 4] are its proposal's box regressed for every class (for the SGDet
            post-processing's final box).
        head: "vg" (C+1 = 151, the default, what stage 2 uses) or "coco" (81, for COCO box/mask AP).
        Rows are sorted by image, then by descending score.
        """
        predictor = self._predictor(head)
        if boxes is not None:
            if image_index is None:
                raise ValueError("detect: `image_index` (Long[N]) is required with `boxes`")
            feats = self.box_features(features, images, boxes, image_index)
            logits, _ = predictor(feats)
            probs = logits.float().softmax(-1)
            scores, labels = probs[:, 1:].max(1) if len(boxes) else (probs[:, 0], image_index.clone())
            return Detections(boxes, image_index, logits, labels + 1, scores, feats)
        proposals, proposal_index, _ = self._propose(features, images, None)
        feats = self.box_features(features, images, proposals, proposal_index)
        logits, deltas = predictor(feats)
        return self._postprocess(proposals, proposal_index, logits, deltas.float(), feats, images)

    def _postprocess(
        self, proposals: Tensor, image_index: Tensor, logits: Tensor, deltas: Tensor, feats: Tensor,
        images: ImageBatch,
    ) -> Detections:  # fmt: skip
        p, c = logits.shape
        dev = proposals.device
        boxes = self.box_coder.decode_single(deltas, proposals).reshape(p, c, 4)
        sizes = images.image_sizes.to(dev)[image_index].to(boxes.dtype)  # (h, w) per proposal
        boxes = torch.stack(
            [
                boxes[..., 0].clamp(min=0).minimum(sizes[:, 1:2]),
                boxes[..., 1].clamp(min=0).minimum(sizes[:, 0:1]),
                boxes[..., 2].clamp(min=0).minimum(sizes[:, 1:2]),
                boxes[..., 3].clamp(min=0).minimum(sizes[:, 0:1]),
            ],
            dim=-1,
        )
        probs = logits.float().softmax(-1)
        class_boxes = boxes  # [P, C, 4]: every class's regressed box, kept for the SGDet post-processing
        # one candidate per (proposal, foreground class)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = probs[:, 1:].reshape(-1)
        labels = torch.arange(1, c, device=dev).repeat(p)
        source = torch.arange(p, device=dev).repeat_interleave(c - 1)
        keep = torch.where(scores > self.score_thresh)[0]
        keep = keep[remove_small_boxes(boxes[keep], min_size=1e-2)]
        img = image_index[source[keep]]
        # per-image per-class NMS in one call: the group id separates both
        keep = keep[batched_nms(boxes[keep], scores[keep], img * c + labels[keep], self.nms_thresh)]
        # keep is score-descending; a stable sort by image keeps that order inside each image
        keep = keep[torch.sort(image_index[source[keep]], stable=True).indices]
        img = image_index[source[keep]]
        first = torch.searchsorted(img, img, right=False)
        keep = keep[(torch.arange(len(keep), device=dev) - first) < self.detections_per_img]
        src = source[keep]
        return Detections(
            boxes=boxes[keep],
            image_index=image_index[src],
            label_logits=logits[src],
            labels=labels[keep],
            scores=scores[keep],
            box_features=feats[src],
            class_boxes=class_boxes[src],
        )

    def mask_logits(
        self, features: OrderedDict[str, Tensor], images: ImageBatch, boxes: Tensor, image_index: Tensor
    ) -> InstanceMasks:
        """COCO mask logits for GIVEN boxes: InstanceMasks.logits Float[N, 80, M, M], M = 2 × mask_roi_size.

        Channel c-1 is COCO class c; the M × M grid covers the box exactly (Mask R-CNN's frame).
        """
        x = self.mask_head(self._pool(self.mask_roi_pool, features, images, boxes, image_index))
        return InstanceMasks(self.mask_predictor(x), boxes, image_index)

    def forward(
        self,
        images: ImageBatch,
        boxes: Tensor | None = None,
        image_index: Tensor | None = None,
        head: Dataset = "vg",
    ) -> Detections:
        """``detect(features(images), images, boxes, image_index, head)``: the same Detections in train and eval
        (training goes through :meth:`training_losses`)."""
        return self.detect(self.features(images), images, boxes, image_index, head)

    # ------------------------------------------------------------------ training
    def _match(self, boxes: Tensor, image_index: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
        """Labels Long[P] (-1 ignore, 0 background, else GT class) and matched GT row Long[P] (0 if none)."""
        p = boxes.shape[0]
        if targets.boxes.shape[0] == 0:
            zeros = torch.zeros(p, dtype=torch.long, device=boxes.device)
            return zeros, zeros.clone()
        iou = box_iou(targets.boxes.to(boxes.dtype), boxes)
        # a GT box only matches proposals of its own image: flat batch, no per-image loop
        iou = iou.masked_fill(targets.image_index[:, None] != image_index[None, :], -1.0)
        matched = self.box_matcher(iou)
        labels = targets.labels[matched.clamp(min=0)].clone()
        labels[matched == self.box_matcher.BELOW_LOW_THRESHOLD] = 0
        labels[matched == self.box_matcher.BETWEEN_THRESHOLDS] = -1
        return labels, matched.clamp(min=0)

    def _sample(self, labels: Tensor, image_index: Tensor, num_images: int) -> Tensor:
        """Long[S]: rows kept by the balanced sampler, per image (sorted by image)."""
        rows = [torch.where(image_index == i)[0] for i in range(num_images)]
        pos, neg = self.box_sampler([labels[r] for r in rows])
        return torch.cat([r[torch.where(ps | ng)[0]] for r, ps, ng in zip(rows, pos, neg)])

    def training_losses(self, images: ImageBatch, targets: Targets, dataset: Dataset) -> dict[str, Tensor]:
        """Losses of one batch: RPN + box losses for "vg"; RPN + box + mask losses for "coco".

        targets: boxes xyxy resized pixels, labels in 1..num_{vg,coco}_classes; for "coco" also
        ``masks`` UInt8[N, H, W] in the padded frame. Images (or whole batches) with no GT box are fine.
        Returns ``{"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"[, "mask"]}`` scalars (unweighted).
        """
        predictor = self._predictor(dataset)
        if dataset == "coco" and targets.masks is None:
            raise ValueError(
                "training_losses: COCO targets need `masks` (UInt8[N, H, W]); got Targets.masks=None"
            )
        features = self.features(images)
        proposals, proposal_index, losses = self._propose(features, images, targets)
        # GT boxes join the proposals so every GT has positives from the first step
        boxes = torch.cat([proposals, targets.boxes.to(proposals.dtype)])
        image_index = torch.cat([proposal_index, targets.image_index])
        labels, gt_row = self._match(boxes, image_index, targets)
        keep = self._sample(labels, image_index, images.num_images)
        boxes, image_index, labels, gt_row = boxes[keep], image_index[keep], labels[keep], gt_row[keep]
        if targets.boxes.shape[0] > 0:
            regression_targets = self.box_coder.encode_single(targets.boxes[gt_row].to(boxes.dtype), boxes)
        else:
            regression_targets = torch.zeros_like(boxes)
        logits, deltas = predictor(self.box_features(features, images, boxes, image_index))
        losses["rcnn_cls"], losses["rcnn_box"] = fast_rcnn_loss(logits, deltas, labels, regression_targets)
        if dataset == "coco":
            fg = labels > 0
            masks = self.mask_logits(features, images, boxes[fg], image_index[fg])
            losses["mask"] = mask_rcnn_loss(masks.logits, boxes[fg], labels[fg], targets.masks, gt_row[fg])
        return losses
