"""MaskTransfer: S applied per pixel in logit space; each box's own mask."""

from __future__ import annotations

import json

import pytest
import torch

from sgseg.models.masks import MaskTransfer, build_similarity, own_mask_probs


def test_transfer_hand_worked():
    sim = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    coco = torch.zeros(1, 3, 2, 2)
    coco[0, 0] = torch.tensor([[4.0, -4.0], [0.0, 2.0]])
    coco[0, 1] = torch.tensor([[0.0, 4.0], [-8.0, 2.0]])
    coco[0, 2] = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    vg = MaskTransfer(sim)(coco)
    assert vg.shape == (1, 3, 2, 2)
    torch.testing.assert_close(vg[0, 0], coco[0, 0])  # one-hot row copies the channel exactly
    torch.testing.assert_close(vg[0, 1], torch.tensor([[1.0, 2.0], [-6.0, 2.0]]))
    torch.testing.assert_close(vg[0, 2], torch.tensor([[1.0, 3.0], [-3.0, 2.0]]))


def test_transfer_matches_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(5, 4, generator=g)
    coco = torch.randn(3, 4, 6, 6, generator=g)
    vg = MaskTransfer(sim)(coco)
    for n in range(3):
        for i in range(6):
            for j in range(6):
                torch.testing.assert_close(vg[n, :, i, j], sim @ coco[n, :, i, j])


def test_similarity_is_a_buffer_and_empty_input():
    t = MaskTransfer(torch.eye(3))
    assert "similarity" in t.state_dict() and not list(t.parameters())
    assert t(torch.zeros(0, 3, 28, 28)).shape == (0, 3, 28, 28)
    assert t.to(torch.float64)(torch.ones(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="coco_mask_logits"):
        t(torch.zeros(1, 4, 28, 28))


def test_gradient_flows_to_coco_logits():
    sim = torch.tensor([[0.5, 0.5]])
    coco = torch.randn(2, 2, 4, 4, requires_grad=True)
    MaskTransfer(sim)(coco).sum().backward()
    torch.testing.assert_close(coco.grad, torch.full_like(coco, 0.5))


def test_own_mask_probs_by_label_and_by_distribution():
    probs = torch.stack([torch.full((2, 2), v) for v in (0.1, 0.5, 0.9)])[None].repeat(
        2, 1, 1, 1
    )  # [2, 3, 2, 2]
    own = own_mask_probs(probs, labels=torch.tensor([3, 1]))
    torch.testing.assert_close(own[:, 0, 0], torch.tensor([0.9, 0.1]))
    # Background (index 0) is dropped and the foreground renormalised: weights (0.5, 0.5, 0) and (0, 0.25, 0.75).
    label_probs = torch.tensor([[0.2, 0.4, 0.4, 0.0], [0.2, 0.0, 0.2, 0.6]])
    own = own_mask_probs(probs, label_probs=label_probs)
    torch.testing.assert_close(own[:, 0, 0], torch.tensor([0.3, 0.25 * 0.5 + 0.75 * 0.9]))
    with pytest.raises(ValueError, match="exactly one"):
        own_mask_probs(probs)


def test_real_similarity_transfer_keeps_base_classes(shared_data):
    """With the real S, a VG class aliased to COCO person gets the person mask exactly; paw mixes cat and dog."""
    from gensim.models import KeyedVectors

    names = json.loads((shared_data / "class-names.json").read_text())
    kv = KeyedVectors.load_word2vec_format(
        str(shared_data / "class-embeddings.glove840b.300d.txt"), binary=False, no_header=True
    )
    vg, coco = names["vg150_objects"], names["coco80_objects"]
    sim = build_similarity(vg, coco, kv)
    logits = torch.randn(2, 80, 28, 28, generator=torch.Generator().manual_seed(1))
    out = MaskTransfer(sim)(logits)
    assert out.shape == (2, 150, 28, 28)
    torch.testing.assert_close(out[:, vg.index("man")], logits[:, coco.index("person")])
    cat, dog = coco.index("cat"), coco.index("dog")
    w = sim[vg.index("paw")]
    torch.testing.assert_close(out[:, vg.index("paw")], w[cat] * logits[:, cat] + w[dog] * logits[:, dog])
