"""COCO mask AP (sgseg.evaluation.coco_mask_ap) on the 8 real COCO val images of ../shared/data/coco_tiny8,
checked against pycocotools called directly, and the box-relative mask pasting."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from sgseg.evaluation import coco_mask_ap, paste_masks

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture(scope="module")
def gt_path(shared_data):
    return shared_data / "coco_tiny8" / "instances_tiny8.json"


@pytest.fixture(scope="module")
def coco(gt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(gt_path))


def _gt_detections(coco: COCO, perturb=None, with_crowd=False) -> list[dict]:
    """The GT masks of every image as full-image detections (score decreasing with annotation order)."""
    out = []
    for image_id in sorted(coco.getImgIds()):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if with_crowd or not a["iscrowd"]]
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        if perturb is not None:
            masks = np.stack([perturb(i, m) for i, m in enumerate(masks)])
        scores = np.linspace(1.0, 0.5, len(anns))
        out.append(
            {
                "image_id": image_id,
                "masks": masks,
                "scores": scores,
                "category_ids": [a["category_id"] for a in anns],
            }
        )
    return out


def _pycocotools_directly(coco: COCO, detections: list[dict]) -> list[float]:
    """The independent route: encode, loadRes, COCOeval('segm') by hand."""
    results = []
    for det in detections:
        masks = np.asarray(det["masks"], dtype=np.uint8)
        for m, c, s in zip(masks, det["category_ids"], det["scores"]):
            rle = mask_utils.encode(np.asfortranarray(m))
            results.append(
                {"image_id": det["image_id"], "category_id": int(c), "segmentation": rle, "score": float(s)}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


def test_gt_masks_score_one(gt_path, coco):
    data = json.loads(gt_path.read_text())
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and len(data["annotations"]) == 80
    # Without the crowd annotation: every non-crowd GT is found at IoU 1, no false positive -> 1.0 everywhere
    # (the 79 objects span all three area ranges, so none of APs/APm/APl is pycocotools' -1).
    out = coco_mask_ap(gt_path, _gt_detections(coco))
    assert out == dict.fromkeys(KEYS, 1.0)
    # With the crowd region as a detection too: crowd GTs are never required (no missed GT), and a detection
    # matched to a crowd region is ignored, neither TP nor FP -> still 1.0. Same through a loaded dict,
    # which is not modified (COCOeval rewrites GT polygons into RLE in place).
    before = copy.deepcopy(data)
    out = coco_mask_ap(data, _gt_detections(coco, with_crowd=True))
    assert out == dict.fromkeys(KEYS, 1.0) and data == before


def test_perturbed_masks_equal_pycocotools_called_directly(coco):
    def perturb(i, m):
        if i % 3 == 0:
            return ndimage.binary_erosion(m, iterations=2)  # thin objects vanish, big ones lose their rim
        if i % 3 == 1:
            return np.roll(m, shift=(3, -4), axis=(0, 1))
        return m

    detections = _gt_detections(coco, perturb)
    got = coco_mask_ap(coco, detections)
    want = _pycocotools_directly(coco, detections)
    assert [got[k] for k in KEYS] == want
    assert 0.0 < got["AP"] < 1.0 and got["AP50"] >= got["AP75"]
    # torch tensors and a {image_id: dict} mapping give the same
    as_torch = {d["image_id"]: {k: torch.as_tensor(np.asarray(v)) for k, v in d.items()} for d in detections}
    assert coco_mask_ap(coco, as_torch) == got


def test_box_relative_masks_are_pasted(coco):
    """GT masks resampled to 28 x 28 in their boxes and pasted back: close to, but not exactly, the GT."""
    from torchvision.ops import roi_align

    detections, pasted = [], []
    for image_id in sorted(coco.getImgIds()):
        img = coco.imgs[image_id]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        full = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])).float()
        boxes = torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32
        )
        rois = torch.cat([torch.arange(len(anns), dtype=torch.float32)[:, None], boxes], 1)
        probs = roi_align(full[:, None], rois, (28, 28), 1.0, sampling_ratio=2, aligned=True)[:, 0]
        cats = [a["category_id"] for a in anns]
        scores = np.linspace(1.0, 0.5, len(anns))
        detections.append(
            {
                "image_id": image_id,
                "mask_probs": probs,
                "boxes": boxes,
                "scores": scores,
                "category_ids": cats,
            }
        )
        masks = paste_masks(probs, boxes, img["height"], img["width"]).numpy()
        pasted.append({"image_id": image_id, "masks": masks, "scores": scores, "category_ids": cats})
    got = coco_mask_ap(coco, detections)
    assert [got[k] for k in KEYS] == _pycocotools_directly(coco, pasted)
    assert 0.5 < got["AP"] < 1.0


def test_paste_all_ones_fills_exactly_its_box():
    height, width = 40, 50
    boxes = torch.tensor([[10, 20, 38, 30], [5.3, 7.8, 40.6, 19.2], [-6, -3, 4, 2], [45, 35, 60, 47]])
    pasted = paste_masks(torch.ones(4, 28, 28), boxes, height, width)
    assert pasted.dtype == torch.bool and pasted.shape == (4, height, width)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    for box, got in zip(boxes.tolist(), pasted.numpy()):
        x1, y1, x2, y2 = box
        expected = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)  # centres inside the box (none on an edge)
        np.testing.assert_array_equal(got, expected)
    # the integer box [10, 38) x [20, 30): columns 10..37, rows 20..29 -> 28 * 10 pixels
    assert pasted[0].sum() == 280 and pasted[0, 20:30, 10:38].all()


def test_paste_puts_each_cell_in_place_and_thresholds_strictly():
    # box 28 x 28 pixels at (2, 3): one grid cell per pixel, sampled at its centre -> the grid itself
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0  # left half
    probs[0, 5, 20] = 0.5  # exactly the threshold: not foreground (> 0.5, as Mask R-CNN binarises)
    probs[0, 6, 21] = 0.51
    out = paste_masks(probs, torch.tensor([[2.0, 3.0, 30.0, 31.0]]), 40, 40)[0]
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[3:31, 2:16] = True
    expected[3 + 6, 2 + 21] = True
    assert torch.equal(out, expected)
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), 5, 6).shape == (0, 5, 6)


def test_no_detections_and_errors(coco, capsys):
    out = coco_mask_ap(
        coco, [{"image_id": 184324, "masks": np.zeros((0, 425, 640), bool), "scores": [], "category_ids": []}]
    )
    assert out == dict.fromkeys(KEYS, 0.0)
    assert capsys.readouterr().out == ""  # pycocotools' tables are silenced
    mask = np.zeros((1, 425, 640), bool)
    with pytest.raises(ValueError, match="image_id 1 is not in the COCO ground truth|image_id 1: image_id"):
        coco_mask_ap(coco, [{"image_id": 1, "masks": mask, "scores": [1.0], "category_ids": [1]}])
    with pytest.raises(ValueError, match="category id 12 is not a category"):
        coco_mask_ap(coco, [{"image_id": 184324, "masks": mask, "scores": [1.0], "category_ids": [12]}])
    with pytest.raises(ValueError, match=r"'masks' must be \[N, H, W\] = \[1, 425, 640\]"):
        coco_mask_ap(
            coco, [{"image_id": 184324, "masks": mask[:, :10], "scores": [1.0], "category_ids": [1]}]
        )
    with pytest.raises(ValueError, match="not found"):
        coco_mask_ap("/nonexistent/instances.json", [])
