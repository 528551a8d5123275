"""The MMDetection stage-1 backend (issue 14): same interface and structures as JointDetector, mmdet's own
forward as the independent reference, mmdet-named checkpoints, Lightning stage 1 and stage 2 on top.

Marked ``mmdet``; skipped where the optional stack is not installed (``make install-mmdet``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("mmdet", reason="MMDetection stack not installed (make install-mmdet)")
pytest.importorskip("mmcv.ops", reason="mmcv without compiled ops (make install-mmdet)")

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402

from sgseg.models.detector import mmdet_backend as mb  # noqa: E402
from sgseg.models.detector.checkpoint import export_detector, load_detector  # noqa: E402
from sgseg.structures import ImageBatch, Targets  # noqa: E402

from .conftest import REPO  # noqa: E402
from .test_scene_graph_module import TINY_OVERRIDES  # noqa: E402

pytestmark = pytest.mark.mmdet

NUM_VG, NUM_COCO = 6, 80


def _model_cfg(**test_rcnn) -> dict:
    cfg = mb.load_model_config("tiny_mask_rcnn.py")
    cfg["test_cfg"]["rcnn"].update(test_rcnn)
    return cfg


def _reference(cfg: dict, seed: int = 0):
    """mmdet's own MaskRCNN from the same config, with random (non-default) weights: its state dict carries
    mmdet's key names, its forward is the reference route."""
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
        # box deltas of a trained model's size (mmdet also clamps dw/dh from below, torchvision only above)
        model.roi_head.bbox_head.fc_reg.weight.mul_(0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return model.eval()


def _images(seed: int = 1) -> ImageBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 96, 128, generator=g)
    sizes = torch.tensor([[96, 128], [80, 100]])
    x[1, :, 80:] = 0
    x[1, :, :, 100:] = 0
    return ImageBatch(x, sizes, sizes.clone(), torch.tensor([0, 1]))


