"""Stage-1 detector: losses (hand-worked), RoI frames, SGDet post-processing, backbones, weight mapping."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import box_iou, roi_align

from sgseg.data.label_spaces import COCO_CATEGORY_IDS
from sgseg.models.detector import (
    JointDetector,
    build_backbone,
    export_detector,
    load_detector,
    load_torchvision_maskrcnn,
)
from sgseg.models.detector.checkpoint import (
    DETECTRON2_PIXEL_MEAN,
    DETECTRON2_X101_PIXEL_STD,
    INIT_FORMAT,
    coco_maskrcnn_to_joint,
    detector_from_coco_maskrcnn,
    detectron2_maskrcnn_to_joint,
    read_detectron2_checkpoint,
)
from sgseg.models.detector.convert import main as convert_cli
from sgseg.models.losses import fast_rcnn_loss, mask_rcnn_loss, project_masks_on_boxes, rpn_loss
from sgseg.structures import Detections, ImageBatch, Targets

SMALL_HEADS = dict(
    representation_size=128,
    mask_head_channels=(32, 32),
    mask_dim_reduced=32,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=60,
    box_batch_size_per_image=64,
    rpn_batch_size_per_image=128,
)


def tiny_detector(num_vg: int = 6, num_coco: int = 4, **kw) -> JointDetector:
    torch.manual_seed(0)
    return JointDetector(build_backbone("tiny"), num_vg, num_coco, **{**SMALL_HEADS, **kw})


def images_of(tensors: torch.Tensor, sizes: list[tuple[int, int]]) -> ImageBatch:
    s = torch.tensor(sizes, dtype=torch.long)
    return ImageBatch(tensors, s, s.clone(), torch.arange(len(sizes)))


def targets_of(boxes, labels, image_index, masks=None) -> Targets:
    return Targets(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(image_index, dtype=torch.long),
        torch.zeros((0, 3), dtype=torch.long),
        masks,
    )


def shapes_batch(h: int = 128, w: int = 128) -> tuple[ImageBatch, Targets]:
    """Two images of coloured shapes; label = colour (1 red block, 2 green disc, 3 blue block)."""
    img = torch.full((2, 3, h, w), 0.5)
    specs = [  # image, label, x1, y1, x2, y2, disc?
        (0, 1, 8, 10, 56, 50, False),
        (0, 2, 64, 60, 120, 116, True),
        (1, 3, 20, 30, 100, 70, False),
        (1, 2, 10, 80, 50, 120, True),
    ]
    colours = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.8, 0.2), 3: (0.1, 0.2, 0.9)}
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks, boxes, labels, index = [], [], [], []
    for b, lab, x1, y1, x2, y2, disc in specs:
        if disc:
            cx, cy, r = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (x2 - x1) / 2
            m = ((xx - cx) ** 2 + (yy - cy) ** 2) <= r**2
        else:
            m = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        img[b][:, m] = torch.tensor(colours[lab])[:, None]
        masks.append(m.to(torch.uint8))
        boxes.append([x1, y1, x2, y2])
        labels.append(lab)
        index.append(b)
    return images_of(img, [(h, w), (h, w)]), targets_of(boxes, labels, index, torch.stack(masks))


def empty_targets(h: int, w: int, with_masks: bool) -> Targets:
    return targets_of([], [], [], torch.zeros((0, h, w), dtype=torch.uint8) if with_masks else None)


# ---------------------------------------------------------------------------------------------- pure losses
def test_fast_rcnn_loss_hand_worked():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    deltas = torch.zeros(2, 12)
    deltas[1, 4:8] = torch.tensor([0.5, 0.0, 0.05, -0.2])  # class-1 deltas of row 1
    labels = torch.tensor([0, 1])
    targets = torch.tensor([[9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0]])  # row 0 is background: never read
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets)
    ce0 = -(2 - math.log(math.exp(2) + 2))
    ce1 = -(1 - math.log(math.exp(1) + 2))
    assert cls.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    beta = 1 / 9
    # |d| >= beta: |d| - beta/2 ; |d| < beta: 0.5 d^2 / beta
    expect = (0.5 - beta / 2) + 0.0 + 0.5 * 0.05**2 / beta + (0.2 - beta / 2)
    assert box.item() == pytest.approx(expect / 2, rel=1e-6)


def test_losses_on_empty_inputs_are_attached_zeros():
    logits = torch.zeros(0, 3, requires_grad=True)
    deltas = torch.zeros(0, 12, requires_grad=True)
    cls, box = fast_rcnn_loss(logits, deltas, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert cls.item() == 0 and box.item() == 0 and cls.requires_grad
    m = torch.zeros(0, 4, 28, 28, requires_grad=True)
    z = mask_rcnn_loss(
        m, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 8, 8), torch.zeros(0)
    )
    assert z.item() == 0 and z.requires_grad
    o, d = rpn_loss(
        torch.zeros(5, requires_grad=True),
        torch.zeros(5, 4),
        torch.zeros(5),
        torch.zeros(5, 4),
        torch.zeros(0, dtype=torch.long),
    )
    assert o.item() == 0 and d.item() == 0


def test_rpn_loss_hand_worked():
    obj = torch.tensor([0.0, 2.0, -1.0, 3.0])
    deltas = torch.tensor([[1.0, 0, 0, 0], [0.0, 0, 0, 0], [5.0, 5, 5, 5], [0.0, 0, 0, 0]])
    labels = torch.tensor([1.0, 0.0, -1.0, 1.0])
    targets = torch.zeros(4, 4)
    sampled = torch.tensor([0, 1, 3])  # anchor 2 (ignored) not sampled
    o, d = rpn_loss(obj, deltas, labels, targets, sampled)
    bce = [math.log(2), math.log(1 + math.exp(2)), math.log(1 + math.exp(-3))]
    assert o.item() == pytest.approx(sum(bce) / 3, rel=1e-6)
    assert d.item() == pytest.approx((1 - 1 / 18) / 3, rel=1e-6)


def test_mask_targets_cover_the_box_and_loss_values():
    gt = torch.zeros(1, 64, 64)
    gt[0, 16:48, 16:32] = 1  # left half of the box (16, 16, 48, 48)
    box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    t = project_masks_on_boxes(gt, box, torch.tensor([0]), 28)
    assert t.shape == (1, 28, 28)
    # aligned=True: pixel k covers [k, k+1), its value sits at k + 0.5. Cell j of 28 over 32 px samples
    # x = 16 + (j + 1/4 or 3/4) * 8/7 - 0.5 (array coordinates): cells 1..12 read only pixels 16..31 (1);
    # cell 0 reads 15.79 → 0.786 and 16.36 → 1: 25/28; cell 13 reads 30.64 → 1, 31.21 → 0.786: 25/28;
    # cell 14 reads 31.79 → 0.214 and 32.36 → 0: 3/28; cells 15.. read only zeros. Rows likewise.
    assert torch.all(t[0, 1:27, 1:13] == 1) and torch.all(t[0, :, 15:] == 0)
    for row, col, value in [
        (5, 0, 25 / 28),
        (5, 13, 25 / 28),
        (5, 14, 3 / 28),
        (0, 5, 25 / 28),
        (27, 5, 25 / 28),
    ]:
        assert t[0, row, col].item() == pytest.approx(value, abs=1e-5)
    logits = torch.zeros(1, 3, 28, 28)
    # zero logits: BCE = log 2 whatever the target
    assert mask_rcnn_loss(logits, box, torch.tensor([2]), gt, torch.tensor([0])).item() == pytest.approx(
        math.log(2)
    )
    # the label's channel (label - 1) set to logit(target): the loss is its minimum, the mean binary entropy
    # of the (soft) targets, and its gradient vanishes; another channel is untouched → log 2
    tc = t[0].double().clamp(1e-12, 1 - 1e-12)
    logits[0, 1] = torch.logit(tc).float()
    logits.requires_grad_(True)
    loss = mask_rcnn_loss(logits, box, torch.tensor([2]), gt, torch.tensor([0]))
    entropy = -(tc * tc.log() + (1 - tc) * (1 - tc).log()).mean()
    assert loss.item() == pytest.approx(entropy.item(), abs=1e-5)
    loss.backward()
    assert logits.grad.abs().max() < 1e-6
    logits = logits.detach()
    assert mask_rcnn_loss(logits, box, torch.tensor([1]), gt, torch.tensor([0])).item() == pytest.approx(
        math.log(2)
    )


# ---------------------------------------------------------------------------------------------- the detector
def test_training_losses_route_gradients_per_dataset():
    det = tiny_detector()
    images, targets = shapes_batch()
    det.train()
    coco = det.training_losses(images, targets, "coco")
    assert set(coco) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "mask"}
    assert all(torch.isfinite(v) and v > 0 for v in coco.values())
    sum(coco.values()).backward()
    assert det.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    assert det.coco_predictor.cls_score.weight.grad.abs().sum() > 0
    assert det.vg_predictor.cls_score.weight.grad is None
    det.zero_grad(set_to_none=True)
    vg_targets = targets_of(targets.boxes.tolist(), [1, 5, 6, 2], targets.image_index.tolist())
    vg = det.training_losses(images, vg_targets, "vg")
    assert set(vg) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"}  # VG never contributes to L_seg
    sum(vg.values()).backward()
    assert det.vg_predictor.cls_score.weight.grad.abs().sum() > 0
    assert (
        det.coco_predictor.cls_score.weight.grad is None
        and det.mask_predictor.mask_fcn_logits.weight.grad is None
    )
    with pytest.raises(ValueError, match="masks"):
        det.training_losses(images, vg_targets, "coco")


@pytest.mark.parametrize("dataset", ["vg", "coco"])
def test_empty_targets_do_not_crash(dataset):
    det = tiny_detector()
    images, targets = shapes_batch()
    losses = det.training_losses(images, empty_targets(128, 128, dataset == "coco"), dataset)
    assert losses["rpn_box"].item() == 0 and losses["rcnn_box"].item() == 0
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # one image with boxes, one without
    keep = targets.image_index == 0
    partial = Targets(targets.boxes[keep], targets.labels[keep], targets.image_index[keep], targets.relations,
                      targets.masks[keep] if dataset == "coco" else None)  # fmt: skip
    losses = det.training_losses(images, partial, dataset)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["rcnn_box"] > 0


def test_roi_features_equal_roi_align_on_the_fpn_level():
    det = tiny_detector().eval()
    torch.manual_seed(1)
    images = images_of(torch.rand(2, 3, 256, 256), [(256, 256), (200, 240)])
    feats = det.features(images)
    # FPN rule k = floor(4 + log2(sqrt(area) / 224)) clamped to 3..5: side 32 → 1 → 3 = '0' (stride 8);
    # side 224 → 4 = '1' (stride 16)
    boxes = torch.tensor([[10.0, 12.0, 42.0, 44.0], [0.0, 0.0, 224.0, 224.0], [3.5, 7.25, 36.0, 40.0]])
    index = torch.tensor([1, 0, 0])  # not sorted: the order must come back as given
    out = det.roi_features(feats, images, boxes, index, 14)
    assert out.shape == (3, det.backbone.out_channels, 14, 14)
    strides = {"0": 8, "1": 16, "2": 32}
    for i, level in enumerate(["0", "1", "0"]):
        rois = torch.cat([index[i : i + 1, None].float(), boxes[i : i + 1]], 1)
        ref = roi_align(feats[level], rois, (14, 14), spatial_scale=1 / strides[level], sampling_ratio=2)
        torch.testing.assert_close(out[i : i + 1], ref)
    # the box head sees the same pooling at 7 × 7
    det_out = det.detect(feats, images, boxes, index)
    z = det.box_head(det.roi_features(feats, images, boxes, index, 7))
    torch.testing.assert_close(det_out.box_features, z)
    logits = det.vg_predictor(z)[0]
    torch.testing.assert_close(det_out.label_logits, logits)
    probs = logits.softmax(-1)
    assert torch.equal(det_out.labels, probs[:, 1:].argmax(1) + 1)
    torch.testing.assert_close(det_out.scores, probs.gather(1, det_out.labels[:, None])[:, 0])


def test_mask_logits_for_given_boxes_shape_frame_and_order():
    det = tiny_detector(num_coco=4).eval()
    images, targets = shapes_batch()
    feats = det.features(images)
    m = det.mask_logits(feats, images, targets.boxes, targets.image_index)
    assert m.logits.shape == (4, 4, 28, 28) and torch.equal(m.boxes, targets.boxes)
    perm = torch.tensor([2, 0, 3, 1])
    m2 = det.mask_logits(feats, images, targets.boxes[perm], targets.image_index[perm])
    torch.testing.assert_close(m2.logits, m.logits[perm])
    empty = det.mask_logits(feats, images, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty.logits.shape == (0, 4, 28, 28)


def test_sgdet_postprocess_thresholds_nms_and_cap():
    det = tiny_detector(num_vg=3, score_thresh=0.2, nms_thresh=0.5, detections_per_img=2)
    images = images_of(torch.zeros(2, 3, 64, 64), [(64, 64), (48, 40)])
    proposals = torch.tensor(
        [[0.0, 0, 20, 20], [1, 1, 21, 21], [40, 40, 60, 60], [30, 30, 50, 60], [0, 0, 10, 10]]
    )
    image_index = torch.tensor([0, 0, 0, 1, 1])
    big = 10.0
    # probabilities (after softmax) — bg, c1, c2, c3 — chosen through logits
    logits = torch.full((5, 4), -big)
    logits[0, 1] = big  # c1 ~1.0
    logits[1, 1], logits[1, 2] = big, big  # c1 0.5, c2 0.5: c1 suppressed by row 0, c2 survives
    logits[2, 0], logits[2, 3] = 0.5, 0.0  # c3 = 1 / (1 + e^0.5) = 0.38 > 0.2: third in image 0, over the cap
    logits[3, 2] = big  # image 1: box extends past the image (h=48): clipped to y2 = 48
    logits[4, 0] = big  # background: every class below threshold
    deltas = torch.zeros(5, 16)
    feats = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 3)
    d = det._postprocess(proposals, image_index, logits, deltas, feats, images)
    assert d.image_index.tolist() == [0, 0, 1]
    assert d.labels.tolist() == [1, 2, 2]
    torch.testing.assert_close(d.scores, torch.tensor([1.0, 0.5, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(d.boxes, torch.tensor([[0.0, 0, 20, 20], [1, 1, 21, 21], [30, 30, 40, 48]]))
    # each detection keeps its proposal's logits and features
    assert d.box_features[:, 0].tolist() == [0.0, 1.0, 3.0]
    torch.testing.assert_close(d.label_logits, logits[[0, 1, 3]])


def test_overfit_two_images_loss_drops_and_boxes_are_found():
    det = tiny_detector(num_vg=3, num_coco=3)
    images, targets = shapes_batch()
    opt = torch.optim.AdamW(det.parameters(), lr=2e-3)
    det.train()
    history = []
    for step in range(70):
        dataset = "coco" if step % 2 else "vg"
        losses = det.training_losses(images, targets, dataset)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((dataset, loss.item()))
    first = [v for d, v in history[:6] if d == "coco"]
    last = [v for d, v in history[-6:] if d == "coco"]
    assert sum(last) / len(last) < 0.35 * sum(first) / len(first), history
    det.eval()
    with torch.no_grad():
        feats = det.features(images)
        dets = det.detect(feats, images)
        for i in range(len(targets.boxes)):
            same = (dets.image_index == targets.image_index[i]) & (dets.labels == targets.labels[i])
            assert same.any(), f"GT {i} has no detection of its class"
            assert box_iou(targets.boxes[i : i + 1], dets.boxes[same]).max() > 0.5
        masks = det.mask_logits(feats, images, targets.boxes, targets.image_index)
        probs = masks.probs[torch.arange(4), targets.labels - 1]
        goal = project_masks_on_boxes(targets.masks, targets.boxes, torch.arange(4), 28) > 0.5
        assert ((probs > 0.5) == goal).float().mean() > 0.85


def test_bf16_autocast_training_step():
    det = tiny_detector()
    images, targets = shapes_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = det.training_losses(images, targets, "coco")
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(det.box_head.fc6.weight.grad).all()


# ---------------------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("name", ["resnet18_fpn", "resnet50_fpn", "vgg16", "resnext101_32x8d_fpn"])
def test_real_backbones_train_one_step_at_64px(name):
    with pytest.warns(UserWarning, match="random initialisation"):
        backbone = build_backbone(name)
    det = JointDetector(
        backbone, 6, 4, representation_size=64, mask_head_channels=(16,), mask_dim_reduced=16,
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, box_batch_size_per_image=32,
    )  # fmt: skip
    levels = {"vgg16": 1}.get(name, 5)
    assert len(det.rpn.anchor_generator.sizes) == levels
    images, targets = shapes_batch(64, 64)
    targets = Targets(
        targets.boxes / 2, targets.labels, targets.image_index, targets.relations, targets.masks[:, ::2, ::2]
    )
    feats = det.features(images)
    stride = 16 if name == "vgg16" else 4
    assert feats["0"].shape == (2, backbone.out_channels, 64 // stride, 64 // stride)
    losses = det.training_losses(images, targets, "coco")
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    grads = [p.grad for p in det.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])


def test_vgg16_is_the_real_architecture_and_freezes_from_the_bottom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bb = build_backbone("vgg16", trainable_layers=2)
    ref = torchvision.models.vgg16(weights=None).features[:30]
    assert [tuple(p.shape) for p in bb.body.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    convs = [m for m in bb.body if isinstance(m, torch.nn.Conv2d)]
    # blocks 1-3 (7 convs) frozen, blocks 4-5 (6 convs) trainable
    assert [c.weight.requires_grad for c in convs] == [False] * 7 + [True] * 6


def test_pretrained_from_path_and_offline_enum(tmp_path, monkeypatch):
    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = build_backbone("resnet18_fpn", pretrained=str(path))
    torch.testing.assert_close(bb.body.conv1.weight, ref.conv1.weight)
    assert (
        not bb.body.conv1.weight.requires_grad and bb.body.layer4[0].conv1.weight.requires_grad
    )  # 3 trainable
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    with pytest.raises(FileNotFoundError, match="hub cache"):
        build_backbone("resnet18_fpn", pretrained="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="ResNet18_Weights"):
        build_backbone("resnet18_fpn", pretrained="NOT_A_WEIGHT")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")


# ---------------------------------------------------------------------------------------------- weights
def test_torchvision_maskrcnn_weights_map_onto_shared_parts_and_coco_heads():
    torch.manual_seed(0)
    tv = MaskRCNN(
        resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), num_classes=91
    )
    tv.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = JointDetector(build_backbone("resnet18_fpn"), 150, 80).eval()
    left = load_torchvision_maskrcnn(det, tv.state_dict())
    assert left and all(k.startswith("vg_predictor.") for k in left)
    images, targets = shapes_batch()
    feats = det.features(images)
    x = (images.tensors - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225]
    )[:, None, None]
    tv_feats = tv.backbone(x)
    for k in feats:
        torch.testing.assert_close(feats[k], tv_feats[k])
    shapes = [(128, 128)] * 2
    per_image = [targets.boxes[targets.image_index == i] for i in range(2)]
    z = tv.roi_heads.box_head(tv.roi_heads.box_roi_pool(tv_feats, per_image, shapes))
    tv_logits, tv_deltas = tv.roi_heads.box_predictor(z)
    ours = det.detect(feats, images, targets.boxes, targets.image_index, head="coco")
    ids = torch.tensor(COCO_CATEGORY_IDS)
    torch.testing.assert_close(ours.box_features, z)
    # the 10 unused category ids stay in the softmax as background: every class keeps torchvision's probability
    assert det.config["coco_extra_background"] == 10
    unused = sorted(set(range(91)) - set(COCO_CATEGORY_IDS))  # background 0 and the 10 gaps
    torch.testing.assert_close(ours.label_logits[:, 1:], tv_logits[:, ids])
    torch.testing.assert_close(ours.label_logits[:, 0], tv_logits[:, unused].logsumexp(1))
    torch.testing.assert_close(ours.label_logits.softmax(1)[:, 1:], tv_logits.softmax(1)[:, ids])
    ours_deltas = det.coco_predictor(z)[1].reshape(-1, 81, 4)
    torch.testing.assert_close(ours_deltas[:, 1:], tv_deltas.reshape(-1, 91, 4)[:, ids])
    tv_masks = tv.roi_heads.mask_predictor(
        tv.roi_heads.mask_head(tv.roi_heads.mask_roi_pool(tv_feats, per_image, shapes))
    )
    ours_masks = det.mask_logits(feats, images, targets.boxes, targets.image_index).logits
    # RoIAlign by matrix products vs torchvision's kernel: float32 rounding, ~1e-5 on some CPUs (AMD EPYC)
    close = {"rtol": 1e-4, "atol": 5e-5}
    torch.testing.assert_close(ours_masks, tv_masks[:, ids], **close)
    # person (category 1) is our class 1 / channel 0; toothbrush (category 90) our class 80 / channel 79
    torch.testing.assert_close(ours_masks[:, 79], tv_masks[:, 90], **close)


def test_export_and_load_roundtrip(tmp_path):
    det = tiny_detector().eval()
    path = export_detector(det, tmp_path / "det.pt")
    again = load_detector(path).eval()
    assert again.config == det.config
    images, targets = shapes_batch()
    a = det.detect(det.features(images), images, targets.boxes, targets.image_index)
    b = again.detect(again.features(images), images, targets.boxes, targets.image_index)
    torch.testing.assert_close(a.label_logits, b.label_logits)
    with pytest.raises(FileNotFoundError, match="detector.checkpoint"):
        load_detector(tmp_path / "nope.pt")
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="export_detector"):
        load_detector(tmp_path / "bad.pt")


def test_features_normalise_and_ignore_padding():
    det = tiny_detector().eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 128)
    padded = torch.zeros(1, 3, 128, 128)
    padded[..., :96, :] = x
    noisy = padded.clone()
    noisy[..., 96:, :] = torch.rand(1, 3, 32, 128)  # garbage in the pad must not matter
    a = det.features(images_of(padded, [(96, 128)]))
    b = det.features(images_of(noisy, [(96, 128)]))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert F.mse_loss(a["0"], det.features(images_of(noisy, [(128, 128)]))["0"]) > 0


def test_forward_returns_detections_in_train_and_eval():
    det = tiny_detector(num_vg=6)
    images, targets = shapes_batch()
    for mode in (True, False):
        det.train(mode)
        with torch.no_grad():
            full = det(images)
            given = det(images, targets.boxes, targets.image_index)
        assert isinstance(full, Detections) and isinstance(given, Detections)
        assert full.label_logits.shape[1] == 7 and len(given) == 4
        assert torch.all(full.image_index[1:] >= full.image_index[:-1])  # sorted by image
        assert torch.all(full.scores > det.score_thresh)
        # at most detections_per_img per image
        assert torch.bincount(full.image_index, minlength=2).max() <= det.detections_per_img


def test_torchvision_maskrcnn_resnet50_fpn_state_dict_covers_every_shared_weight():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = JointDetector(build_backbone("resnet50_fpn"), 150, 80)
    left = load_torchvision_maskrcnn(det, state)
    assert sorted(left) == ["vg_predictor.bbox_pred.bias", "vg_predictor.bbox_pred.weight",
                            "vg_predictor.cls_score.bias", "vg_predictor.cls_score.weight"]  # fmt: skip
    ids = torch.tensor(COCO_CATEGORY_IDS)
    torch.testing.assert_close(
        det.backbone.body.layer3[5].conv2.weight, state["backbone.body.layer3.5.conv2.weight"]
    )
    torch.testing.assert_close(det.rpn.head.cls_logits.weight, state["rpn.head.cls_logits.weight"])
    torch.testing.assert_close(
        det.coco_predictor.cls_score.bias[1:81], state["roi_heads.box_predictor.cls_score.bias"][ids]
    )
    unused = [
        12,
        26,
        29,
        30,
        45,
        66,
        68,
        69,
        71,
        83,
    ]  # COCO's 10 unused category ids: the extra background rows
    torch.testing.assert_close(
        det.coco_predictor.cls_score.weight[81:], state["roi_heads.box_predictor.cls_score.weight"][unused]
    )
    torch.testing.assert_close(
        det.mask_predictor.mask_fcn_logits.weight,
        state["roi_heads.mask_predictor.mask_fcn_logits.weight"][ids],
    )


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_coco_head_loaded_from_torchvision_gives_torchvision_detections(tmp_path, layout):
    """Full SGDet inference on the COCO head = torchvision's MaskRCNN with the same (random) weights: the same
    boxes, scores and 28 × 28 mask probabilities, for every detection of a used category (the unused ids
    are background for us; per-class NMS makes the rest independent of them). v1: maskrcnn_resnet50_fpn's
    layout (on ResNet-18 for speed); v2: maskrcnn_resnet50_fpn_v2 itself."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    kw = dict(rpn_post_nms_top_n_test=40, box_score_thresh=0.02, box_detections_per_img=5000)
    kw.update(num_classes=91, min_size=128, max_size=128)
    if layout == "v1":
        tv = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), **kw)
        backbone, net = {"name": "resnet18_fpn"}, {}
    else:
        tv = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, **kw)
        backbone = {"name": "resnet50_fpn", "fpn_norm": "bn"}
        net = {"rpn_conv_depth": 2, "box_head_convs": [256] * 4, "head_norm": "bn"}
    tv.eval()
    with (
        torch.no_grad()
    ):  # spread the class scores (v1's default init gives all ≈ 1/91; v2's box head is ~20× larger)
        tv.roi_heads.box_predictor.cls_score.weight.mul_(40 if layout == "v1" else 2)
        tv.roi_heads.box_predictor.bbox_pred.weight.mul_(20 if layout == "v1" else 1)
    torch.save(tv.state_dict(), tmp_path / "maskrcnn.pth")
    det = detector_from_coco_maskrcnn(
        tmp_path / "maskrcnn.pth", backbone, 150, 80,
        rpn_post_nms_top_n_test=40, score_thresh=0.02, detections_per_img=5000, **net,
    ).eval()  # fmt: skip
    assert det.config["coco_extra_background"] == 10
    images, _ = shapes_batch()
    torch.manual_seed(1)
    images.tensors.add_(0.2 * torch.rand_like(images.tensors)).clamp_(0, 1)
    with torch.no_grad():
        tv_out = tv(list(images.tensors))
        feats = det.features(images)
        ours = det.detect(feats, images, head="coco")
        probs = det.mask_logits(feats, images, ours.boxes, ours.image_index).logits.sigmoid()
        # torchvision's 28 × 28 mask probabilities, before it pastes them into the image
        batch, _ = tv.transform(list(images.tensors))
        tv_feats = tv.backbone(batch.tensors)
        proposals, _ = tv.rpn(batch, tv_feats)
        tv_heads, _ = tv.roi_heads(tv_feats, proposals, batch.image_sizes)
    to_label = {c: i + 1 for i, c in enumerate(COCO_CATEGORY_IDS)}
    total = 0
    for i in range(2):
        used = torch.tensor([int(c) in to_label for c in tv_out[i]["labels"]], dtype=torch.bool)
        assert not used.all()  # random weights do detect unused ids: they must not show up in ours
        mine = ours.image_index == i
        assert int(mine.sum()) == int(used.sum())
        torch.testing.assert_close(ours.scores[mine], tv_out[i]["scores"][used])
        # our CPU RoIAlign sums in another order than torchvision's kernel (sgseg.ops.roi_align): boxes of
        # up to 128 px (bbox_pred × 20 above) and mask probabilities differ by float32 rounding
        torch.testing.assert_close(ours.boxes[mine], tv_out[i]["boxes"][used], rtol=1e-5, atol=2e-4)
        labels = torch.tensor([to_label[int(c)] for c in tv_out[i]["labels"][used]])
        assert torch.equal(ours.labels[mine], labels)
        own = probs[mine, ours.labels[mine] - 1]
        torch.testing.assert_close(own, tv_heads[i]["masks"][used][:, 0], rtol=1e-4, atol=5e-5)
        total += int(mine.sum())
    assert total > 20


