"""Grounding's mask sources (model.mask_source): the oracle's true masks, the shuffled-transfer lower bound,
the synthetic benchmark's true-mask files read by the VG dataset, and per-class transferred-mask AP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sgseg.data.errors import DatasetError
from sgseg.data.visual_genome import VisualGenome
from sgseg.evaluation import coco_mask_ap
from sgseg.lit.build import (
    ConfigError,
    build_datamodule,
    build_detector,
    build_stage2,
    stage_two_inputs,
)
from sgseg.models.detector.checkpoint import export_detector
from sgseg.models.masks import blur_masks, derangement, shuffled_sources, true_mask_probs

from . import test_scene_graph_module as _sgm
from .conftest import REPO
from .test_scene_graph_module import _cfg

data_dir = _sgm.data_dir  # the tiny benchmark fixture (module scope: generated once for this module too)


def _build(data_dir, *extra, with_true_masks=False):
    cfg = _cfg(data_dir, *extra)
    dm = build_datamodule(cfg, with_true_masks=with_true_masks)
    dm.prepare_data()
    dm.setup("fit")
    vg = dm.dataset("vg", "train")
    detector = build_detector(cfg, len(vg.object_classes), len(dm.dataset("coco", "train").class_names))
    inputs = stage_two_inputs(cfg, dm)
    return cfg, dm, build_stage2(cfg, detector, inputs), inputs


# ------------------------------------------------------------------------------------------------ oracle
def test_true_mask_probs_hand_built() -> None:
    """An 8x8 image; object 0 fills columns 2-3 of rows 2-5, its box is [2, 2, 6, 6]: on a 4x4 grid the left
    half is 1 and the right half 0 (every class channel). Object 1, box [0, 0, 8, 8] of an all-ones mask: 1."""
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, 2:6, 2:4] = 1
    masks[1] = 1
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0]])
    out = true_mask_probs(masks, boxes, num_classes=3, size=4)
    assert out.shape == (2, 3, 4, 4)
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4)
    for c in range(3):
        torch.testing.assert_close(out[0, c], expected, rtol=0, atol=0)
        torch.testing.assert_close(out[1, c], torch.ones(4, 4), rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 true masks for 1 boxes"):
        true_mask_probs(masks, boxes[:1], 3, 4)


def test_vg_dataset_reads_the_true_masks_of_every_split(data_dir) -> None:
    root = data_dir / "synthetic" / "vg"
    for split, file in (
        ("train", "vg_train_masks.json"),
        ("val", "vg_train_masks.json"),
        ("test", "vg_test_masks.json"),
    ):
        vg = VisualGenome(
            root, split=split, num_val=4, check_label_space=False, true_masks="vg_{split}_masks.json"
        )
        assert vg.true_masks_path == root / file
        gt = json.loads((root / file).read_text())
        by_box = {a["vg_box_index"]: a for a in gt["annotations"]}
        for i in (0, len(vg) - 1):
            item = vg[i]
            masks = item["masks"]
            n, h, w = masks.shape
            assert (n, h, w) == (
                item["labels"].shape[0],
                item["height"],
                item["width"],
            ) and masks.dtype == torch.uint8
            b0 = int(vg._first_box[i])
            for k in range(
                n
            ):  # independent route: the json's RLE decoded here, and its category is the label
                ann = by_box[b0 + k]
                assert ann["image_id"] == item["image_id"] and ann["category_id"] == int(item["labels"][k])
                rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
                assert np.array_equal(masks[k].numpy(), mask_utils.decode(rle))
                ys, xs = np.nonzero(masks[k].numpy())
                if len(
                    xs
                ):  # the visible mask lies inside its GT box (box pixels rounded by the h5's 1024 frame)
                    x1, y1, x2, y2 = item["boxes"][k].tolist()
                    assert (
                        xs.min() >= x1 - 2
                        and xs.max() <= x2 + 2
                        and ys.min() >= y1 - 2
                        and ys.max() <= y2 + 2
                    )
    # without the option, no masks (the transfer path is untouched)
    assert "masks" not in VisualGenome(root, split="train", num_val=4, check_label_space=False)[0]


def test_amodal_masks_contain_the_visible_ones_and_span_the_boxes(data_dir) -> None:
    """``vg_{split}_amodal_masks.json``: per object, the amodal mask holds its visible mask, the GT box is the
    amodal mask's bounding box (the generator's definition), and occlusion makes some of them differ."""
    root = data_dir / "synthetic" / "vg"
    occluded = 0
    for split in ("train", "test"):
        visible = VisualGenome(root, split=split, num_val=0, check_label_space=False,
                               true_masks="vg_{split}_masks.json")  # fmt: skip
        amodal = VisualGenome(root, split=split, num_val=0, check_label_space=False,
                              true_masks="vg_{split}_amodal_masks.json")  # fmt: skip
        assert amodal.true_masks_path == root / f"vg_{split}_amodal_masks.json"
        for i in range(len(amodal)):
            a, v = amodal[i], visible[i]
            full, seen = a["masks"].bool(), v["masks"].bool()
            assert full.shape == seen.shape and not (seen & ~full).any()  # visible ⊆ amodal
            occluded += int((full & ~seen).flatten(1).any(1).sum())
            for k in range(full.shape[0]):
                ys, xs = np.nonzero(full[k].numpy())
                # pixel extent of the amodal mask vs the GT box (float xyxy; the h5 stores it in a 1024 frame)
                extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
                assert np.abs(extent - a["boxes"][k].numpy()).max() <= 2.0, (split, i, k)
    assert occluded > 0


def test_missing_true_masks_name_the_file_and_the_fix(data_dir, tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"vg_nope_masks\.json not found.*regenerate the benchmark"):
        VisualGenome(data_dir / "synthetic" / "vg", split="test", check_label_space=False, num_val=0,
                     true_masks="vg_nope_masks.json")  # fmt: skip
    cfg = _cfg(data_dir, "data.true_masks=null")
    with pytest.raises(ConfigError, match="data.true_masks is not set"):
        build_datamodule(cfg, with_true_masks=True)


def _spy_node_masks(model) -> list:
    """The masks node grounding is called with, one entry per call (its forward wrapped in place)."""
    seen = []
    node_forward = model.node_grounding.forward
    model.node_grounding.forward = lambda roi, masks, box: (
        seen.append(masks),
        node_forward(roi, masks, box),
    )[1]
    return seen


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_oracle_model_grounds_on_the_true_masks(data_dir, mode) -> None:
    cfg, dm, model, inputs = _build(
        data_dir, "model.mask_source=oracle", f"task={mode}", with_true_masks=True
    )
    assert model.mask_source == "oracle"
    seen = _spy_node_masks(model)
    images, targets = next(iter(dm.train_dataloader()))["vg"]
    assert targets.masks is not None and targets.masks.shape[0] == targets.boxes.shape[0]
    model.train()
    out = model(images, targets, mode)
    size = model.detector.mask_logits(
        model.detector.features(images), images, targets.boxes, targets.image_index
    ).logits.shape[-1]
    expected = true_mask_probs(targets.masks, targets.boxes, len(inputs.object_classes), size)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(
        out.vg_mask_probs, expected, rtol=0, atol=0
    )  # no refinement pass replaces them
    assert out.predictions.rel_logits.isfinite().all()
    # eval on the test split's true masks
    model.eval()
    images, targets = next(iter(dm.test_dataloader()[0]))["vg"]
    with torch.no_grad():
        out = model(images, targets, mode)
    torch.testing.assert_close(
        out.vg_mask_probs, true_mask_probs(targets.masks, targets.boxes, len(inputs.object_classes), size)
    )
    with pytest.raises(ValueError, match="needs the GT boxes"):
        model(images, targets, "sgdet")


def test_blur_masks_is_the_normalised_gaussian_by_hand() -> None:
    """A single 1 in the middle of a 28 x 28 grid blurred by sigma = 1: the 7 x 7 separable kernel
    g(i) g(j), g(k) = exp(-k^2 / 2) / sum_{|k| <= 3} exp(-k^2 / 2), around it and 0 elsewhere; the mass of an
    interior mask is kept; sigma = 0 returns the masks themselves; every channel is blurred alike."""
    masks = torch.zeros(2, 3, 28, 28)
    masks[:, :, 14, 14] = 1
    out = blur_masks(masks, 1.0)
    k = torch.arange(-3, 4, dtype=torch.float32)
    g = torch.exp(-(k**2) / 2)
    g = g / g.sum()
    expected = torch.zeros(28, 28)
    expected[11:18, 11:18] = g[:, None] * g[None, :]
    for n in range(2):
        for c in range(3):
            torch.testing.assert_close(out[n, c], expected, rtol=0, atol=1e-6)
    square = torch.zeros(1, 1, 28, 28)
    square[..., 8:20, 8:20] = 1
    blurred = blur_masks(square, 2.0)
    assert blurred.sum().item() == pytest.approx(144.0, abs=1e-3)
    assert 0 < blurred[0, 0, 8, 8] < 0.5 < blurred[0, 0, 14, 14] < 1  # soft edges, a near-1 inside
    assert blur_masks(square, 0.0) is square


def test_oracle_blur_grounds_on_the_blurred_true_masks(data_dir) -> None:
    """model.oracle_blur=2: the true masks of the oracle, blurred by sigma = 2 cells, are what grounding sees;
    the option refuses a mask source other than the oracle and a negative sigma."""
    cfg, dm, model, inputs = _build(
        data_dir, "model.mask_source=oracle", "model.oracle_blur=2", "task=predcls", with_true_masks=True
    )
    assert model.oracle_blur == 2.0
    seen = _spy_node_masks(model)
    model.eval()
    images, targets = next(iter(dm.test_dataloader()[0]))["vg"]
    with torch.no_grad():
        out = model(images, targets, "predcls")
    size = out.vg_mask_probs.shape[-1]
    sharp = true_mask_probs(targets.masks, targets.boxes, len(inputs.object_classes), size)
    torch.testing.assert_close(seen[0], blur_masks(sharp, 2.0), rtol=0, atol=0)
    assert not torch.equal(seen[0], sharp)
    with pytest.raises(ConfigError, match="oracle_blur"):
        _build(data_dir, "model.mask_source=transfer", "model.oracle_blur=2")
    with pytest.raises(ConfigError, match="oracle_blur"):
        _build(data_dir, "model.mask_source=oracle", "model.oracle_blur=-1", with_true_masks=True)


def test_oracle_refuses_sgdet_at_build(data_dir) -> None:
    with pytest.raises(ConfigError, match="SGDet is not supported"):
        _build(data_dir, "model.mask_source=oracle", "task=sgdet", with_true_masks=True)


# ------------------------------------------------------------------------------------------------ shuffled
def test_shuffled_similarity_is_a_derangement_fixed_per_seed() -> None:
    sim = torch.rand(7, 5, generator=torch.Generator().manual_seed(0))
    perms = set()
    for seed in range(10):
        p = derangement(5, seed)
        assert sorted(p.tolist()) == list(range(5)) and (p != torch.arange(5)).all()
        shuffled = shuffled_sources(sim, seed)
        assert torch.equal(shuffled, shuffled_sources(sim, seed))  # deterministic per seed
        assert torch.equal(shuffled, sim[:, p])
        for s in range(5):  # no source column stays in place
            assert not torch.equal(shuffled[:, s], sim[:, s])
        perms.add(tuple(p.tolist()))
    assert len(perms) > 1  # the seed matters
    with pytest.raises(ValueError, match="S >= 2"):
        shuffled_sources(sim[:, :1], 0)


def test_mask_source_in_the_built_model(data_dir) -> None:
    _, _, model, inputs = _build(data_dir)  # default: transfer, S as built (stage-2 numbers unchanged)
    assert model.mask_source == "transfer" and torch.equal(
        model.transfer.similarity, inputs.similarity.float()
    )
    _, _, model, inputs = _build(data_dir, "model.mask_source=shuffled", "seed=3")
    assert model.mask_source == "transfer"
    assert torch.equal(model.transfer.similarity, shuffled_sources(inputs.similarity, 3).float())
    with pytest.raises(ConfigError, match="choose transfer | oracle | shuffled"):
        _build(data_dir, "model.mask_source=nope")


def test_empty_masks_ground_on_zeros(data_dir) -> None:
    """mask_source=empty: node grounding and the output see all-zero masks of the transferred masks' shape."""
    _, dm, model, inputs = _build(data_dir, "model.mask_source=empty", "task=predcls")
    assert model.mask_source == "empty"
    seen = _spy_node_masks(model)
    images, targets = next(iter(dm.train_dataloader()))["vg"]
    model.train()
    out = model(images, targets, "predcls")
    assert seen[0].shape == (targets.boxes.shape[0], len(inputs.object_classes), *seen[0].shape[-2:])
    assert seen[0].shape[-1] > 1 and not seen[0].any() and not out.vg_mask_probs.any()
    out.predictions.rel_logits.sum().backward()  # trains like any grounded model
    assert out.predictions.rel_logits.isfinite().all()