def _targets(with_masks: bool, labels: list[int]) -> Targets:
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 20.0, 120.0, 90.0], [5.0, 5.0, 50.0, 40.0]])
    index = torch.tensor([0, 0, 1])
    masks = None
    if with_masks:
        masks = torch.zeros(3, 96, 128, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[i, y1 + 4 : y2 - 4, x1 + 4 : x2 - 4] = 1
    return Targets(boxes, torch.tensor(labels), index, torch.zeros(0, 3, dtype=torch.long), masks)


@pytest.fixture(scope="module")
def loaded():
    """(detector with an mmdet-named state dict loaded, the mmdet reference model)."""
    cfg = _model_cfg(score_thr=0.005)
    ref = _reference(cfg)
    det = mb.MMDetJointDetector(cfg, NUM_VG, NUM_COCO)
    mb.load_mmdet_maskrcnn(det, ref.state_dict())
    return det.eval(), ref


def _ref_input(images: ImageBatch) -> torch.Tensor:
    """What mmdet's DetDataPreprocessor makes of the same picture: BGR 0-255 → RGB → normalised, padding 0."""
    rgb = images.tensors * 255.0  # bgr_to_rgb=True undoes the BGR load
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    for i, (h, w) in enumerate(images.image_sizes.tolist()):
        x[i, :, h:] = 0
        x[i, :, :, w:] = 0
    return x


def test_checkpoint_keys_map_onto_every_weight_but_the_vg_pair(loaded):
    det, ref = loaded
    mapped = mb.mmdet_maskrcnn_to_joint(ref.state_dict())
    own = det.state_dict()
    assert set(own) - set(mapped) == {
        "vg_predictor.fc_cls.weight", "vg_predictor.fc_cls.bias", "vg_predictor.fc_reg.weight", "vg_predictor.fc_reg.bias",
    }  # fmt: skip
    for key, value in mapped.items():
        assert torch.equal(own[key], value), key
    # mmdet's key names in, e.g. the COCO classifier and the first mask conv
    assert "roi_head.bbox_head.fc_cls.weight" in ref.state_dict()
    assert "roi_head.mask_head.convs.0.conv.weight" in ref.state_dict()


def test_features_proposals_boxes_and_masks_equal_mmdets_own_forward(loaded):
    det, ref = loaded
    images = _images()
    with torch.no_grad():
        feats = det.features(images)
        ref_feats = ref.extract_feat(_ref_input(images))
        assert list(feats) == ["p2", "p3", "p4", "p5", "p6"]
        for a, b in zip(feats.values(), ref_feats):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        # every later stage is checked on the very same feature tensors: features equal only to ~1e-5 give
        # near-tied RPN scores of a random model a different top-k order on another CPU (a CI on an AMD EPYC
        # reordered 40 % of the proposals when mmdet ran on its own features)
        shared_feats = tuple(feats.values())

        # RPN: the same proposals as mmdet's rpn_head.predict on the same features
        boxes, index, losses = det.propose(feats, images)
        assert losses == {}
        metas = det._img_metas(images)
        samples = [type("S", (), {"metainfo": m})() for m in metas]
        ref_props = ref.rpn_head.predict(shared_feats, samples, rescale=False)
        torch.testing.assert_close(boxes, torch.cat([r.bboxes for r in ref_props]))
        assert torch.equal(
            index, torch.repeat_interleave(torch.arange(2), torch.tensor([len(r) for r in ref_props]))
        )
        sizes = images.image_sizes[index]
        assert (boxes[:, 2] <= sizes[:, 1]).all() and (boxes[:, 3] <= sizes[:, 0]).all()

        # given boxes: COCO logits are mmdet's with background moved first; class c is mmdet's c - 1
        gt = _targets(False, [1, 2, 3])
        rois = torch.cat([gt.image_index[:, None].float(), gt.boxes], 1)
        ref_out = ref.roi_head._bbox_forward(shared_feats, rois)
        dets = det.detect(feats, images, gt.boxes, gt.image_index, head="coco")
        torch.testing.assert_close(dets.label_logits[:, 0], ref_out["cls_score"][:, -1])
        torch.testing.assert_close(dets.label_logits[:, 1:], ref_out["cls_score"][:, :-1])
        ref_prob = ref_out["cls_score"].softmax(-1)
        torch.testing.assert_close(dets.scores, ref_prob[:, :-1].max(1).values)
        assert torch.equal(dets.labels, ref_prob[:, :-1].argmax(1) + 1)
        # the paper's z_j: the shared head's output (mmdet computes it inside bbox_head.forward)
        ref_z = torch.relu(ref.roi_head.bbox_head.shared_fcs[1](torch.relu(ref.roi_head.bbox_head.shared_fcs[0](ref_out["bbox_feats"].flatten(1)))))  # fmt: skip
        torch.testing.assert_close(dets.box_features, ref_z)
        vg = det.detect(feats, images, gt.boxes, gt.image_index)
        assert vg.label_logits.shape == (3, NUM_VG + 1)
        torch.testing.assert_close(vg.box_features, dets.box_features)

        masks = det.mask_logits(feats, images, gt.boxes, gt.image_index)
        ref_masks = ref.roi_head._mask_forward(shared_feats, rois)["mask_preds"]
        assert masks.logits.shape == (3, NUM_COCO, 28, 28)
        torch.testing.assert_close(masks.logits, ref_masks)
        roi = det.roi_features(feats, images, gt.boxes, gt.image_index, 5)
        assert roi.shape == (3, 64, 5, 5)
        torch.testing.assert_close(
            det.roi_features(feats, images, gt.boxes, gt.image_index, 7), ref_out["bbox_feats"]
        )


def test_sgdet_matches_mmdets_bbox_postprocessing(loaded):
    """Full detection: the same boxes/labels/scores as mmdet's roi_head.predict_bbox (class-wise NMS, same
    thresholds) on the same proposals."""
    det, ref = loaded
    images = _images(5)
    with torch.no_grad():
        feats = det.features(images)
        dets = det.detect(feats, images, head="coco")
        # the same features (their equality to mmdet's own is the test above)
        shared_feats = tuple(feats.values())
        metas = det._img_metas(images)
        samples = [type("S", (), {"metainfo": m})() for m in metas]
        props = ref.rpn_head.predict(shared_feats, samples, rescale=False)
        ref_dets = ref.roi_head.predict_bbox(shared_feats, metas, props, ref.test_cfg.rcnn, rescale=False)
    for i, r in enumerate(ref_dets):
        mine = dets.image_index == i
        assert int(mine.sum()) == len(r.bboxes) > 0
        # the same score values; random weights give near-tied scores (e.g. thin boxes on the image border)
        # whose NMS survivors can differ, so boxes are compared as sets of (label, box) and must agree on
        # all but a few near-tied rows
        torch.testing.assert_close(
            dets.scores[mine].sort().values, r.scores.sort().values, rtol=1e-3, atol=1e-4
        )
        a = _by_label_and_box(dets.labels[mine], dets.boxes[mine])
        b = _by_label_and_box(r.labels + 1, r.bboxes)
        assert torch.equal(dets.labels[mine][a], r.labels[b] + 1)
        same = ((dets.boxes[mine][a] - r.bboxes[b]).abs().amax(1) < 1e-3).float().mean()
        assert same >= 0.9, float(same)
        # and each image's rows come score-descending
        assert (dets.scores[mine][1:] <= dets.scores[mine][:-1]).all()


def _by_label_and_box(labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    keys = [boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], labels.float()]
    order = torch.arange(len(labels))
    for k in keys:  # least significant first, stable
        order = order[torch.sort(k[order], stable=True).indices]
    return order


def test_training_losses_train_every_part_and_overfit_one_batch():
    torch.manual_seed(0)
    det = mb.MMDetJointDetector(_model_cfg(), NUM_VG, NUM_COCO).train()
    images = _images()
    vg, coco = _targets(False, [1, 4, 6]), _targets(True, [3, 17, 80])
    losses = det.training_losses(images, vg, "vg")
    assert set(losses) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"}
    sum(losses.values()).backward()
    assert det.vg_predictor.fc_cls.weight.grad.abs().sum() > 0
    assert det.bbox_head.fc_cls.weight.grad is None  # the COCO pair is not in a VG loss
    det.zero_grad(set_to_none=True)
    losses = det.training_losses(images, coco, "coco")
    assert set(losses) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.body.conv1.weight", "backbone.neck.fpn_convs.0.conv.weight", "rpn_head.rpn_cls.weight",
                 "bbox_head.shared_fcs.0.weight", "bbox_head.fc_cls.weight", "mask_head.conv_logits.weight"):  # fmt: skip
        assert dict(det.named_parameters())[name].grad.abs().sum() > 0, name
    assert det.vg_predictor.fc_cls.weight.grad is None
    with pytest.raises(ValueError, match="masks"):
        det.training_losses(images, vg, "coco")

    opt = torch.optim.SGD(det.parameters(), lr=0.01, momentum=0.9)
    first = None
    for _ in range(25):
        opt.zero_grad()
        total = sum(det.training_losses(images, vg, "vg").values()) + sum(
            det.training_losses(images, coco, "coco").values()
        )
        first = float(total) if first is None else first
        total.backward()
        opt.step()
    assert float(total) < 0.6 * first