def test_merged_background_survives_export_and_training_step(tmp_path):
    det = tiny_detector(num_coco=4)
    det.set_coco_extra_background(3)
    assert det.coco_predictor.cls_score.out_features == 8 and det.coco_predictor(torch.zeros(2, 128))[
        0
    ].shape == (2, 5)
    images, targets = shapes_batch()
    det.train()
    losses = det.training_losses(images, targets, "coco")
    sum(losses.values()).backward()
    assert (
        det.coco_predictor.cls_score.weight.grad[5:].abs().sum() > 0
    )  # the extra rows learn (as background)
    again = load_detector(export_detector(det.eval(), tmp_path / "det.pt")).eval()
    assert again.config["coco_extra_background"] == 3
    x = torch.randn(3, 128)
    torch.testing.assert_close(again.coco_predictor(x)[0], det.coco_predictor(x)[0])
    logits = det.coco_predictor.cls_score(x)
    torch.testing.assert_close(det.coco_predictor(x)[0].softmax(1)[:, 1:], logits.softmax(1)[:, 1:5])


# ---------------------------------------------------------------------------------------------- detectron2
def detectron2_x101_fpn_maskrcnn(seed: int = 0) -> dict[str, torch.Tensor]:
    """detectron2's mask_rcnn_X_101_32x8d_FPN_3x state dict (model_final_2d9806.pkl): its names and shapes
    (ResNeXt-101 32x8d: 3/4/23/3 blocks, grouped 3 × 3 convs, FrozenBN `.norm`s; FPN p2-p5; StandardRPNHead
    with 3 anchors; 2-fc box head; 81-way classifier with background last, 80 × 4 class-specific
    regression; 4-conv mask head, deconv, 80 mask channels), random values."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def add(name: str, *shape: int) -> None:
        sd[name] = torch.randn(*shape, generator=g) * 0.05

    def norm(prefix: str, c: int) -> None:
        for field in ("weight", "bias", "running_mean"):
            add(f"{prefix}.{field}", c)
        sd[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5

    add("backbone.bottom_up.stem.conv1.weight", 64, 3, 7, 7)
    norm("backbone.bottom_up.stem.conv1.norm", 64)
    cin = 64
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 23, 3)):
        width = cout = 256 * 2 ** (stage - 2)  # 32 groups × 8 × 2^(stage-2); out = 4 × 64 × 2^(stage-2)
        for b in range(blocks):
            p = f"backbone.bottom_up.res{stage}.{b}"
            if b == 0:
                add(f"{p}.shortcut.weight", cout, cin, 1, 1)
                norm(f"{p}.shortcut.norm", cout)
            add(f"{p}.conv1.weight", width, cin if b == 0 else cout, 1, 1)
            norm(f"{p}.conv1.norm", width)
            add(f"{p}.conv2.weight", width, width // 32, 3, 3)
            norm(f"{p}.conv2.norm", width)
            add(f"{p}.conv3.weight", cout, width, 1, 1)
            norm(f"{p}.conv3.norm", cout)
        cin = cout
    for level, c in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        add(f"backbone.fpn_lateral{level}.weight", 256, c, 1, 1)
        add(f"backbone.fpn_lateral{level}.bias", 256)
        add(f"backbone.fpn_output{level}.weight", 256, 256, 3, 3)
        add(f"backbone.fpn_output{level}.bias", 256)
    rpn = "proposal_generator.rpn_head"
    for name, shape in [("conv", (256, 256, 3, 3)), ("objectness_logits", (3, 256, 1, 1)),
                        ("anchor_deltas", (12, 256, 1, 1))]:  # fmt: skip
        add(f"{rpn}.{name}.weight", *shape)
        add(f"{rpn}.{name}.bias", shape[0])
    for name, shape in [("box_head.fc1", (1024, 256 * 7 * 7)), ("box_head.fc2", (1024, 1024)),
                        ("box_predictor.cls_score", (81, 1024)), ("box_predictor.bbox_pred", (320, 1024)),
                        *[(f"mask_head.mask_fcn{i}", (256, 256, 3, 3)) for i in range(1, 5)],
                        ("mask_head.deconv", (256, 256, 2, 2)), ("mask_head.predictor", (80, 256, 1, 1))]:  # fmt: skip
        add(f"roi_heads.{name}.weight", *shape)
        add(f"roi_heads.{name}.bias", shape[1] if name.endswith("deconv") else shape[0])
    return sd


def _pickle_detectron2(path, state, as_numpy: bool = True) -> None:
    import pickle

    model = {k: v.numpy() if as_numpy else v for k, v in state.items()}
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f)


def _to_rgb_input(
    conv1: torch.Tensor, image: torch.Tensor, mean_bgr, std_bgr
) -> tuple[torch.Tensor, torch.Tensor]:
    """conv1 on detectron2's input (BGR, 0-255, its mean/std) and the image in our normalisation."""
    bgr = image[:, [2, 1, 0]] * 255
    theirs = (bgr - torch.tensor(mean_bgr).view(1, 3, 1, 1)) / torch.tensor(std_bgr).view(1, 3, 1, 1)
    ours = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    return F.conv2d(theirs, conv1, stride=2, padding=3), ours