# ------------------------------------------------------------------------------------------------ mask AP per class
def test_coco_mask_ap_per_category_by_hand() -> None:
    """Two images, categories 1 and 2: category 1 found exactly (AP 1), category 2 missed (AP 0); overall 0.5."""
    square = np.zeros((20, 20), dtype=np.uint8)
    square[4:12, 4:12] = 1
    anns, images = [], []
    for i, cat in enumerate((1, 2, 1), start=1):
        rle = mask_utils.encode(np.asfortranarray(square))
        rle["counts"] = rle["counts"].decode()
        images.append({"id": i, "width": 20, "height": 20})
        anns.append({"id": i, "image_id": i, "category_id": cat, "segmentation": rle, "area": 64.0,
                     "bbox": [4.0, 4.0, 8.0, 8.0], "iscrowd": 0})  # fmt: skip
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    dets = [
        {"image_id": i, "masks": square[None].astype(bool), "scores": [1.0], "category_ids": [1]}
        for i in (1, 3)
    ]
    res = coco_mask_ap(gt, dets, per_category=True)
    assert res["per_category"] == {
        1: {"AP": 1.0, "AP50": 1.0, "AP75": 1.0},
        2: {"AP": 0.0, "AP50": 0.0, "AP75": 0.0},
    }
    assert res["AP"] == pytest.approx(0.5)
    assert "per_category" not in coco_mask_ap(gt, dets)


