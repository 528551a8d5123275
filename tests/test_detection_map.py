"""Detector metrics against hand-worked values: VOC all-point AP, VG box mAP@0.5, COCO box/mask AP, paste."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgseg.evaluation.detection import box_map, coco_ap, encode_masks, paste_masks, voc_ap
from sgseg.models.losses import project_masks_on_boxes


def _d(boxes, labels, scores=None, masks=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    if masks is not None:
        out["masks"] = masks
    return out


def test_voc_ap_all_point_envelope():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # precision rises after a dip: the envelope takes the max to the right (1.0 at recall 0.25)
    assert voc_ap(np.array([0.25, 0.5, 0.75]), np.array([0.5, 1.0, 0.75])) == pytest.approx(0.6875)
    assert voc_ap(np.array([]), np.array([])) == 0.0


def test_box_map_hand_worked():
    gts = [
        _d([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1]),
        _d([[0, 0, 10, 10], [5, 5, 25, 25], [40, 40, 50, 50]], [1, 2, 4]),
    ]
    preds = [
        # TP (0.9), duplicate of the same GT (IoU 0.81) = FP (0.8), background FP (0.6), a class without GT
        _d(
            [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [0, 0, 5, 5]],
            [1, 1, 1, 3],
            [0.9, 0.8, 0.6, 0.99],
        ),
        # TP class 1 (0.7); class 2 exact (AP 1); nothing for class 4 (AP 0)
        _d([[0, 0, 10, 10], [5, 5, 25, 25]], [1, 2], [0.7, 0.3]),
    ]
    out = box_map(preds, gts, 0.5)
    # class 1, 3 GT: ranked TP FP TP FP → recall 1/3 1/3 2/3 2/3, precision 1 .5 .667 .5 → 1/3·1 + 1/3·2/3 = 5/9
    assert out["ap"][1] == pytest.approx(5 / 9)
    assert out["ap"][2] == pytest.approx(1.0)
    assert out["ap"][4] == 0.0
    assert 3 not in out["ap"]  # classes absent from GT do not count
    assert out["map"] == pytest.approx((5 / 9 + 1 + 0) / 3)


def test_box_map_iou_threshold_is_inclusive_and_empty_cases():
    gts = [_d([[0, 0, 10, 10]], [7])]
    half = [_d([[0, 0, 10, 20]], [7], [0.5])]  # IoU exactly 100 / 200
    assert box_map(half, gts, 0.5)["map"] == 1.0
    assert box_map(half, gts, 0.51)["map"] == 0.0
    assert math.isnan(box_map([_d([], [], [])], [_d([], [])])["map"])
    with pytest.raises(ValueError, match="ground-truth"):
        box_map(half, [], 0.5)


def test_coco_box_ap_hand_worked():
    gts = [_d([[10, 10, 50, 50]], [3])]
    perfect = [_d([[10, 10, 50, 50]], [3], [0.9])]
    assert coco_ap(perfect, gts, "bbox", [(64, 64)])["ap"] == pytest.approx(1.0)
    # a confident miss ranked first, then the exact box: precision 1/2 at every recall → AP 0.5 at all IoUs
    ranked = [_d([[0, 0, 5, 5], [10, 10, 50, 50]], [3, 3], [0.9, 0.8])]
    res = coco_ap(ranked, gts, "bbox", [(64, 64)])
    assert res["ap"] == pytest.approx(0.5) and res["ap50"] == pytest.approx(0.5)
    assert math.isnan(coco_ap([_d([], [], [])], [_d([], [])], "bbox", [(8, 8)])["ap"])


def test_coco_mask_ap_hand_worked():
    gt_mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt_mask[0, 4:24, 4:24] = True  # 400 px
    pred_mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    pred_mask[0, 4:20, 4:20] = True  # 256 px inside: mask IoU 0.64, box IoU irrelevant for segm
    gts = [_d([[4, 4, 24, 24]], [1], masks=gt_mask)]
    preds = [_d([[4, 4, 24, 24]], [1], [0.9], masks=pred_mask)]
    res = coco_ap(preds, gts, "segm")
    # matched at IoU thresholds .50 .55 .60 of the ten (.65 > .64) → AP = 3/10, AP50 = 1
    assert res["ap"] == pytest.approx(0.3) and res["ap50"] == pytest.approx(1.0)
    # RLEs in, same answer
    rle_preds = [{**preds[0], "masks": encode_masks(pred_mask)}]
    rle_gts = [{**gts[0], "masks": encode_masks(gt_mask)}]
    assert coco_ap(rle_preds, rle_gts, "segm", [(32, 32)])["ap"] == pytest.approx(0.3)
    assert coco_ap([{**preds[0], "masks": gt_mask}], gts, "segm")["ap"] == pytest.approx(1.0)


def test_paste_masks_fills_the_box():
    probs = torch.ones(2, 28, 28)
    probs[1, :, 14:] = 0  # left half only
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [8.0, 8.0, 24.0, 16.0], [4.2, 2.4, 6.8, 4.6]])
    probs = torch.cat([probs, torch.ones(1, 28, 28)])
    out = paste_masks(probs, boxes, 20, 32)
    assert out.shape == (3, 20, 32) and out.dtype == torch.bool
    expect = torch.zeros(20, 32, dtype=torch.bool)
    expect[3:12, 2:10] = True
    assert torch.equal(out[0], expect)
    expect = torch.zeros(20, 32, dtype=torch.bool)
    expect[8:16, 8:16] = True
    assert torch.equal(out[1], expect)
    # a fractional box: only pixels whose centre (k + 0.5) lies inside [4.2, 6.8] × [2.4, 4.6]
    assert out[2].nonzero().tolist() == [
        [2, 4],
        [2, 5],
        [2, 6],
        [3, 4],
        [3, 5],
        [3, 6],
        [4, 4],
        [4, 5],
        [4, 6],
    ]
    # inverse of the projection used for mask targets: project a GT mask, paste it back
    gt = torch.zeros(1, 40, 40)
    gt[0, 6:30, 10:22] = 1
    gt[0, 12:20, 14:18] = 0  # a hole
    box = torch.tensor([[10.0, 6.0, 22.0, 30.0]])
    back = paste_masks(project_masks_on_boxes(gt, box, torch.tensor([0]), 28), box, 40, 40)
    assert torch.equal(back[0], gt[0].bool())
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), 5, 6).shape == (0, 5, 6)