def test_detectron2_x101_maskrcnn_pkl_loads_into_resnext_detector(tmp_path):
    """The paper's detectron2 checkpoint layout → the ResNeXt-101-FPN JointDetector: every weight but the VG
    classifier covered, values where they belong (checked through independent computations)."""
    d2 = detectron2_x101_fpn_maskrcnn()
    _pickle_detectron2(tmp_path / "model_final_2d9806.pkl", d2)
    det = detector_from_coco_maskrcnn(
        tmp_path / "model_final_2d9806.pkl",
        {"name": "resnext101_32x8d_fpn", "pretrained": "IMAGENET1K_V2", "trainable_layers": 3},  # not read
        150, 80,
    ).eval()  # fmt: skip
    assert det.config["coco_extra_background"] == 0
    assert det.config["image_mean"] == [0.485, 0.456, 0.406]  # ours stays RGB/ImageNet: folded into conv1
    # strict coverage: the loaded detector's state equals the mapping and nothing else was left untouched
    mapped, kind = coco_maskrcnn_to_joint(tmp_path / "model_final_2d9806.pkl")
    assert kind == "detectron2"
    state = det.state_dict()
    assert set(state) - set(mapped) == {f"vg_predictor.{n}.{p}" for n in ("cls_score", "bbox_pred")
                                        for p in ("weight", "bias")}  # fmt: skip
    body = det.backbone.body
    assert torch.equal(body.layer3[22].conv2.weight, d2["backbone.bottom_up.res4.22.conv2.weight"])
    assert body.layer3[22].conv2.groups == 32
    assert torch.equal(
        body.layer1[0].downsample[1].running_var, d2["backbone.bottom_up.res2.0.shortcut.norm.running_var"]
    )
    assert torch.equal(body.layer4[2].bn3.bias, d2["backbone.bottom_up.res5.2.conv3.norm.bias"])
    assert torch.equal(body.bn1.running_mean, d2["backbone.bottom_up.stem.conv1.norm.running_mean"])
    fpn = det.backbone.fpn
    assert torch.equal(fpn.inner_blocks[0][0].weight, d2["backbone.fpn_lateral2.weight"])
    assert torch.equal(fpn.layer_blocks[3][0].bias, d2["backbone.fpn_output5.bias"])
    assert torch.equal(det.mask_head[2][0].weight, d2["roi_heads.mask_head.mask_fcn3.weight"])
    # conv1 on our RGB [0, 1] ImageNet-normalised input = detectron2's conv1 on its BGR 0-255 input
    torch.manual_seed(0)
    image = torch.rand(1, 3, 24, 24)
    theirs, ours = _to_rgb_input(d2["backbone.bottom_up.stem.conv1.weight"], image, DETECTRON2_PIXEL_MEAN,
                                 DETECTRON2_X101_PIXEL_STD)  # fmt: skip
    torch.testing.assert_close(body.conv1(ours), theirs, atol=1e-5, rtol=1e-5)

    def w(name):
        return d2[f"roi_heads.{name}.weight"], d2[f"roi_heads.{name}.bias"]

    with torch.no_grad():
        # RPN: detectron2's StandardRPNHead by hand
        def r(name):
            return d2[f"proposal_generator.rpn_head.{name}.weight"], d2[
                f"proposal_generator.rpn_head.{name}.bias"
            ]

        x = torch.randn(1, 256, 6, 6)
        t = F.relu(F.conv2d(x, *r("conv"), padding=1))
        obj, deltas = det.rpn.head([x])
        torch.testing.assert_close(obj[0], F.conv2d(t, *r("objectness_logits")))
        torch.testing.assert_close(deltas[0], F.conv2d(t, *r("anchor_deltas")))
        # box head + predictor: detectron2 has background last and no background regression
        pooled = torch.randn(3, 256, 7, 7)
        h = F.relu(F.linear(F.relu(F.linear(pooled.flatten(1), *w("box_head.fc1"))), *w("box_head.fc2")))
        d2_probs = F.linear(h, *w("box_predictor.cls_score")).softmax(1)
        d2_deltas = F.linear(h, *w("box_predictor.bbox_pred")).view(3, 80, 4)
        logits, our_deltas = det.coco_predictor(det.box_head(pooled))
        torch.testing.assert_close(logits.softmax(1)[:, 0], d2_probs[:, 80])
        torch.testing.assert_close(logits.softmax(1)[:, 1:], d2_probs[:, :80])
        torch.testing.assert_close(our_deltas.view(3, 81, 4)[:, 1:], d2_deltas)
        assert torch.all(our_deltas.view(3, 81, 4)[:, 0] == 0)
        # mask head: 4 conv+ReLU, deconv+ReLU, 1×1 predictor with 80 channels in the same order
        x = torch.randn(2, 256, 14, 14)
        d2_masks = _d2_masks(d2, x)
        assert d2_masks.shape == (2, 80, 28, 28)
        torch.testing.assert_close(det.mask_predictor(det.mask_head(x)), d2_masks, atol=1e-5, rtol=1e-4)