@pytest.mark.slow
def test_eval_transfer_prints_a_per_class_table(data_dir, tmp_path) -> None:
    cfg = _cfg(data_dir)
    detector = build_detector(cfg, 19, 5)
    det_path = export_detector(detector, tmp_path / "detector.pt")
    out = subprocess.run(
        [sys.executable, "scripts/eval_transfer.py", str(det_path), "--data", str(data_dir / "synthetic"),
         "--seeds", "2", "--size", "128", "--max-size", "160"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| class | novel | top source")
    rows = lines[2:]
    names = json.loads((data_dir / "synthetic" / "vg" / "VG-SGG-dicts-with-attri.json").read_text())[
        "label_to_idx"
    ]
    assert [r.split(" | ")[0][2:] for r in rows] == sorted(names, key=names.get)
    assert sum(" | yes | " in r for r in rows) == 14  # the 14 novel classes


@pytest.mark.slow
def test_eval_transfer_softness_table(data_dir, tmp_path) -> None:
    """--softness: the transferred masks' softness, then the true masks' at σ = 0, 1, 2, 3 with their mean
    distance to the transferred ones; a binary mask has softness 0, blurring makes the true masks softer."""
    detector = build_detector(_cfg(data_dir), 19, 5)
    det_path = export_detector(detector, tmp_path / "detector.pt")
    out = subprocess.run(
        [sys.executable, "scripts/eval_transfer.py", str(det_path), "--data", str(data_dir / "synthetic"),
         "--size", "128", "--max-size", "160", "--softness", "--truth", "amodal"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln.strip("| ").split(" | ") for ln in out.stdout.splitlines() if ln.startswith("| ")][2:]
    assert [r[0] for r in rows] == ["transferred (own class)", "true (sharp)", "true, blurred σ=1",
                                    "true, blurred σ=2", "true, blurred σ=3"]  # fmt: skip
    soft = [float(r[1]) for r in rows]
    dist = [float(r[2]) for r in rows]
    assert all(0.0 <= x <= 1.0 for x in soft + dist) and dist[0] == 0.0
    assert soft[1] < 0.2  # near-binary: only the bilinear edge of each projected mask is soft
    assert soft[1] < soft[2] < soft[3] < soft[4]
