"""sgseg.ops.boxes on hand-worked values (and torchvision as an independent route where it applies)."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as tv_box_iou

from sgseg.ops.boxes import (
    box_iou,
    box_iou_plus1,
    boxes_to_original,
    local_index,
    paired_box_iou,
    rescale_boxes,
    to_numpy,
    union_boxes,
)
from sgseg.structures import ImageBatch


def test_box_iou_hand_worked() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    # [0,0,10,10] vs [5,0,15,10]: inter 5*10 = 50, union 100 + 100 - 50 = 150 → 1/3;
    # [5,5,15,15] vs [0,0,10,10]: inter 25, union 175 → 1/7; vs [5,0,15,10]: inter 50, union 150 → 1/3.
    # The zero-width box [3,3,3,8] has area 0: IoU 0 with everything.
    expected = torch.tensor([[1.0, 1 / 3, 0.0, 0.0], [1 / 7, 1 / 3, 0.0, 0.0]])
    torch.testing.assert_close(box_iou(a, b), expected)
    # torchvision agrees on non-degenerate boxes
    torch.testing.assert_close(box_iou(a, b[:3]), tv_box_iou(a, b[:3]))


def test_box_iou_empty_union_is_zero_and_batched() -> None:
    point = torch.zeros(1, 4)
    assert box_iou(point, point).item() == 0.0  # torchvision: 0/0 = nan
    assert torch.isnan(tv_box_iou(point, point)).all()
    # inverted (degenerate) boxes count as empty, not as negative areas
    inverted = torch.tensor([[10.0, 10, 0, 0]])
    assert box_iou(inverted, torch.tensor([[0.0, 0, 10, 10]])).item() == 0.0
    # leading batch dims: [S, L, 4] × [S, L, 4] → [S, L, L]
    seq = torch.tensor([[[0.0, 0, 2, 2], [1, 1, 3, 3]], [[0.0, 0, 4, 4], [0, 0, 2, 2]]])
    out = box_iou(seq, seq)
    assert out.shape == (2, 2, 2)
    torch.testing.assert_close(out[0, 0, 1], torch.tensor(1 / 7))  # inter 1, union 4 + 4 - 1
    torch.testing.assert_close(out[1, 0, 1], torch.tensor(4 / 16))
    assert box_iou(torch.zeros(0, 4), seq[0]).shape == (0, 2)


def test_paired_box_iou_is_the_diagonal() -> None:
    a = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 4, 4]], [[5, 5, 15, 15], [1, 1, 2, 2]]])  # [P=2, C=2, 4]
    b = torch.tensor([[[5.0, 0, 15, 10], [0, 0, 4, 4]], [[0, 0, 10, 10], [3, 3, 4, 4]]])
    torch.testing.assert_close(paired_box_iou(a, b), torch.tensor([[1 / 3, 1.0], [1 / 7, 0.0]]))
    assert paired_box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)


def test_box_iou_plus1_hand_worked() -> None:
    # +1 convention: [0,0,9,9] is 10×10 = 100 px; [5,0,14,9] overlaps it on columns 5..9: 5×10 = 50 → 50/150.
    # [0,0,0,0] is one pixel: IoU 1 with itself (continuous IoU would be 0/0).
    a = np.array([[0, 0, 9, 9], [0, 0, 0, 0]], dtype=np.float32)
    b = torch.tensor([[5.0, 0, 14, 9], [0, 0, 0, 0], [10, 10, 12, 12]])
    got = box_iou_plus1(a, b)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[50 / 150, 1 / 100, 0], [0, 1, 0]], dtype=np.float32))
    # exactly 0.5 with integer boxes: [0,0,9,9] (100 px) inside [0,0,19,9] (200 px) → 100 / (100 + 200 - 100)
    assert box_iou_plus1([[0, 0, 9, 9]], [[0, 0, 19, 9]])[0, 0] == np.float32(0.5)


def test_union_boxes() -> None:
    boxes = torch.tensor([[0.0, 10, 20, 30], [5, 0, 56, 28], [1, 1, 2, 2]])
    pairs = torch.tensor([[0, 1], [1, 0], [2, 2]])
    expected = torch.tensor([[0.0, 0, 56, 30], [0, 0, 56, 30], [1, 1, 2, 2]])
    torch.testing.assert_close(union_boxes(boxes, pairs), expected)


def test_rescale_boxes_to_original_pixels() -> None:
    # image 0: resized 100×200 (h, w) from 50×400 → x × 2, y × 0.5; image 1: resized 30×30 from 90×60
    boxes = torch.tensor([[10.0, 20, 30, 40], [3, 6, 9, 12]])
    image_index = torch.tensor([0, 1])
    resized = torch.tensor([[100, 200], [30, 30]])
    original = torch.tensor([[50, 400], [90, 60]])
    expected = torch.tensor([[20.0, 10, 60, 20], [6, 18, 18, 36]])
    torch.testing.assert_close(rescale_boxes(boxes, image_index, resized, original), expected)
    images = ImageBatch(torch.zeros(2, 3, 100, 200), resized, original, torch.tensor([7, 8]))
    torch.testing.assert_close(boxes_to_original(boxes, image_index, images), expected)


def test_local_index() -> None:
    image_index = torch.tensor([0, 1, 1, 0, 1])
    objs = (image_index == 1).nonzero().flatten()  # flat 1, 2, 4 → local 0, 1, 2
    local = local_index(objs, 5)
    assert local.tolist() == [-1, 0, 1, -1, 2]
    assert local[torch.tensor([[4, 1], [2, 4]])].tolist() == [[2, 0], [1, 2]]
    assert local_index(torch.zeros(0, dtype=torch.long), 3).tolist() == [-1, -1, -1]


def test_to_numpy_widens_half_precision() -> None:
    x = torch.tensor([1.5, 2.25], dtype=torch.bfloat16)
    assert to_numpy(x).dtype == np.float32 and to_numpy(x).tolist() == [1.5, 2.25]
    assert to_numpy([1, 2]).tolist() == [1, 2]
