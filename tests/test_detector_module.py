"""DetectorPretrainModule: schedule, joint / VG-only steps, validation metrics, fast_dev_run, hand-over files."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sgseg.lit.detector_module import DetectorPretrainModule, warmup_multistep
from sgseg.models.detector import JointDetector, build_backbone, load_detector
from sgseg.structures import Detections, ImageBatch, InstanceMasks, Targets

HEADS = dict(
    representation_size=64,
    mask_head_channels=(16,),
    mask_dim_reduced=16,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=32,
    rpn_batch_size_per_image=64,
)


def tiny_detector() -> JointDetector:
    torch.manual_seed(0)
    return JointDetector(build_backbone("tiny", channels=(8, 16, 32, 32), out_channels=32), 5, 3, **HEADS)


def batch(masks: bool, h: int = 96, w: int = 128, seed: int = 0) -> tuple[ImageBatch, Targets]:
    """Two images with rectangles; the second image of a COCO batch has no object at all."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(2, 3, h, w, generator=g) * 0.2
    boxes = torch.tensor([[8.0, 8.0, 40.0, 56.0], [60.0, 20.0, 120.0, 60.0], [16.0, 40.0, 80.0, 88.0]])
    labels = torch.tensor([1, 2, 3])
    index = torch.tensor([0, 0, 1])
    if masks:  # COCO: last image empty
        boxes, labels, index = boxes[:2], labels[:2], index[:2]
    m = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (b, (x1, y1, x2, y2)) in enumerate(zip(index.tolist(), boxes.int().tolist())):
        img[b, labels[i] - 1, y1:y2, x1:x2] = 0.9
        m[i, y1:y2, x1:x2] = 1
    sizes = torch.tensor([[h, w], [h - 16, w]])
    images = ImageBatch(img, sizes, sizes.clone(), torch.tensor([10 * seed, 10 * seed + 1]))
    return images, Targets(boxes, labels, index, torch.zeros((0, 3), dtype=torch.long), m if masks else None)


class _Batches(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _loader(items: list) -> DataLoader:
    return DataLoader(_Batches(items), batch_size=None, shuffle=False)


def test_warmup_multistep_values():
    f = lambda s: warmup_multistep(s, warmup_iters=10, warmup_factor=0.1, milestones=[20, 30], gamma=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == 1.0 and f(19) == 1.0
    assert f(20) == pytest.approx(0.1) and f(35) == pytest.approx(0.01)


def test_training_step_joint_and_vg_only_baseline():
    module = DetectorPretrainModule(tiny_detector())
    logged: dict[str, torch.Tensor] = {}
    module.log_dict = lambda d, **k: logged.update(d)  # no trainer attached here
    module.log = lambda name, value, **k: logged.update({name: value})
    joint = module.training_step({"vg": batch(False), "coco": batch(True)}, 0)
    parts = {k: v for k, v in logged.items() if k != "train/loss"}
    assert set(parts) == {
        f"train/{d}_{p}" for d in ("vg", "coco") for p in ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")
    } | {"train/coco_mask"}
    # L_obj = L_rcnn(VG) + L_rcnn(COCO) + L_seg(COCO), weights 1
    assert joint.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-5)
    assert logged["train/loss"].item() == pytest.approx(joint.item())
    joint.backward()
    logged.clear()
    vg_only = module.training_step({"vg": batch(False)}, 0)  # the paper's baseline: COCO stream off
    assert {k for k in logged if k != "train/loss"} == {
        f"train/vg_{p}" for p in ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")
    }
    assert vg_only.item() == pytest.approx(
        sum(v.item() for k, v in logged.items() if k != "train/loss"), rel=1e-5
    )
    with pytest.raises(ValueError, match="'vg'"):
        module.training_step({"coco": batch(True)}, 0)


def test_validation_metrics_on_perfect_predictions(monkeypatch):
    """Plumbing check: GT boxes as detections, box-filling mask logits → VG mAP, COCO box and mask AP = 1."""
    module = DetectorPretrainModule(tiny_detector()).eval()
    captured = {}

    def detect(features, images, boxes=None, image_index=None, head="vg"):
        t = captured[head]
        n = len(t.boxes)
        logits = torch.zeros(n, 6 if head == "vg" else 4)
        return Detections(
            t.boxes, t.image_index, logits, t.labels, torch.linspace(0.9, 0.5, n), torch.zeros(n, 8)
        )

    def mask_logits(features, images, boxes, image_index):
        return InstanceMasks(torch.full((len(boxes), 3, 28, 28), 10.0), boxes, image_index)

    monkeypatch.setattr(module.detector, "detect", detect)
    monkeypatch.setattr(module.detector, "mask_logits", mask_logits)
    module.on_validation_epoch_start()
    for name, b in [("vg", batch(False)), ("coco", batch(True))]:
        captured[name] = b[1]
        module.validation_step({name: b}, 0, 0 if name == "vg" else 1)
    metrics = module._metrics()
    assert metrics["vg_map50"] == pytest.approx(1.0)
    assert metrics["coco_box_ap"] == pytest.approx(1.0)
    assert metrics["coco_mask_ap"] == pytest.approx(1.0)
    # shift the VG detections off their objects → mAP 0
    shifted = batch(False)[1]
    captured["vg"] = Targets(shifted.boxes + 200, shifted.labels, shifted.image_index, shifted.relations)
    module.on_validation_epoch_start()
    module.validation_step({"vg": batch(False)}, 0, 0)
    assert module._metrics()["vg_map50"] == 0.0


@pytest.mark.parametrize("precision,with_coco", [("32-true", True), ("bf16-mixed", False)])
def test_fast_dev_run_and_hand_over(tmp_path, precision, with_coco):
    module = DetectorPretrainModule(tiny_detector(), lr=0.01, warmup_iters=2)
    train = [{"vg": batch(False), **({"coco": batch(True)} if with_coco else {})}]
    val = [_loader([{"vg": batch(False, seed=1)}])]
    if with_coco:
        val.append(_loader([{"coco": batch(True, seed=2)}]))
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        precision=precision,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = {k: v.clone() for k, v in module.detector.state_dict().items()}
    trainer.fit(module, _loader(train), val)
    m = trainer.callback_metrics
    expected = {"train/loss", "train/vg_rpn_cls", "train/vg_rcnn_box", "val/vg_map50"}
    if with_coco:
        expected |= {"train/coco_mask", "train/coco_rcnn_cls", "val/coco_box_ap", "val/coco_mask_ap"}
    else:
        assert not any(k.startswith("train/coco") or k.startswith("val/coco") for k in m)
    assert expected <= set(m), sorted(m)
    assert torch.isfinite(m["train/loss"])
    changed = [k for k, v in module.detector.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("vg_predictor") for k in changed)
    assert any(k.startswith("mask_predictor") for k in changed) == with_coco
    # stage 2 rebuilds the detector from the Lightning checkpoint or from the export
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    exported = module.export_detector(tmp_path / "detector.pt")
    images, targets = batch(False, seed=3)
    module.detector.eval()
    ref = module.detector.detect(module.detector.features(images), images, targets.boxes, targets.image_index)
    for path in (ckpt, exported):
        det = load_detector(path).eval()
        out = det.detect(det.features(images), images, targets.boxes, targets.image_index)
        torch.testing.assert_close(out.label_logits, ref.label_logits)