def test_export_and_load_rebuild_the_same_detector(tmp_path, loaded):
    det, _ = loaded
    path = export_detector(det, tmp_path / "det.pt")
    again = load_detector(path).eval()
    assert type(again) is mb.MMDetJointDetector
    images = _images()
    gt = _targets(False, [1, 2, 3])
    with torch.no_grad():
        a = det.detect(det.features(images), images, gt.boxes, gt.image_index)
        b = again.detect(again.features(images), images, gt.boxes, gt.image_index)
    assert torch.equal(a.label_logits, b.label_logits)


def test_bad_checkpoints_name_the_key(loaded):
    det, ref = loaded
    state = dict(ref.state_dict())
    with pytest.raises(KeyError, match="not part of a Mask R-CNN"):
        mb.load_mmdet_maskrcnn(det, {**state, "head.x": torch.zeros(1)})
    wrong = {**state, "roi_head.bbox_head.fc_cls.weight": torch.zeros(11, 256)}
    with pytest.raises(ValueError, match="fc_cls.weight"):
        mb.load_mmdet_maskrcnn(det, wrong)
    del state["rpn_head.rpn_cls.weight"]
    with pytest.raises(KeyError, match="lacks 1"):
        mb.load_mmdet_maskrcnn(det, state)
    with pytest.raises(FileNotFoundError, match="model_config"):
        mb.load_model_config("no_such_config.py")


def test_packaged_mmdet_config_resolves_and_builds_r50():
    cfg = mb.load_model_config("mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    assert cfg["backbone"]["depth"] == 50
    det = mb.MMDetJointDetector(cfg, 150, 80)
    assert det.config["representation_size"] == 1024
    assert det.bbox_head.fc_cls.out_features == 81 and det.vg_predictor.fc_cls.out_features == 151


@pytest.mark.slow
def test_stage1_through_lightning_then_stage2_on_it(tmp_path):
    """`detector=mmdet_tiny`: stage 1 through sgseg.train (Lightning + Hydra), then stage 2 unchanged on it."""
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("detector.backbone", "detector.net"))]
    cmd = [
        sys.executable, "-m", "sgseg.train", f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}",
        "logger.wandb=null", "num_threads=1", *overrides, "detector=mmdet_tiny", "stage=pipeline",
        "model.trainer.max_epochs=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    det_path = next((tmp_path / "logs").rglob("detector/detector.pt"))
    det = load_detector(det_path)
    assert type(det) is mb.MMDetJointDetector
    metrics = json.loads(next((tmp_path / "logs").rglob("detector_metrics.json")).read_text())
    assert any("map" in k.lower() or "ap" in k.lower() for k in metrics)
    assert list((tmp_path / "logs").rglob("metrics.json")), "stage 2 wrote no metrics"
