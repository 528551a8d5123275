"""The stage-2 scene-graph model: frozen detector → mask transfer → grounding → context → relations.

Where this sits: composed from the stage-1 :class:`~sgseg.models.detector.JointDetector` (frozen: eval mode,
no gradients) and the trainable stage-2 parts; :class:`sgseg.lit.scene_graph_module.SceneGraphModule` wraps
it for training and evaluation. One VG forward:

1. detector features; boxes = GT boxes (PredCls / SGCls) or detections (SGDet); VG label logits and box
   features z_j for those boxes; COCO mask logits (80 channels, 28 × 28) for the same boxes.
2. zero-shot transfer of the COCO mask logits to the C_vg classes (``MaskTransfer``), sigmoid → masks m_j.
3. node grounding ẑ_j = f_N([z_j, m_j]) → context model (MOTIF / VCTree) → object labels, object context
   z^o_j, edge context.
4. mask refinement (optional): m̂_j = transfer(COCO logits + f_M'(RoI features, z^o_j)). Refinement needs
   z^o, and z^o needs the node features, so ``refine_passes`` chooses how the refined masks come back:
   0 — not at all on VG (the reference's published setting, ``REFINE_SEG_MASKS False``); 1 — they feed the
   edge grounding only; 2 — a second pass: node grounding and context again on the refined masks, then the
   edge grounding (paper Sec. 2.6; the reference's ``REFINE_SEG_MASKS True``, which it applies at test only —
   ``train_refine_passes=0``). The first pass of 2 runs without gradients (its only output, z^o, is detached),
   and the refinement head is trained only by the COCO mask loss (its residual is detached on the VG stream).
5. pairs (sampled in training; at test all ordered pairs, in SGDet only the overlapping ones) → union-box
   RoI features → edge grounding ẑ_{j,j'} = f_E(...) → relation predictor (+ frequency bias) → relation
   logits. Step 5 runs over the pairs of the whole batch in chunks of ``pair_chunk_size`` pairs, so its
   peak memory is bounded whatever the pair count (each pair's result depends on that pair alone). The
   Gaussian kernels' (σx, σy, ρ) come from the detector's label distribution l_j (paper Eq. 6; one-hot GT labels in PredCls),
   or with ``kernel_labels="context"`` from the context model's refined object logits.
6. SGDet at test: the objects' final labels, scores and boxes (:mod:`sgseg.models.relation.postprocess`,
   the same for MOTIF and VCTree).

The COCO forward (:meth:`SceneGraphModel.coco_refinement_logits`, paper Eq. 9 and 11) runs the frozen
detector on COCO GT boxes, then node grounding, the context model's object encoder (in the run's task mode, in
train mode when the model trains) and the refinement head **with gradients**, so L_seg trains everything it
passes through upstream of z^o — only the detector is frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

import sgseg.models.grounding.edge as edge_mod
from sgseg.models.context.base import MODES, ContextOutput
from sgseg.models.detector.detector import JointDetector
from sgseg.models.grounding.edge import union_boxes, unordered_pairs
from sgseg.models.masks.refine import MaskRefinement
from sgseg.models.masks.transfer import MaskTransfer, blur_masks, true_mask_probs
from sgseg.models.relation.postprocess import LATER_NMS_THRESHOLD, postprocess_objects
from sgseg.models.relation.predictor import RelationPredictor
from sgseg.models.relation.sampling import all_pairs, overlapping_pairs, sample_gt_pairs, sample_sgdet_pairs
from sgseg.structures import Detections, ImageBatch, RelationPredictions, Targets

# ``pair_chunk_size="auto"``: as many pairs per chunk as fit this many bytes of per-pair tensors (estimated by
# :meth:`SceneGraphModel.pair_chunk`), whatever the widths; 1 GiB keeps a chunk's tensors well under the rest
# of an SGDet test step (measured by scripts/bench_memory.py).
AUTO_CHUNK_BYTES = 1 << 30
# float32 S × S maps alive per pair in step 5, in units of the feature width D (the union RoI feature, the
# f_E head's conv output and its ReLU) and of the mask channels C_vg (the pair's two pasted masks, their
# blurred copies, the product, its sigmoid / the head input). Measured at VG150 widths (D = 256, C_vg = 150,
# S = 28): 4.6 MB per pair with Gaussian grounding (estimate 5.2), 2.4 MB without masks (estimate 2.4).
FEATURE_MAPS_PER_PAIR = 3
MASK_TENSORS_PER_PAIR = 6


@dataclass
class SceneGraphOutput:
    """Everything one VG forward produces (same type in training and evaluation).

    predictions: the ranked-ready predictions (objects + pairs + relation logits).
    context: the context model's output (object logits for the object loss, VCTree tree scores).
    rel_labels: Long[R] predicate label of each pair (0 = background) in training; None at test.
    obj_targets: Long[N] GT label of each object (SGDet: of its matched GT box, 0 = none); None when unknown.
    positive_pairs: Long[F, 2] foreground pairs (for VCTree's tree loss) in training; None at test.
    vg_mask_probs: Float[N, C_vg, M, M] the masks the edge grounding used (refined when refinement is on).
    """

    predictions: RelationPredictions
    context: ContextOutput
    rel_labels: Tensor | None
    obj_targets: Tensor | None
    positive_pairs: Tensor | None
    vg_mask_probs: Tensor


def assign_gt_labels(
    det_boxes: Tensor,
    det_index: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_index: Tensor,
    iou: float = 0.5,
) -> Tensor:
    """Long[P]: the label of the best-overlapping GT box of the same image when IoU ≥ ``iou``, else 0."""
    if det_boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return torch.zeros(det_boxes.shape[0], dtype=torch.long, device=det_boxes.device)
    ious = box_iou(det_boxes.float(), gt_boxes.float())
    ious[det_index[:, None] != gt_index[None, :]] = -1.0
    best, which = ious.max(1)
    return torch.where(best >= iou, gt_labels[which], torch.zeros_like(which))


class SceneGraphModel(nn.Module):
    """Segmentation-grounded MOTIF / VCTree on a frozen joint detector (see module docstring).

    detector: the stage-1 detector (frozen here). transfer: COCO → VG :class:`MaskTransfer`.
    node_grounding: ``NodeGrounding`` or ``NoNodeGrounding``; edge_grounding: one of the f_E variants
    (``NoEdgeGrounding`` for the baseline); context: ``MotifContext`` / ``VCTreeContext``;
    predictor: :class:`RelationPredictor`; refinement: :class:`MaskRefinement` or None (``model/refine``).
    pairs_per_image / positive_fraction: training pair budget (reference 64 / 0.25).
    roi_size: RoIAlign side for node and union features (28, the mask side).
    refine_passes: 0 | 1 | 2, how refined masks feed the VG stream (module docstring, step 4);
    train_refine_passes: the same in training (None = ``refine_passes``).
    kernel_labels: ``detector`` (paper Eq. 6) | ``context`` — the label distribution the edge grounding's
    Gaussian kernels are predicted from.
    test_require_overlap: SGDet test candidates are only the pairs of overlapping detections (paper Sec. 3.3,
        reference ``TEST.RELATION.REQUIRE_OVERLAP``); PredCls/SGCls always score every ordered pair.
    pair_chunk_size: pairs per chunk of step 5 (union features, edge grounding, predictor), an int ≥ 1 or
        "auto" (:meth:`pair_chunk`). The chunks run over the flat pairs of the whole batch.
    mask_source: where grounding's masks m_j come from: ``transfer`` (the zero-shot transferred masks; also
        the ``shuffled`` lower bound, whose deranged S lives in ``transfer``) or ``oracle`` (the GT objects' true
        masks, ``targets.masks``, pasted into the same box frame: :func:`true_mask_probs`; PredCls/SGCls only;
        refinement then does not feed the VG stream, the true masks are used in every pass) or ``empty`` (all-zero
        masks: the grounded architecture with no shape information; a control for the masks' contribution).
    oracle_blur: with ``mask_source='oracle'``, the standard deviation (in cells of the M × M mask grid) of a
        Gaussian blur applied to the true masks (:func:`blur_masks`); 0 (default) keeps them as projected. A
        soft oracle: the transferred masks are soft probabilities, the true ones near-binary, and this tells the
        two differences apart.
    sgdet_nms_threshold: IoU of the SGDet-test label NMS of the post-processing (reference 0.3; None: keep the
        context's labels). detections_per_image: if set, the frozen detector's SGDet ``detections_per_img``
        for this model (reference SGDet recipe ``TEST.DETECTIONS_PER_IMAGE 40``); None keeps the detector's.
    """

    def __init__(
        self,
        detector: JointDetector,
        transfer: MaskTransfer,
        node_grounding: nn.Module,
        edge_grounding: nn.Module,
        context: nn.Module,
        predictor: RelationPredictor,
        refinement: MaskRefinement | None = None,
        pairs_per_image: int = 64,
        positive_fraction: float = 0.25,
        roi_size: int = 28,
        sgdet_match_iou: float = 0.5,
        refine_passes: int = 1,
        train_refine_passes: int | None = None,
        kernel_labels: str = "detector",
        test_require_overlap: bool = True,
        pair_chunk_size: int | str = "auto",
        sgdet_nms_threshold: float | None = LATER_NMS_THRESHOLD,
        detections_per_image: int | None = None,
        mask_source: str = "transfer",
        oracle_blur: float = 0.0,
    ) -> None:
        super().__init__()
        if mask_source not in ("transfer", "oracle", "empty"):
            raise ValueError(
                f"SceneGraphModel: `mask_source` must be 'transfer', 'oracle' or 'empty', got {mask_source!r} (the shuffled "
                "lower bound is 'transfer' with a deranged similarity); set model.mask_source"
            )
        if not (isinstance(oracle_blur, (int, float)) and math.isfinite(oracle_blur) and oracle_blur >= 0):
            raise ValueError(
                f"SceneGraphModel: `oracle_blur` must be a finite number >= 0 (cells of the mask grid), got "
                f"{oracle_blur!r}; set model.oracle_blur"
            )
        if oracle_blur > 0 and mask_source != "oracle":
            raise ValueError(
                f"SceneGraphModel: `oracle_blur` ({oracle_blur}) blurs the true masks of mask_source='oracle', but "
                f"mask_source is {mask_source!r}; set model.oracle_blur=0 or model.mask_source=oracle"
            )
        self.mask_source = mask_source
        self.oracle_blur = float(oracle_blur)
        for name, passes in (("refine_passes", refine_passes), ("train_refine_passes", train_refine_passes)):
            if passes not in (0, 1, 2) and not (name == "train_refine_passes" and passes is None):
                raise ValueError(f"SceneGraphModel: `{name}` must be 0, 1 or 2, got {passes!r}")
        if kernel_labels not in ("detector", "context"):
            raise ValueError(
                f"SceneGraphModel: `kernel_labels` must be 'detector' or 'context', got {kernel_labels!r}"
            )
        self.detector = detector
        self.detector.requires_grad_(False)
        self.detector.eval()
        self.transfer = transfer
        self.node_grounding = node_grounding
        self.edge_grounding = edge_grounding
        self.context = context
        self.predictor = predictor
        self.refinement = refinement
        self.pairs_per_image = pairs_per_image
        self.positive_fraction = positive_fraction
        self.roi_size = roi_size
        self.sgdet_match_iou = sgdet_match_iou
        self.uses_node_masks = hasattr(node_grounding, "head")
        self.uses_edge_masks = hasattr(edge_grounding, "relation_masks")
        self.refine_passes = refine_passes
        self.train_refine_passes = refine_passes if train_refine_passes is None else train_refine_passes
        self.kernel_labels = kernel_labels
        self.test_require_overlap = bool(test_require_overlap)
        if not (pair_chunk_size == "auto" or (isinstance(pair_chunk_size, int) and pair_chunk_size >= 1)):
            raise ValueError(
                f"SceneGraphModel: pair_chunk_size must be 'auto' or an int >= 1, got {pair_chunk_size!r}; "
                "set model.pair_chunk_size"
            )
        self.pair_chunk_size = pair_chunk_size
        self.sgdet_nms_threshold = sgdet_nms_threshold
        if detections_per_image is not None:
            if int(detections_per_image) < 1:
                raise ValueError(
                    f"SceneGraphModel: detections_per_image must be >= 1, got {detections_per_image}; set "
                    "model.detections_per_image (or null to keep the detector's)"
                )
            self.detector.detections_per_img = int(detections_per_image)

    def train(self, mode: bool = True) -> SceneGraphModel:
        super().train(mode)
        self.detector.eval()  # frozen: BatchNorm statistics and RPN settings stay those of inference
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("detector.") and p.requires_grad]

    # ------------------------------------------------------------------ detector side (no gradients)
    @torch.no_grad()
    def _detect(self, images: ImageBatch, targets: Targets | None, mode: str):
        features = self.detector.features(images)
        if mode == "sgdet":
            dets = self.detector.detect(features, images)
        else:
            if targets is None:
                raise ValueError(f"SceneGraphModel: mode {mode!r} needs the GT boxes (`targets`)")
            dets = self.detector.detect(features, images, targets.boxes, targets.image_index)
        coco_logits = self.detector.mask_logits(features, images, dets.boxes, dets.image_index).logits
        return features, dets, coco_logits

    def _node_features(self, features, images: ImageBatch, dets: Detections, vg_mask_probs: Tensor) -> Tensor:
        if not self.uses_node_masks:
            return self.node_grounding(None, None, dets.box_features)
        with torch.no_grad():
            roi = self.detector.roi_features(features, images, dets.boxes, dets.image_index, self.roi_size)
        return self.node_grounding(roi, vg_mask_probs, dets.box_features)

    def _refine(
        self, features, images: ImageBatch, dets: Detections, coco_logits: Tensor, ctx: Tensor
    ) -> Tensor:
        """COCO logits + f_M'(RoI features at half the mask side, context) — Float[N, 80, M, M]."""
        with torch.no_grad():
            roi = self.detector.roi_features(
                features, images, dets.boxes, dets.image_index, self.refinement.roi_size
            )
        return coco_logits + self.refinement(roi, ctx)

    def _kernel_label_probs(self, dets: Detections, ctx: ContextOutput, mode: str) -> Tensor:
        """Float[N, C_obj] l_j for the Gaussian kernels (Eq. 6): the detector's label distribution, detached
        (PredCls: one-hot of the GT label), or with ``kernel_labels="context"`` the context's object logits."""
        if self.kernel_labels == "context":
            return ctx.obj_logits.softmax(-1)
        if mode == "predcls":
            return F.one_hot(ctx.obj_labels, dets.label_logits.shape[1]).to(dets.label_logits.dtype)
        return dets.label_logits.detach().softmax(-1)

    def pair_chunk(self, feature_channels: int, mask_channels: int) -> int:
        """Pairs per chunk of step 5: ``pair_chunk_size``, or for "auto" ``AUTO_CHUNK_BYTES`` divided by the
        estimated float32 bytes of one pair's tensors (``FEATURE_MAPS_PER_PAIR`` × D plus, with mask-using
        edge grounding, ``MASK_TENSORS_PER_PAIR`` × C_vg maps of S × S, S = ``roi_size``)."""
        if self.pair_chunk_size != "auto":
            return int(self.pair_chunk_size)
        cells = self.roi_size * self.roi_size
        channels = FEATURE_MAPS_PER_PAIR * feature_channels + (
            MASK_TENSORS_PER_PAIR * mask_channels if self.uses_edge_masks else 0
        )
        return max(1, AUTO_CHUNK_BYTES // (4 * cells * channels))

    def _relation_logits(
        self,
        features,
        images: ImageBatch,
        dets: Detections,
        pairs: Tensor,
        edge_probs: Tensor,
        ctx,
        kernel_probs: Tensor,
    ) -> Tensor:
        """Float[R, C_rel]: union features → edge grounding → predictor, over ``pairs`` in chunks.
        kernel_probs: Float[N, C_obj] the label distributions the Gaussian kernels are predicted from."""
        chunk = self.pair_chunk(next(iter(features.values())).shape[1], edge_probs.shape[1])
        # f_E symmetric (ẑ_{j,j'} = ẑ_{j',j}): union box, its RoI feature and f_E once per unordered pair of
        # the chunk, the result gathered back to the ordered pairs (the same numbers, bit for bit, as pooling
        # every ordered pair and deduplicating inside the edge grounding; see forward_once_per_unordered_pair)
        once = edge_mod.ONCE_PER_UNORDERED_PAIR and getattr(self.edge_grounding, "symmetric", False)
        out = []
        for start in range(0, max(pairs.shape[0], 1), chunk):  # one (empty) pass when there is no pair
            p = q = pairs[start : start + chunk]
            inverse = None
            if once and p.shape[0] > 1:
                first, inv = unordered_pairs(p)
                if first.numel() < p.shape[0]:
                    q, inverse = p[first], inv
            with torch.no_grad():
                ub = union_boxes(dets.boxes, q)
                union_feats = self.detector.roi_features(
                    features, images, ub, dets.image_index[q[:, 0]], self.roi_size
                )
            edge = self.edge_grounding(union_feats, edge_probs, dets.boxes, q, kernel_probs)
            if inverse is not None:
                edge = edge.index_select(0, inverse)
            out.append(self.predictor(ctx.edge_context, p, edge, ctx.obj_labels))
            del union_feats, edge
        return out[0] if len(out) == 1 else torch.cat(out)

    # ------------------------------------------------------------------ VG forward
    def forward(self, images: ImageBatch, targets: Targets | None, mode: str) -> SceneGraphOutput:
        """images: the VG batch; targets: its GT (needed in training, and for the GT boxes of PredCls/SGCls);
        mode: predcls | sgcls | sgdet. In training, pairs are sampled against ``targets``; in eval mode all
        ordered pairs of each image are scored."""
        if mode not in MODES:
            raise ValueError(f"SceneGraphModel: mode {mode!r} is not one of {MODES}; set task.name")
        features, dets, coco_logits = self._detect(images, targets, mode)
        passes = self.train_refine_passes if self.training else self.refine_passes
        if self.mask_source == "oracle":
            vg_probs = self._true_masks(dets, targets, mode, coco_logits.shape[-1])
            passes = 0  # the true masks in every pass: nothing for the refinement to improve on the VG stream
        elif self.mask_source == "empty":
            num = coco_logits.shape[0], self.transfer.num_target_classes, *coco_logits.shape[-2:]
            vg_probs = coco_logits.new_zeros(num)
            passes = 0
        else:
            vg_probs = self.transfer(coco_logits).sigmoid()
        if self.refinement is None or not (self.uses_node_masks or self.uses_edge_masks):
            passes = 0
        if passes == 1 and not self.uses_edge_masks:
            passes = 0
        if passes == 2 and not self.uses_node_masks:
            passes = 1  # nothing upstream of the context reads masks: one pass gives the same result
        with torch.set_grad_enabled(torch.is_grad_enabled() and passes != 2):
            node = self._node_features(features, images, dets, vg_probs)

        obj_targets = None
        if targets is not None and mode != "sgdet":
            obj_targets = targets.labels
        elif targets is not None:
            obj_targets = assign_gt_labels(
                dets.boxes, dets.image_index, targets.boxes, targets.labels, targets.image_index,
                self.sgdet_match_iou,
            )  # fmt: skip
        if mode == "predcls":
            gt_labels = targets.labels
        elif self.training:
            gt_labels = obj_targets
        else:
            gt_labels = None
        ctx_args = (dets.boxes, dets.image_index, images.image_sizes, dets.label_logits, gt_labels, mode)
        edge_probs = vg_probs
        if passes == 2:
            with torch.no_grad():  # pass 1 only produces z^o for the refinement, which is detached anyway
                first = self.context(node, *ctx_args)
                refined = self._refine(features, images, dets, coco_logits, first.object_context)
                edge_probs = self.transfer(refined).sigmoid()
            node = self._node_features(features, images, dets, edge_probs)
        ctx = self.context(node, *ctx_args)

        rel_labels = positive = None
        if self.training:
            if targets is None:
                raise ValueError("SceneGraphModel: training needs `targets` to sample relation pairs")
            if mode == "sgdet":
                pairs, rel_labels = sample_sgdet_pairs(
                    dets.boxes, obj_targets, dets.image_index, targets.boxes, targets.labels, targets.image_index,
                    targets.relations, iou_threshold=self.sgdet_match_iou, pairs_per_image=self.pairs_per_image,
                    positive_fraction=self.positive_fraction,
                )  # fmt: skip
            else:
                pairs, rel_labels = sample_gt_pairs(
                    targets.relations, targets.image_index, self.pairs_per_image, self.positive_fraction
                )
            positive = pairs[rel_labels > 0]
        elif mode == "sgdet" and self.test_require_overlap:
            pairs = overlapping_pairs(dets.boxes, dets.image_index)
        else:
            pairs = all_pairs(dets.image_index)

        if passes == 1:
            refined = self._refine(features, images, dets, coco_logits, ctx.object_context.detach())
            edge_probs = self.transfer(refined.detach()).sigmoid()
        kernel_probs = self._kernel_label_probs(dets, ctx, mode)
        rel_logits = self._relation_logits(features, images, dets, pairs, edge_probs, ctx, kernel_probs)
        boxes, labels, scores = dets.boxes, ctx.obj_labels, ctx.obj_scores
        if mode == "sgdet" and not self.training:
            final = postprocess_objects(
                ctx.obj_logits, labels, scores, boxes, dets.image_index, dets.class_boxes,
                self.sgdet_nms_threshold,
            )  # fmt: skip
            boxes, labels, scores = final.boxes, final.labels, final.scores
        predictions = RelationPredictions(
            boxes=boxes,
            image_index=dets.image_index,
            labels=labels,
            scores=scores,
            obj_logits=ctx.obj_logits,
            pair_index=pairs,
            rel_logits=rel_logits,
        )
        return SceneGraphOutput(predictions, ctx, rel_labels, obj_targets, positive, edge_probs)

    def _true_masks(self, dets: Detections, targets: Targets | None, mode: str, size: int) -> Tensor:
        """Float[N, C_vg, M, M]: the oracle mask source (:func:`true_mask_probs`) for the GT boxes."""
        if mode == "sgdet":
            raise ValueError(
                "SceneGraphModel: mask_source='oracle' needs the GT boxes (predcls / sgcls); detections have no "
                "true masks. Set task=predcls|sgcls or model.mask_source=transfer"
            )
        if targets is None or targets.masks is None:
            raise ValueError(
                "SceneGraphModel: mask_source='oracle' needs the GT objects' true masks in `targets.masks` (the "
                "VG dataset's true_masks option, which stage 2 sets for model.mask_source=oracle)"
            )
        if not torch.equal(dets.boxes, targets.boxes):
            raise ValueError(
                "SceneGraphModel: mask_source='oracle' expects the detections to be the GT boxes"
            )
        probs = true_mask_probs(targets.masks, targets.boxes, self.transfer.num_target_classes, size)
        return blur_masks(probs, self.oracle_blur)

    # ------------------------------------------------------------------ COCO forward (refinement)
    def coco_refinement_logits(
        self,
        images: ImageBatch,
        targets: Targets | None = None,
        boxes: Tensor | None = None,
        image_index: Tensor | None = None,
        features=None,
        mode: str = "sgcls",
        labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Refined and unrefined COCO mask logits (Float[N, 80, M, M] each) for the COCO GT boxes of
        ``targets`` — or for given ``boxes`` / ``image_index`` (e.g. detections, for mask AP).

        Paper Eq. 11: everything after the frozen detector runs with gradients (node grounding → the context
        model's object encoder → refinement head), so L_seg reaches the context model and what feeds it; the
        context runs in whatever train/eval mode the model is in. ``mode`` is the run's task: in PredCls the
        context's input label embedding is its COCO label table at ``labels`` (Long[N] 1-based COCO labels;
        default ``targets.labels``) — the GT-label path, as on VG; otherwise the detector's VG label
        distribution, as on VG."""
        if self.refinement is None:
            raise ValueError(
                "SceneGraphModel: no refinement head (model/refine=off); nothing to train on COCO"
            )
        if mode not in MODES:
            raise ValueError(f"coco_refinement_logits: mode {mode!r} is not one of {MODES}; set task.name")
        if boxes is None:
            if targets is None:
                raise ValueError("coco_refinement_logits: pass `targets` or `boxes` with `image_index`")
            boxes, image_index = targets.boxes, targets.image_index
        if labels is None and targets is not None and boxes is targets.boxes:
            labels = targets.labels
        if mode == "predcls" and labels is None:
            raise ValueError("coco_refinement_logits: predcls needs the COCO labels (`labels` or `targets`)")
        with torch.no_grad():
            if features is None:
                features = self.detector.features(images)
            dets = self.detector.detect(features, images, boxes, image_index)
            coco_logits = self.detector.mask_logits(features, images, boxes, image_index).logits
            vg_probs = self.transfer(coco_logits).sigmoid()
        node = self._node_features(features, images, dets, vg_probs)
        z = self.context.object_context(
            node, boxes, image_index, images.image_sizes, dets.label_logits, mode, labels
        )
        return self._refine(features, images, dets, coco_logits, z), coco_logits