def _d2_masks(d2: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """detectron2's MaskRCNNConvUpsampleHead by hand: 4 × (3 × 3 conv, ReLU), deconv, ReLU, 1 × 1 predictor."""

    def w(name):
        return d2[f"roi_heads.mask_head.{name}.weight"], d2[f"roi_heads.mask_head.{name}.bias"]

    for i in range(1, 5):
        x = F.relu(F.conv2d(x, *w(f"mask_fcn{i}"), padding=1))
    x = F.relu(F.conv_transpose2d(x, *w("deconv"), stride=2))
    return F.conv2d(x, *w("predictor"))


@pytest.mark.parametrize(
    ("std", "fmt"),
    [(DETECTRON2_X101_PIXEL_STD, "BGR"), ((1.0, 1.0, 1.0), "BGR"), ((57.0, 58.0, 59.0), "RGB")],
)
def test_detectron2_normalisation_is_folded_into_conv1(std, fmt):
    """conv1(our RGB [0, 1] input, ImageNet-normalised) = detectron2's conv1 on its own input, whatever
    detectron2's std (X-101's, MSRA's 1s) and channel order; a different mean is refused, not folded."""
    torch.manual_seed(0)
    w = torch.randn(8, 3, 7, 7)
    image = torch.rand(2, 3, 20, 18)
    mean = DETECTRON2_PIXEL_MEAN if fmt == "BGR" else DETECTRON2_PIXEL_MEAN[::-1]
    converted = detectron2_maskrcnn_to_joint(
        {"backbone.bottom_up.stem.conv1.weight": w}, pixel_mean=mean, pixel_std=std, input_format=fmt
    )["backbone.body.conv1.weight"]
    pixels = (image if fmt == "RGB" else image[:, [2, 1, 0]]) * 255
    theirs = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    ours = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    expect = F.conv2d(theirs, w, stride=2, padding=3)  # zero padding in both normalised spaces
    got = F.conv2d(ours, converted, stride=2, padding=3)
    torch.testing.assert_close(got, expect, atol=1e-5 * float(expect.abs().max()), rtol=1e-5)  # float32
    with pytest.raises(ValueError, match="set detector.net.image_mean"):
        detectron2_maskrcnn_to_joint({"backbone.bottom_up.stem.conv1.weight": w}, pixel_mean=(0.0, 0.0, 0.0))


def test_detectron2_checkpoint_uses_its_own_pixel_buffers():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 7, 7)
    state = {
        "backbone.bottom_up.stem.conv1.weight": w,
        "pixel_mean": torch.tensor(DETECTRON2_PIXEL_MEAN).view(3, 1, 1),
        "pixel_std": torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1),
        "proposal_generator.anchor_generator.cell_anchors.0": torch.zeros(3, 4),
    }
    out = detectron2_maskrcnn_to_joint(state)
    assert list(out) == ["backbone.body.conv1.weight"]
    # std 1 (0-255 pixels) → ours: × 255 · ImageNet std, channels reversed
    torch.testing.assert_close(out["backbone.body.conv1.weight"][:, 0], w[:, 2] * 255 * 0.229)
    torch.testing.assert_close(out["backbone.body.conv1.weight"][:, 2], w[:, 0] * 255 * 0.225)


