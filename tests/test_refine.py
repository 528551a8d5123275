"""Mask refinement: zero-init identity, context fusion, the per-pixel BCE loss and its GT cropping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sgseg.models.masks import (
    MaskRefinement,
    MaskTransfer,
    crop_masks_to_boxes,
    refinement_loss,
)


def _tiny(num_classes: int = 5) -> MaskRefinement:
    torch.manual_seed(0)
    return MaskRefinement(in_channels=6, context_dim=3, num_classes=num_classes, hidden=8, num_convs=2)


def test_zero_init_refinement_is_identity():
    ref = _tiny()
    transfer = MaskTransfer(torch.rand(7, 5))
    coco = torch.randn(4, 5, 28, 28)
    feats, ctx = torch.randn(4, 6, 14, 14), torch.randn(4, 3)
    refined = coco + ref(feats, ctx)  # m̂ = m + f_M'(z), as SceneGraphModel applies it
    assert torch.equal(ref(feats, ctx), torch.zeros(4, 5, 28, 28))
    assert torch.equal(refined, coco)
    assert torch.equal(transfer(refined), transfer(coco))


def test_first_step_trains_the_last_layer_and_moves_the_masks():
    ref = _tiny()
    coco = torch.zeros(3, 5, 28, 28)
    feats, ctx = torch.randn(3, 6, 14, 14), torch.randn(3, 3)
    gt = torch.ones(3, 28, 28)
    refined = coco + ref(feats, ctx)
    refinement_loss(refined, torch.tensor([1, 2, 5]), gt, torch.tensor([[0.0, 0, 28, 28]] * 3)).backward()
    assert ref.predictor.weight.grad.abs().sum() > 0 and ref.predictor.bias.grad.abs().sum() > 0
    opt = torch.optim.SGD(ref.parameters(), lr=1.0)
    opt.step()
    # All-foreground targets: one SGD step raises the GT-channel logits of every refined mask.
    refined2 = coco + ref(feats, ctx)
    assert (refined2[0, 0] > 0).all() and (refined2[2, 4] > 0).all()


def test_context_is_fused():
    ref = _tiny()
    torch.nn.init.normal_(ref.predictor.weight)
    feats = torch.randn(2, 6, 14, 14)
    a = ref(feats, torch.zeros(2, 3))
    b = ref(feats, torch.ones(2, 3))
    assert a.shape == (2, 5, 28, 28) and not torch.allclose(a, b)
    # Objects are independent: row 1's context does not change row 0's output.
    c = ref(feats, torch.tensor([[0.0, 0, 0], [5.0, 5, 5]]))
    torch.testing.assert_close(c[0], a[0])
    with pytest.raises(ValueError, match="context"):
        ref(feats, torch.zeros(3, 3))


def test_loss_hand_worked():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = torch.tensor([[2.0, -2.0], [0.0, 0.0]])
    logits[0, 0] = 100.0  # a channel that is not the GT class must not matter
    gt = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    loss = refinement_loss(logits, torch.tensor([2, 3]), gt, torch.zeros(2, 4))
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 — softplus: BCE(x, 1) = sp(−x), BCE(x, 0) = sp(x)
    by_hand = (sp(-2) + sp(2) + sp(0) + sp(0)) + 4 * sp(0)
    assert loss.item() == pytest.approx(by_hand / 8, rel=1e-6)


def test_crop_matches_block_average_route():
    # Integer boxes whose size is a multiple of M: aligned RoIAlign with 2 × 2 samples per bin reads exactly
    # the pixels of each 2 × 2 block, so the target is (block mean ≥ 0.5).
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(2, 20, 24, generator=g) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[2.0, 4.0, 10.0, 12.0], [8.0, 0.0, 16.0, 8.0]])
    got = crop_masks_to_boxes(masks, boxes, 4)
    for n, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        block = F.avg_pool2d(masks[n, y1:y2, x1:x2][None].float(), 2)[0]
        assert torch.equal(got[n], (block >= 0.5).float())


def test_loss_image_frame_equals_cropped_route():
    masks = torch.zeros(1, 16, 16, dtype=torch.uint8)
    masks[0, 4:12, 4:8] = 1  # left half of the box (4, 4, 12, 12)
    boxes = torch.tensor([[4.0, 4.0, 12.0, 12.0]])
    target = crop_masks_to_boxes(masks, boxes, 4)
    assert torch.equal(target[0], torch.tensor([[1.0, 1, 0, 0]] * 4))
    logits = torch.randn(1, 2, 4, 4)
    a = refinement_loss(logits, torch.tensor([2]), masks, boxes)
    b = refinement_loss(logits, torch.tensor([2]), target, boxes)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, F.binary_cross_entropy_with_logits(logits[0, 1], target[0]))


def test_loss_empty_batch_has_grad():
    logits = torch.zeros(0, 80, 28, 28, requires_grad=True)
    loss = refinement_loss(
        logits, torch.zeros(0, dtype=torch.long), torch.zeros(0, 10, 10, dtype=torch.uint8), torch.zeros(0, 4)
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad.shape == logits.shape


def test_loss_rejects_zero_based_labels():
    with pytest.raises(ValueError, match="1-based"):
        refinement_loss(torch.zeros(1, 3, 2, 2), torch.tensor([0]), torch.zeros(1, 2, 2), torch.zeros(1, 4))


def test_crop_on_real_coco_masks(shared_data):
    """Real COCO polygons (coco_tiny8): the 28 × 28 targets follow the instance masks inside their boxes."""
    from pycocotools.coco import COCO

    coco = COCO(str(shared_data / "coco_tiny8" / "instances_tiny8.json"))
    anns = [a for a in coco.dataset["annotations"] if not a["iscrowd"] and min(a["bbox"][2:]) >= 16]
    assert len(anns) > 20
    # Images differ in size: pad every mask bottom/right into one frame, as a padded batch does.
    raw = [torch.from_numpy(coco.annToMask(a)) for a in anns]
    h, w = max(m.shape[0] for m in raw), max(m.shape[1] for m in raw)
    masks = torch.stack([F.pad(m, (0, w - m.shape[1], 0, h - m.shape[0])) for m in raw]).to(torch.uint8)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    targets = crop_masks_to_boxes(masks, boxes, 28)
    # Independent route: the mask pixel under each cell centre. Cells straddling the outline may differ.
    agree = []
    for n, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx = (x1 + (torch.arange(28) + 0.5) * (x2 - x1) / 28).long()
        cy = (y1 + (torch.arange(28) + 0.5) * (y2 - y1) / 28).long()
        nearest = masks[n][cy[:, None], cx[None, :]].float()
        agree.append((nearest == targets[n]).float().mean().item())
    assert min(agree) > 0.95 and sum(agree) / len(agree) > 0.98, agree  # measured 0.981 and 0.992
    # Perfect logits give ~0 loss, zero logits exactly log 2, on the real targets.
    labels = torch.tensor([coco.getCatIds().index(a["category_id"]) + 1 for a in anns])
    logits = torch.zeros(len(anns), 80, 28, 28)
    assert refinement_loss(logits, labels, masks, boxes).item() == pytest.approx(math.log(2), rel=1e-6)
    logits[torch.arange(len(anns)), labels - 1] = 20 * (2 * targets - 1)
    assert refinement_loss(logits, labels, masks, boxes).item() < 1e-6
