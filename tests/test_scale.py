"""Real-scale SGDet pieces on hand-built inputs: overlap-only test pairs, the shared SGDet post-processing, the
auto chunk size, the 40-box test filter, and the ``preset=vg150_shapes`` data through the real loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgseg.data.visual_genome import VisualGenome
from sgseg.models.relation.postprocess import class_box_label_nms, postprocess_objects
from sgseg.models.relation.sampling import all_pairs, overlapping_pairs

from .vg_format import write_vg_dataset


def test_overlapping_pairs_hand_built_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0, 10, 10],  # 0 A
            [5, 5, 15, 15],  # 1 B: overlaps A and C
            [10, 0, 20, 10],  # 2 C: only touches A (shared edge x = 10, zero area) -> no overlap with A
            [100, 100, 110, 110],  # 3 D: alone
            [0, 0, 10, 10],  # 4 E (image 1): same place as A, but another image
            [2, 2, 4, 4],  # 5 F (image 1): inside E
        ]
    )
    image_index = torch.tensor([0, 0, 0, 0, 1, 1])
    expected = [[0, 1], [1, 0], [1, 2], [2, 1], [4, 5], [5, 4]]
    assert overlapping_pairs(boxes, image_index).tolist() == expected
    # a subset of all ordered pairs, in the same (i, j) order
    every = {tuple(p) for p in all_pairs(image_index).tolist()}
    assert {tuple(p) for p in expected} <= every
    assert overlapping_pairs(boxes[:1], image_index[:1]).shape == (0, 2)
    assert overlapping_pairs(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (0, 2)


def _probs(rows):
    """rows: {class: prob} per box over C_obj = 4 (column 0 background gets the rest)."""
    out = torch.zeros(len(rows), 4)
    for i, r in enumerate(rows):
        for c, v in r.items():
            out[i, c] = v
        out[i, 0] = 1 - sum(r.values())
    return out


def test_class_box_label_nms_hand_worked_with_class_boxes():
    # Image 0: boxes 0 and 1 both like class 1. For class 1 their regressed boxes overlap (IoU 1), for class 2
    # they do not. Box 0 (0.7 for class 1) wins class 1 and suppresses class 1 on box 1, which then takes its
    # next class, 2 (0.3) — even though box 1's class-1 prob (0.6) is higher.
    # Box 2 (image 1) has the same boxes but lives in another image: unaffected, class 1.
    same = [0.0, 0, 10, 10]
    far = [50.0, 50, 60, 60]
    class_boxes = torch.tensor(
        [
            [same, same, same, same],
            [same, same, far, same],
            [same, same, same, same],
        ]
    )
    probs = _probs([{1: 0.7, 2: 0.1}, {1: 0.6, 2: 0.3}, {1: 0.6, 2: 0.3}])
    image_index = torch.tensor([0, 0, 1])
    assert class_box_label_nms(probs, class_boxes, image_index, 0.3).tolist() == [1, 2, 1]
    # IoU of the class-1 boxes below the threshold -> no suppression
    class_boxes[1, 1] = torch.tensor([0.0, 0, 10, 3])  # IoU 30/100 = 0.3 >= 0.3 still suppresses
    assert class_box_label_nms(probs, class_boxes, image_index, 0.3).tolist() == [1, 2, 1]
    class_boxes[1, 1] = torch.tensor([0.0, 0, 10, 2])  # IoU 0.2 < 0.3
    assert class_box_label_nms(probs, class_boxes, image_index, 0.3).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="class_boxes"):
        class_box_label_nms(probs, class_boxes[:, :2], image_index, 0.3)


def test_postprocess_objects_takes_the_final_labels_class_box_and_score():
    same = [0.0, 0, 10, 10]
    class_boxes = torch.tensor(
        [
            [[9.0, 9, 9, 9], same, [1.0, 1, 11, 11], [2.0, 2, 12, 12]],
            [[9.0, 9, 9, 9], [0.0, 0, 10, 9], [3.0, 3, 13, 13], [4.0, 4, 14, 14]],
        ]
    )
    probs = _probs([{1: 0.7, 2: 0.1}, {1: 0.6, 2: 0.3}])
    logits = probs.log()
    det_boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9]])
    ctx_labels, ctx_scores = torch.tensor([1, 1]), torch.tensor([0.7, 0.6])
    out = postprocess_objects(
        logits, ctx_labels, ctx_scores, det_boxes, torch.tensor([0, 0]), class_boxes, 0.3
    )
    # box 1 loses class 1 to box 0 (class-1 boxes IoU 0.9) and takes class 2: its class-2 box, prob 0.3
    assert out.labels.tolist() == [1, 2]
    torch.testing.assert_close(out.scores, torch.tensor([0.7, 0.3]))
    assert out.boxes.tolist() == [same, [3.0, 3, 13, 13]]
    # NMS off: the context's labels and scores, boxes still the class-specific ones of those labels
    off = postprocess_objects(
        logits, ctx_labels, ctx_scores, det_boxes, torch.tensor([0, 0]), class_boxes, None
    )
    assert off.labels.tolist() == [1, 1] and off.scores.tolist() == ctx_scores.tolist()
    assert off.boxes.tolist() == [same, [0.0, 0, 10, 9]]
    empty = postprocess_objects(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4), 0.3,
    )  # fmt: skip
    assert empty.labels.shape == (0,) and empty.boxes.shape == (0, 4)


def test_auto_pair_chunk_arithmetic():
    from sgseg.models.scene_graph import AUTO_CHUNK_BYTES, SceneGraphModel

    m = SceneGraphModel.__new__(SceneGraphModel)  # only the chunk rule, no modules
    m.roi_size, m.pair_chunk_size, m.uses_edge_masks = 28, "auto", True
    # VG150 with FPN width 256: 4 bytes · 784 cells · (3 · 256 + 6 · 150) channels = 5,230,848 B per pair
    per_pair = 4 * 28 * 28 * (3 * 256 + 6 * 150)
    assert per_pair == 5_230_848
    assert m.pair_chunk(256, 150) == AUTO_CHUNK_BYTES // per_pair == 205
    m.uses_edge_masks = False  # edge grounding "none": the union features and the head's maps only
    assert m.pair_chunk(256, 150) == (1 << 30) // (4 * 784 * 3 * 256) == 445
    m.pair_chunk_size = 7
    assert m.pair_chunk(256, 150) == 7


def _vg_with_box_counts(root, counts, split=2):
    images = []
    for n in counts:
        boxes = [[2 * k, 0, 2 * k + 5, 5] for k in range(n)]  # neighbours overlap
        images.append(
            {"width": 100, "height": 50, "labels": [1 + k % 150 for k in range(n)], "boxes_xyxy": boxes,
             "relations": [(0, 1, 1)], "split": split}
        )  # fmt: skip
    write_vg_dataset(root, images, write_images=False)


def test_max_test_boxes_drops_large_test_images_only(tmp_path):
    _vg_with_box_counts(tmp_path, [3, 41, 40, 2, 45], split=2)
    kept = VisualGenome(tmp_path, "test", num_val=0, max_test_boxes=40)
    assert len(kept) == 3 and kept.num_dropped_max_boxes == 2 and kept.num_images_before_box_filter == 5
    assert kept.num_with_relations_before_box_filter == 5
    assert [kept.get_groundtruth(i)["boxes"].shape[0] for i in range(len(kept))] == [3, 40, 2]
    everything = VisualGenome(tmp_path, "test", num_val=0)
    assert len(everything) == 5 and everything.num_dropped_max_boxes == 0
    # train/val never lose images to it (the filter is the test protocol's)
    train_root = tmp_path / "train"
    _vg_with_box_counts(train_root, [3, 41, 45], split=0)
    assert len(VisualGenome(train_root, "train", num_val=0, max_test_boxes=40)) == 3
    with pytest.raises(ValueError, match="max_test_boxes"):
        VisualGenome(tmp_path, "test", num_val=0, max_test_boxes=0)


@pytest.mark.slow
def test_vg150_shapes_preset_loads_through_the_real_loaders(tmp_path):
    from sgseg.data.coco import CocoInstances
    from sgseg.data.synthetic.cli import main as synthetic_main

    out = tmp_path / "vg150"
    assert synthetic_main(["preset=vg150_shapes", f"out={out}", "num_vg_train=6", "num_vg_test=4",
                           "num_coco_train=2", "num_coco_val=1"]) == 0  # fmt: skip
    stamp = json.loads((out / "synthetic_config.json").read_text())
    # real label spaces: the loaders' check_label_space (on by default) passes
    train = VisualGenome(out / "vg", "train", num_val=2, filter_non_overlap=True)
    test = VisualGenome(out / "vg", "test", num_val=2, max_test_boxes=40)
    assert train.num_object_classes == 151 and train.num_predicates == 51
    assert test.num_dropped_max_boxes == stamp["stats"]["test_images_over_40_boxes"] >= 2
    counts = [
        VisualGenome(out / "vg", "test", num_val=2).get_groundtruth(i)["boxes"].shape[0] for i in range(4)
    ]
    assert min(counts) >= 10 and max(counts) == 60
    item = test[0]
    h, w = item["image"].shape[1:]
    assert 592 <= h <= 1000 and 592 <= w <= 1000
    coco = CocoInstances(out / "coco", "train")
    assert coco.num_object_classes == 81 and len(coco) == 2
    words = {line.split(" ", 1)[0] for line in (out / "glove.vg150_shapes.300d.txt").read_text().splitlines()}
    assert {"dining", "table", "man", "teddy", "bear"} <= words
    assert np.isclose(stamp["config"]["min_image_size"], 592)