def test_detectron2_converter_refuses_what_it_cannot_map(tmp_path):
    d2 = {
        "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(64, 64, 1, 1),
        "backbone.bottom_up.res2.0.conv2.weight": torch.zeros(64, 64, 3, 3),
    }
    # a plain ResNet: detectron2's MSRA models stride in the 1×1 conv, torchvision's Bottleneck cannot
    with pytest.raises(ValueError, match="STRIDE_IN_1X1"):
        detectron2_maskrcnn_to_joint(d2)
    assert "backbone.body.layer1.0.conv2.weight" in detectron2_maskrcnn_to_joint(d2, stride_in_1x1=False)
    # heads this architecture does not have (cascade stages, conv box heads) are named, not dropped
    with pytest.raises(KeyError, match=r"roi_heads.box_head.conv1.weight"):
        detectron2_maskrcnn_to_joint({"roi_heads.box_head.conv1.weight": torch.zeros(1)})
    # class-agnostic regression is repeated for every class (after the background block)
    agnostic = detectron2_maskrcnn_to_joint(
        {
            "roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 2),
            "roi_heads.box_predictor.bbox_pred.bias": torch.arange(4.0),
        }
    )["coco_predictor.bbox_pred.bias"]
    assert torch.equal(agnostic, torch.arange(4.0).repeat(81))
    # a weight missing from the file: the loader names it
    d2 = detectron2_x101_fpn_maskrcnn()
    del d2["roi_heads.mask_head.mask_fcn3.bias"]
    _pickle_detectron2(tmp_path / "partial.pkl", d2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = JointDetector(build_backbone("resnext101_32x8d_fpn", norm="frozen_bn"), 150, 80)
    from sgseg.models.detector.checkpoint import load_coco_maskrcnn

    with pytest.raises(KeyError, match=r"mask_head\.2\.0\.bias"):
        load_coco_maskrcnn(det, tmp_path / "partial.pkl")
    # … and a detector of another architecture is told so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = JointDetector(build_backbone("resnet50_fpn", norm="frozen_bn"), 150, 80)
    with pytest.raises(ValueError, match="does not fit the detector's architecture.*resnet50_fpn") as err:
        load_coco_maskrcnn(small, tmp_path / "partial.pkl")
    assert len(str(err.value).splitlines()) <= 6  # a few of torch's size-mismatch lines, not hundreds


def test_detectron2_reader_formats_and_pickle_safety(tmp_path):
    import pickle

    state = {"backbone.fpn_lateral2.bias": torch.arange(3.0), "roi_heads.box_head.fc1.bias": torch.ones(2)}
    _pickle_detectron2(tmp_path / "numpy.pkl", state)  # the model zoo's .pkl: numpy arrays
    _pickle_detectron2(tmp_path / "torch.pkl", state, as_numpy=False)  # some hold torch tensors
    torch.save(
        {"model": state, "iteration": 5}, tmp_path / "model_final.pth"
    )  # detectron2's own checkpointer
    for name in ("numpy.pkl", "torch.pkl", "model_final.pth"):
        got = read_detectron2_checkpoint(tmp_path / name)
        assert set(got) == set(state) and all(torch.equal(got[k], v) for k, v in state.items()), name

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"x": Exploit()}}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        read_detectron2_checkpoint(tmp_path / "evil.pkl")
    with open(tmp_path / "blobs.pkl", "wb") as f:
        pickle.dump({"blobs": {}}, f)
    with pytest.raises(ValueError, match="Caffe2 Detectron"):
        read_detectron2_checkpoint(tmp_path / "blobs.pkl")


def test_convert_cli_writes_what_detector_init_reads(tmp_path, capsys):
    torch.manual_seed(0)
    tv = MaskRCNN(
        resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), num_classes=91
    )
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    convert_cli([str(tmp_path / "tv.pth"), str(tmp_path / "tv_joint.pt")])
    assert "JointDetector names" in capsys.readouterr().out
    saved = torch.load(tmp_path / "tv_joint.pt", weights_only=True)
    assert saved["format"] == INIT_FORMAT and saved["kind"] == "torchvision"
    a = detector_from_coco_maskrcnn(tmp_path / "tv.pth", {"name": "resnet18_fpn"}, 150, 80)
    b = detector_from_coco_maskrcnn(tmp_path / "tv_joint.pt", {"name": "resnet18_fpn"}, 150, 80)
    sa, sb = a.state_dict(), b.state_dict()
    assert b.config == a.config
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("vg_predictor."))
    with pytest.raises(SystemExit, match="convert: .*not found"):
        convert_cli([str(tmp_path / "nope.pkl"), str(tmp_path / "out.pt")])
