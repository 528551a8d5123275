"""Hand-worked cases of the scene-graph evaluation protocol (docs/evaluation.md), one per quirk, plus input
validation, torch inputs, merging and DDP.

Every expected number is written out with its arithmetic. Unless a test says otherwise the GT scene is
``_objects()``: four objects far apart (no two overlap), labels 1, 2, 3, 4.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from sgseg.evaluation import SceneGraphEvaluator, box_iou_plus1

C_REL = 51


def _objects() -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9], [60, 0, 69, 9]], dtype=np.float64)
    return boxes, np.array([1, 2, 3, 4])


def _gt(relations, boxes=None, labels=None) -> dict:
    b, l = _objects()
    return {
        "boxes": b if boxes is None else np.asarray(boxes, dtype=np.float64),
        "labels": l if labels is None else np.asarray(labels),
        "relations": np.asarray(relations, dtype=np.int64).reshape(-1, 3),
    }


def _rel_scores(rows) -> np.ndarray:
    """rows: one dict {predicate: score} per row; background gets what is left of 1 (>= 0)."""
    out = np.zeros((len(rows), C_REL))
    for j, row in enumerate(rows):
        for c, v in row.items():
            out[j, c] = v
        out[j, 0] = max(0.0, 1.0 - sum(row.values()))
    return out


def _pred(pairs, rows, boxes=None, labels=None, scores=None) -> dict:
    b, l = _objects()
    labels = l if labels is None else np.asarray(labels)
    return {
        "boxes": b if boxes is None else np.asarray(boxes, dtype=np.float64),
        "labels": labels,
        "scores": np.ones(len(labels)) if scores is None else np.asarray(scores, dtype=np.float64),
        "rel_pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        "rel_scores": _rel_scores(rows),
    }


def _run(images, mode="sgdet", ks=(20, 50, 100), **kw) -> dict:
    ev = SceneGraphEvaluator(mode=mode, num_predicates=C_REL, ks=ks, **kw)
    for g, p in images:
        ev.update(g, p)
    return ev.compute()


# ------------------------------------------------------------------------------------------- the quirks
def test_skipped_images_and_per_image_mean():
    # A: 1 GT row, hit -> 1/1.  B: 4 GT rows, one hit -> 1/4.  C: no GT relation, D: no predicted row (skipped).
    a = (_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}]))
    b = (_gt([[0, 1, 1], [1, 2, 2], [2, 3, 3], [3, 0, 4]]), _pred([[0, 1]], [{1: 0.9}]))
    c = (_gt(np.zeros((0, 3))), _pred([[0, 1]], [{1: 0.9}]))
    d = (_gt([[0, 1, 1]]), _pred(np.zeros((0, 2)), []))
    out = _run([a, b, c, d])
    # per-image mean: (1 + 1/4) / 2 = 0.625 (pooled would be 2/5 = 0.4; counting C and D as 0: 1.25/4)
    assert out["R@20"] == out["R@100"] == out["ngR@100"] == 0.625
    assert out["num_images"] == 2 and out["num_images_skipped"] == 2


def test_iou_in_float32_as_the_reference_real_case():
    # A real VG150 SGDet case: float32 boxes whose +1 IoU is within 1e-7 of 0.5. The reference computes it on
    # float32 BoxLists: 0.50000006 -> a match; in float64 the same boxes give 0.49999998 -> no match.
    gt_box = np.array([[32.77882, 449.78577, 449.54987, 577.13745]], dtype=np.float32)
    pred_box = np.array([[172.03584, 449.78577, 588.80688, 577.13745]], dtype=np.float32)
    iou = box_iou_plus1(gt_box, pred_box)[0, 0]
    assert iou == np.float32(0.50000006) and iou >= 0.5
    # independent route: the same formula in float64 (what the evaluator did before) lands below 0.5
    a, b = gt_box[0].astype(np.float64), pred_box[0].astype(np.float64)
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    assert iw * ih / (area(a) + area(b) - iw * ih) < 0.5
    # end to end: the subject matches, the object is exact -> the triplet is hit
    other = np.array([[600, 0, 650, 40]], dtype=np.float32)
    gt = {
        "boxes": np.concatenate([gt_box, other]),
        "labels": np.array([1, 2]),
        "relations": np.array([[0, 1, 3]]),
    }
    pred = _pred([[0, 1]], [{3: 0.9}], boxes=np.concatenate([pred_box, other]), labels=[1, 2])
    pred["boxes"] = pred["boxes"].astype(np.float32)
    out = _run([(gt, pred)])
    assert out["R@20"] == 1.0


def test_pair_accuracy_first_k_gt_pair_rows_pooled():
    # Reference SGPairAccuracy: keep the rows whose (subject, object) is a GT pair, take the first K of them,
    # count the distinct GT rows they hit; A@K = sum of hits / sum of GT rows over the images.
    # Image A: GT (0,1,p1), (2,3,p2). Rows: (1,0) p5 [not a GT pair], (0,1) p1 [GT pair, hits GT 0],
    #   (0,2) p3 [not a GT pair], (2,3) p9 [GT pair, wrong predicate].
    #   A@1 = 1 (the first GT-pair row hits; the first row overall is no GT pair, so R@1 = 0), A@2 = 1.
    a = (
        _gt([[0, 1, 1], [2, 3, 2]]),
        _pred([[1, 0], [0, 1], [0, 2], [2, 3]], [{5: 0.9}, {1: 0.9}, {3: 0.9}, {9: 0.9}]),
    )
    # Image B: GT (0,1,p1), (0,1,p2), (1,2,p3). Rows: (0,1) p2 [hits GT 1], (1,2) p3 [hits GT 2].
    #   A@1 = 1, A@2 = 2.
    b = (_gt([[0, 1, 1], [0, 1, 2], [1, 2, 3]]), _pred([[0, 1], [1, 2]], [{2: 0.9}, {3: 0.9}]))
    for mode in ("predcls", "sgcls"):
        out = _run([a, b], mode=mode, ks=(1, 2, 100))
        # pooled: A@1 = (1 + 1) / (2 + 3) = 0.4 (a per-image mean would be (1/2 + 1/3) / 2 = 0.4167)
        assert out["A@1"] == pytest.approx(0.4, abs=1e-12)
        assert out["A@2"] == out["A@100"] == pytest.approx(3 / 5, abs=1e-12)
        assert out["R@1"] == pytest.approx((0 / 2 + 1 / 3) / 2, abs=1e-12)
    # sgcls: a wrong predicted label on object 3 kills image A's second GT pair only (already a miss)
    a_sgcls = (a[0], _pred(a[1]["rel_pairs"], [{5: 0.9}, {1: 0.9}, {3: 0.9}, {9: 0.9}], labels=[1, 2, 3, 1]))
    assert _run([a_sgcls, b], mode="sgcls", ks=(1, 2))["A@2"] == pytest.approx(3 / 5, abs=1e-12)
    # wrong label on object 1: image A's only hit is lost
    a_sgcls = (a[0], _pred(a[1]["rel_pairs"], [{5: 0.9}, {1: 0.9}, {3: 0.9}, {9: 0.9}], labels=[1, 3, 3, 4]))
    assert _run([a_sgcls, b], mode="sgcls", ks=(1, 2))["A@2"] == pytest.approx(2 / 5, abs=1e-12)
    assert "A@20" not in _run([a, b], mode="sgdet")  # the reference reports it for predcls / sgcls only


def test_object_labels_sgcls_accuracy_and_sgdet_recall_pooled_over_every_image():
    # SGCls. Image A (4 GT objects, labels 1 2 3 4) predicted 1 2 2 4 -> 3 right. Image B: GT objects 0 and 1
    # both label 1 with IoU(0, 1) = 50/100 = 0.5 (a near duplicate), predicted labels 2 and 1 -> only object 1
    # right: object 0's own label is wrong, object 1's correct label on top of it does not count. Image C has no
    # relation (skipped by the recalls) but its 4 objects, predicted 1 2 3 1, still count: 3 right.
    # obj_acc = (3 + 1 + 3) / (4 + 2 + 4) = 0.7 (a per-image mean would be (3/4 + 1/2 + 3/4) / 3 = 0.667).
    a = (_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}], labels=[1, 2, 2, 4]))
    near = [[0, 0, 9, 9], [0, 0, 9, 4]]
    b = (_gt([[0, 1, 1]], boxes=near, labels=[1, 1]), _pred([[0, 1]], [{1: 0.9}], boxes=near, labels=[2, 1]))
    c = (_gt(np.zeros((0, 3))), _pred([[0, 1]], [{1: 0.9}], labels=[1, 2, 3, 1]))
    out = _run([a, b, c], mode="sgcls")
    assert out["obj_acc"] == pytest.approx(0.7, abs=1e-12) and "obj_recall" not in out
    assert out["num_images"] == 2 and out["num_images_skipped"] == 1
    # SGDet. Image A: 3 detections for the 4 GT objects: object 0 exactly (label 1), object 1 with a box of
    # IoU 50/100 = 0.5 (label 2: counts), object 2's box with label 4 (wrong label), object 3 missed -> 2 of 4.
    # Image B: GT objects 0 and 1 (near duplicates, both label 1); one detection on object 0 at any score matches
    # both (IoU 0.5 with object 1) -> 2 of 2. obj_recall = (2 + 2) / (4 + 2) = 2/3.
    boxes, _ = _objects()
    dets = np.array([boxes[0], [20, 0, 29, 4], boxes[2]])
    a = (_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}], boxes=dets, labels=[1, 2, 4], scores=[0.9, 0.5, 0.1]))
    b = (
        _gt([[0, 1, 1]], boxes=near, labels=[1, 1]),
        _pred([[0, 0]], [{1: 0.9}], boxes=near[:1], labels=[1], scores=[0.01]),
    )
    out = _run([a, b], mode="sgdet")
    assert out["obj_recall"] == pytest.approx(2 / 3, abs=1e-12) and "obj_acc" not in out
    # PredCls is given the labels: neither key
    out = _run([(_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}]))], mode="predcls")
    assert "obj_acc" not in out and "obj_recall" not in out


def test_recall_split_into_matched_objects_and_recall_given_them():
    # SGCls, ks (1, 20). Image A: labels 1 2 3 4 predicted 1 2 2 4 (object 2 wrong); GT rows (0,1,p1),
    # (1,2,p1), (2,3,p2), (0,3,p2): rows (0,1) and (0,3) have both objects matched -> 2 of 4 (p1: 1, p2: 1).
    # Ranked rows (0,1) p1 [hit], (1,2) p1 [object 2 mislabelled: no hit], (0,3) p5 [miss] -> 1 hit at K = 1, 20.
    a = (
        _gt([[0, 1, 1], [1, 2, 1], [2, 3, 2], [0, 3, 2]]),
        _pred([[0, 1], [1, 2], [0, 3]], [{1: 0.9}, {1: 0.9}, {5: 0.9}], labels=[1, 2, 2, 4]),
    )
    # Image B: GT objects 0 and 1 near duplicates (IoU 0.5, both label 1), object 2 far; GT row (0,2,p3). Object
    # 0 is predicted label 2, but object 1 (label 1) matches GT object 0, so the row counts as matched -- as it
    # must: the candidate (1,2) p3 hits it. 1 of 1 matched, hit at K = 1.
    boxes = [[0, 0, 9, 9], [0, 0, 9, 4], [40, 0, 49, 9]]
    b = (
        _gt([[0, 2, 3]], boxes=boxes, labels=[1, 1, 3]),
        _pred([[1, 2]], [{3: 0.9}], boxes=boxes, labels=[2, 1, 3]),
    )
    # Image C: GT row (0,1,p2), both labels right (1 of 1); ranked (2,3) p9 [miss], (0,1) p2 [hit at K = 20].
    c = (_gt([[0, 1, 2]]), _pred([[2, 3], [0, 1]], [{9: 0.9}, {2: 0.9}]))
    # Image D: GT row (0,1,p1), object 0 predicted label 2 and no other label-1 box on it: 0 of 1 matched; the
    # image counts in R@K but not in R@K_given_objects.
    d = (_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}], labels=[2, 1, 3, 4]))
    out = _run([a, b, c, d], mode="sgcls", ks=(1, 20))
    # matched rows / GT rows, pooled: (2 + 1 + 1 + 0) / (4 + 1 + 1 + 1) = 4/7
    assert out["rel_objects_ok"] == pytest.approx(4 / 7, abs=1e-12)
    # R@K given objects: per image hits / matched rows, over A, B, C: (1/2 + 1 + 0) / 3 and (1/2 + 1 + 1) / 3;
    # plain R@1 = (1/4 + 1 + 0 + 0) / 4
    assert out["R@1_given_objects"] == pytest.approx(0.5, abs=1e-12)
    assert out["R@20_given_objects"] == pytest.approx(2.5 / 3, abs=1e-12)
    assert out["R@1"] == pytest.approx(1.25 / 4, abs=1e-12)
    # per predicate over the images with a matched row of it: p1 A 1/1 -> 1 (D's unmatched row is out);
    # p2 A 0/1, C 0/1 at K = 1 (1/1 at K = 20) -> 0 (0.5); p3 B 1/1 -> 1; the other 47 predicates 0
    per1, per20 = out["mR_per_predicate@1_given_objects"], out["mR_per_predicate@20_given_objects"]
    assert per1[:3] == pytest.approx([1.0, 0.0, 1.0]) and per20[:3] == pytest.approx([1.0, 0.5, 1.0])
    assert not any(per1[3:]) and not any(per20[3:])
    assert out["mR@1_given_objects"] == pytest.approx(2 / 50, abs=1e-12)
    assert out["mR@20_given_objects"] == pytest.approx(2.5 / 50, abs=1e-12)
    # with every label right, every row is matched: the split's recall is R@K / mR@K itself
    right = [(a[0], {**a[1], "labels": np.array([1, 2, 3, 4])}), c]
    out = _run(right, mode="sgcls", ks=(1, 20))
    assert out["rel_objects_ok"] == 1.0
    for k in (1, 20):
        assert out[f"R@{k}_given_objects"] == out[f"R@{k}"] and out[f"mR@{k}_given_objects"] == out[f"mR@{k}"]
    # SGDet: the same split (a missed object unmatches its rows); PredCls has none of the keys
    two_found = _pred([[0, 1]], [{1: 0.9}], boxes=_objects()[0][:2], labels=[1, 2])
    out = _run([(_gt([[0, 1, 1], [2, 3, 1]]), two_found)])
    assert out["rel_objects_ok"] == 0.5 and out["R@20_given_objects"] == 1.0 and out["R@20"] == 0.5
    predcls = _run([c], mode="predcls")
    assert "rel_objects_ok" not in predcls and "R@1_given_objects" not in predcls


def test_iou_plus_one_exactly_half_counts():
    gt_box, half, less = [0, 0, 9, 9], [0, 0, 9, 4], [0, 0, 9, 3]
    # +1 convention: areas 10*10 = 100, 10*5 = 50 (inside it) -> 50/100 = 0.5; 10*4 = 40 -> 40/100 = 0.4.
    # (Without +1: 9*4 / 81 = 0.444, a miss.)
    iou = box_iou_plus1(np.array([gt_box]), np.array([half, less]))
    assert iou.dtype == np.float32  # the reference's precision
    np.testing.assert_array_equal(iou, np.array([[0.5, 0.4]], dtype=np.float32))
    # disjoint by one pixel: x 0..9 vs 10..19 -> intersection width 9 - 10 + 1 = 0
    assert box_iou_plus1(np.array([gt_box]), np.array([[10, 0, 19, 9]]))[0, 0] == 0.0
    boxes, _ = _objects()
    for subject_box, expected in ((half, 1.0), (less, 0.0)):
        pred_boxes = boxes.copy()
        pred_boxes[0] = subject_box
        out = _run([(_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}], boxes=pred_boxes))])
        assert out["R@20"] == out["ngR@20"] == expected


def test_iou_threshold_applies_to_both_boxes():
    boxes, _ = _objects()
    pred_boxes = boxes.copy()
    pred_boxes[1] = [20, 0, 29, 3]  # object box IoU 40/100 = 0.4 < 0.5, subject box perfect
    out = _run([(_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}], boxes=pred_boxes))])
    assert out["R@20"] == 0.0


def test_many_to_many_matching():
    # GT: the pair (0, 1) carries predicate 1 twice (identical rows both count) and predicate 2 once.
    gt = _gt([[0, 1, 1], [0, 1, 1], [0, 1, 2]])
    # two predicted rows for the same pair, both argmax predicate 1
    pred = _pred([[0, 1], [0, 1]], [{1: 0.5, 2: 0.4}, {1: 0.3, 2: 0.2}])
    out = _run([(gt, pred)], ks=(1, 2))
    # graph constraint: row 0 -> (0, 1, 1) hits GT rows 0 and 1 -> 2/3; row 1 hits the same rows again: still 2/3
    assert out["R@1"] == out["R@2"] == 2 / 3
    # no graph constraint: candidates 0.5 (row 0, p1), 0.4 (row 0, p2), 0.3, 0.2 -> @1: 2/3, @2: all 3 -> 1
    assert out["ngR@1"] == 2 / 3 and out["ngR@2"] == 1.0


def test_predcls_uses_gt_boxes_labels_and_unit_scores():
    gt = _gt([[0, 1, 1]])
    far = np.array([[500, 500, 509, 509]] * 4, dtype=np.float64)
    wrong_labels = [7, 7, 7, 7]
    pred = _pred([[0, 1]], [{1: 0.9}], boxes=far, labels=wrong_labels)
    assert _run([(gt, pred)], mode="predcls")["R@20"] == 1.0  # boxes and labels ignored
    assert _run([(gt, pred)], mode="sgcls")["R@20"] == 0.0  # GT boxes, but the predicted (wrong) labels
    assert _run([(gt, _pred([[0, 1]], [{1: 0.9}], boxes=far))], mode="sgcls")["R@20"] == 1.0  # boxes ignored
    assert _run([(gt, pred)], mode="sgdet")["R@20"] == 0.0
    # predcls without any of the ignored fields
    minimal = {"rel_pairs": np.array([[0, 1]]), "rel_scores": _rel_scores([{1: 0.9}])}
    assert _run([(gt, minimal)], mode="predcls")["R@20"] == 1.0


def test_object_scores_rank_no_graph_constraint_except_in_predcls():
    gt = _gt([[1, 2, 5]])
    # row 0 = (0, 1) predicate 3 at 0.9 (not in GT); row 1 = (1, 2) predicate 5 at 0.5 (the GT triplet)
    pred = _pred([[0, 1], [1, 2]], [{3: 0.9}, {5: 0.5}], scores=[0.1, 1.0, 1.0, 1.0])
    # sgcls: 0.1 * 1 * 0.9 = 0.09 < 1 * 1 * 0.5 = 0.5 -> the GT candidate is first -> ngR@1 = 1
    assert _run([(gt, pred)], mode="sgcls", ks=(1,))["ngR@1"] == 1.0
    # predcls: object scores are 1 -> 0.9 > 0.5 -> the wrong candidate is first -> ngR@1 = 0
    assert _run([(gt, pred)], mode="predcls", ks=(1,))["ngR@1"] == 0.0
    # graph constraint ignores scores: row 0 comes first whatever they are -> R@1 = 0, R@2 = 1
    out = _run([(gt, pred)], mode="sgcls", ks=(1, 2))
    assert (out["R@1"], out["R@2"]) == (0.0, 1.0)


def test_graph_constraint_argmax_ties_lowest_id_and_ignores_background():
    # background 0.2 is not the argmax (columns 1..50 only); predicates 3 and 7 tie at 0.4 -> predicate 3
    row = [{3: 0.4, 7: 0.4}]
    for gt_predicate, expected in ((3, 1.0), (7, 0.0)):
        out = _run([(_gt([[0, 1, gt_predicate]]), _pred([[0, 1]], row))], ks=(1, 2))
        assert out["R@1"] == out["R@2"] == expected
    # no graph constraint: (row 0, p3) and (row 0, p7) tie at 0.4 -> lower predicate first
    out = _run([(_gt([[0, 1, 7]]), _pred([[0, 1]], row))], ks=(1, 2))
    assert (out["ngR@1"], out["ngR@2"]) == (0.0, 1.0)


def test_input_row_order_is_the_ranking():
    gt = _gt([[1, 2, 2]])
    pred = _pred([[0, 1], [1, 2]], [{1: 0.1}, {2: 0.9}])  # row 1 scores higher but comes second
    out = _run([(gt, pred)], ks=(1, 2))
    assert out["R@1"] == 0.0 and out["R@2"] == 1.0  # never re-sorted
    assert out["ngR@1"] == 1.0  # the no-graph-constraint list is sorted by score


def test_no_graph_constraint_top100_and_prefixes():
    # 3 rows x 50 predicates = 150 candidates; score(j, c) = 1 - (50 j + c - 1) / 200, so the candidate of
    # row j, predicate c has rank 50 j + c - 1 (0-based) in the list.
    rel = np.zeros((3, C_REL))
    for j in range(3):
        for c in range(1, C_REL):
            rel[j, c] = 1 - (50 * j + c - 1) / 200
    pairs = [[0, 1], [1, 2], [2, 3]]
    ks = (20, 50, 100, 150)

    def run(relation):
        pred = _pred(pairs, [{}] * 3)
        pred["rel_scores"] = rel
        return _run([(_gt([relation]), pred)], mode="predcls", ks=ks)

    # rank 19 (row 0, predicate 20): inside the first 20
    out = run([0, 1, 20])
    assert [out[f"ngR@{k}"] for k in ks] == [1.0, 1.0, 1.0, 1.0]
    # rank 50 (row 1, predicate 1): outside the first 50 (ranks 0..49), inside 100
    out = run([1, 2, 1])
    assert [out[f"ngR@{k}"] for k in ks] == [0.0, 0.0, 1.0, 1.0]
    # rank 149 (row 2, predicate 50): outside the top 100; K = 150 > 100 extends the list to 150 candidates
    out = run([2, 3, 50])
    assert [out[f"ngR@{k}"] for k in ks] == [0.0, 0.0, 0.0, 1.0]
    # graph constraint: each row's argmax is predicate 1 (its highest score), rows 0..2 are all in the top 20
    assert run([1, 2, 1])["R@20"] == 1.0 and run([0, 1, 20])["R@20"] == 0.0


def test_no_graph_constraint_is_not_above_graph_constraint_in_general():
    # ngR@K >= R@K does NOT hold: a row's second predicate can push a later row's argmax out of the top K.
    gt = _gt([[1, 2, 3]])
    pred = _pred([[0, 1], [1, 2]], [{1: 0.5, 2: 0.45}, {3: 0.4}])
    out = _run([(gt, pred)], ks=(2,))
    # graph constraint: rows 0, 1 -> (0, 1, p1), (1, 2, p3) -> hit -> 1
    # no graph constraint: 0.5 (row 0, p1), 0.45 (row 0, p2) | 0.4 (row 1, p3) is third -> 0
    assert out["R@2"] == 1.0 and out["ngR@2"] == 0.0


def test_mean_recall_per_image_records_and_absent_predicates():
    # A: GT (0,1,p1) hit, (1,2,p1) missed, (2,3,p2) hit -> records p1: 1/2, p2: 1/1
    a = (_gt([[0, 1, 1], [1, 2, 1], [2, 3, 2]]), _pred([[0, 1], [2, 3]], [{1: 0.9}, {2: 0.9}]))
    # B: GT (0,1,p1) hit -> record p1: 1/1
    b = (_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}]))
    out = _run([a, b])
    # p1 = mean(1/2, 1) = 0.75, p2 = mean(1) = 1, the other 48 predicates never occur -> 0
    # mR = (0.75 + 1) / 50 = 0.035 (pooling p1 over images would give 2/3)
    per_pred = out["mR_per_predicate@100"]
    assert len(per_pred) == 50 and per_pred[:2] == [0.75, 1.0] and per_pred[2:] == [0.0] * 48
    assert out["mR@100"] == pytest.approx(0.035, abs=1e-15) and out["ng-mR@100"] == out["mR@100"]
    assert out["R@100"] == (2 / 3 + 1) / 2


def test_zero_shot_rows_use_gt_labels():
    zs = np.array([[1, 2, 1]])  # (subject label, object label, predicate)
    # A: GT labels 1, 2, 3, 4: (0,1,p1) -> (1, 2, 1) is zero-shot; (1,2,p1) -> (2, 3, 1) is not.
    gt_a = _gt([[0, 1, 1], [1, 2, 1]])
    pred_a = _pred([[0, 1]], [{1: 0.9}])  # hits the zero-shot row only
    # B: no zero-shot row -> left out of the zero-shot averages
    b = (_gt([[2, 3, 1]]), _pred([[2, 3]], [{1: 0.9}]))
    out = _run([(gt_a, pred_a), b], mode="sgcls", zeroshot_triplets=zs)
    assert out["zsR@20"] == out["ng-zsR@20"] == 1.0  # 1 of A's 1 zero-shot row
    assert out["R@20"] == (1 / 2 + 1) / 2 and out["num_images_zeroshot"] == 1
    # membership is by GT labels: predicting label 9 for object 0 keeps the row zero-shot, now missed
    pred_wrong = _pred([[0, 1]], [{1: 0.9}], labels=[9, 2, 3, 4])
    out = _run([(gt_a, pred_wrong), b], mode="sgcls", zeroshot_triplets=zs)
    assert out["zsR@20"] == 0.0 and out["num_images_zeroshot"] == 1
    # no image with a zero-shot row, or no zero-shot set at all -> NaN
    assert math.isnan(_run([b], zeroshot_triplets=zs)["zsR@20"])
    out = _run([(gt_a, pred_a)])
    assert math.isnan(out["zsR@100"]) and math.isnan(out["ng-zsR@100"])


def test_zero_shot_triplet_file(shared_data):
    triplets = np.loadtxt(shared_data / "vg150-zeroshot-triplets.txt", dtype=int)
    assert triplets.shape == (5971, 3)
    s, o, p = (int(v) for v in triplets[0])
    assert (s, o, p) == (1, 1, 33)
    # two objects labelled 1 (not overlapping): (0, 1, 33) is zero-shot; (0, 1, 1) = (1, 1, 1) is not in the file
    assert not ((triplets == [1, 1, 1]).all(1)).any()
    boxes = [[0, 0, 9, 9], [20, 0, 29, 9]]
    gt = {
        "boxes": np.array(boxes, float),
        "labels": np.array([1, 1]),
        "relations": np.array([[0, 1, 33], [0, 1, 1]]),
    }
    rel = np.zeros((1, C_REL))
    rel[0, 1] = 0.9  # argmax predicate 1: hits the ordinary row only
    pred = {"boxes": np.array(boxes, float), "labels": np.array([1, 1]), "scores": np.ones(2)}
    pred |= {"rel_pairs": np.array([[0, 1]]), "rel_scores": rel}
    ev = SceneGraphEvaluator("sgdet", 51, (20, 50, 100), 0.5, triplets)
    ev.update(gt, pred)
    out = ev.compute()
    # R = 1/2; zsR = 0/1; ngR: the (row 0, p33) candidate scores 0 but is in the top 100 (50 candidates) -> 2/2
    assert (
        out["R@100"] == 0.5 and out["zsR@100"] == 0.0 and out["ngR@100"] == 1.0 and out["ng-zsR@100"] == 1.0
    )


def test_near_duplicate_gt_object_matches_in_predcls():
    # objects 0 and 1 both label 1, IoU(0, 1) = 50/100 = 0.5: predicting on object 1 matches GT rows on object 0
    boxes = [[0, 0, 9, 9], [0, 0, 9, 4], [20, 0, 29, 9]]
    gt = _gt([[0, 2, 1]], boxes=boxes, labels=[1, 1, 2])
    pred = {"rel_pairs": np.array([[1, 2]]), "rel_scores": _rel_scores([{1: 0.9}])}
    assert _run([(gt, pred)], mode="predcls")["R@20"] == 1.0


def test_output_keys():
    out = _run([(_gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}]))])
    for k in (20, 50, 100):
        for name in ("R", "ngR", "zsR", "ng-zsR", "mR", "ng-mR"):
            assert isinstance(out[f"{name}@{k}"], float)
        assert len(out[f"mR_per_predicate@{k}"]) == len(out[f"ng-mR_per_predicate@{k}"]) == 50
    assert out["num_images"] == 1


def test_no_counted_image():
    out = _run([(_gt(np.zeros((0, 3))), _pred([[0, 1]], [{1: 0.9}]))])
    assert math.isnan(out["R@20"]) and out["mR@20"] == 0.0 and out["num_images"] == 0


# ------------------------------------------------------------------------------------------- validation
def _bad(mode="sgdet", **changes) -> tuple[dict, dict]:
    gt, pred = _gt([[0, 1, 1]]), _pred([[0, 1]], [{1: 0.9}])
    for key, value in changes.items():
        side, field = key.split("__")
        (gt if side == "gt" else pred)[field] = value
    return gt, pred


@pytest.mark.parametrize(
    ("mode", "changes", "message"),
    [
        (
            "sgdet",
            {"pred__rel_scores": np.zeros((1, 50))},
            "image 1: pred['rel_scores'] has 50 columns, expected 51",
        ),
        ("sgdet", {"pred__rel_scores": np.zeros((2, 51))}, "pred['rel_scores'] has 2 rows, expected 1"),
        ("sgdet", {"pred__rel_scores": np.full((1, 51), np.nan)}, "pred['rel_scores'] contains NaN"),
        ("sgdet", {"pred__scores": np.array([1, np.nan, 1, 1])}, "pred['scores'] contains NaN"),
        ("sgdet", {"pred__scores": np.ones(3)}, "pred['scores'] has 3 rows, expected 4"),
        (
            "sgdet",
            {"pred__rel_pairs": np.array([[0, 4]])},
            "pred['rel_pairs'][0, 1] = 4 is out of range 0..3",
        ),
        ("sgdet", {"pred__rel_pairs": np.array([[-1, 0]])}, "pred['rel_pairs'][0, 0] = -1 is out of range"),
        ("sgdet", {"pred__rel_pairs": np.array([0, 1])}, "pred['rel_pairs'] must be Long[P, 2]"),
        (
            "sgdet",
            {"pred__labels": np.array([1, 2, 3, 151])},
            "pred['labels'][3] = 151 is out of range 1..150",
        ),
        ("sgdet", {"pred__labels": np.array([1.5, 2, 3, 4])}, "pred['labels'] must hold integers"),
        ("sgdet", {"pred__boxes": np.zeros((4, 5))}, "pred['boxes'] has 5 columns, expected 4"),
        ("sgdet", {"pred__boxes": np.array([[5, 0, 4, 9]] * 4, float)}, "pred['boxes'][0]"),
        ("sgdet", {"gt__labels": np.array([0, 2, 3, 4])}, "gt['labels'][0] = 0 is out of range 1..150"),
        ("sgdet", {"gt__labels": np.array([1, 2, 3])}, "gt['labels'] has 3 rows, expected 4"),
        (
            "sgdet",
            {"gt__relations": np.array([[0, 1, 51]])},
            "gt['relations'][:, 2:][0, 0] = 51 is out of range 1..50",
        ),
        ("sgdet", {"gt__relations": np.array([[0, 9, 1]])}, "gt['relations'][0, 1] = 9 is out of range 0..3"),
        ("sgdet", {"gt__boxes": np.array([[0, 0, 1, np.inf]] * 4)}, "gt['boxes'] contains NaN/inf"),
        (
            "predcls",
            {"pred__rel_pairs": np.array([[0, 4]])},
            "pred['rel_pairs'][0, 1] = 4 is out of range 0..3",
        ),
        ("predcls", {"pred__boxes": np.zeros((5, 4))}, "pred['boxes'] has 5 rows, expected 4: in predcls"),
        ("sgcls", {"pred__labels": np.array([1, 2, 3, 4, 5])}, "pred['labels'] has 5 rows, expected 4"),
        ("sgcls", {"pred__scores": None}, "pred['scores'] is missing"),
    ],
)
def test_malformed_input_raises_naming_field_and_image(mode, changes, message):
    ev = SceneGraphEvaluator(mode=mode)
    ev.update(*_bad())  # image 0 is fine
    with pytest.raises(ValueError) as err:
        ev.update(*_bad(mode, **changes))
    assert message in str(err.value)
    assert "image 1" in str(err.value)
    assert len(ev) == 1  # nothing half-recorded


def test_skipped_image_is_still_validated_and_errors_name_image_id():
    gt, pred = _bad(pred__rel_scores=np.zeros((1, 50)))
    gt["relations"] = np.zeros((0, 3), dtype=np.int64)  # would be skipped, but is malformed
    ev = SceneGraphEvaluator()
    with pytest.raises(ValueError, match=r"image 0 \(image_id 2343\): pred\['rel_scores'\] has 50 columns"):
        ev.update(gt, pred, image_id=2343)
    with pytest.raises(ValueError, match="num_predicates"):
        SceneGraphEvaluator(num_predicates=1)
    with pytest.raises(ValueError, match="mode"):
        SceneGraphEvaluator(mode="phrdet")
    with pytest.raises(ValueError, match="zeroshot_triplets"):
        SceneGraphEvaluator(zeroshot_triplets=np.array([[1, 2, 51]]))


# --------------------------------------------------------------------------------- inputs, merging, DDP
def _random_images(n: int, seed: int = 0):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_evaluator.py"
    spec = importlib.util.spec_from_file_location("bench_evaluator", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.synthetic_images(n, seed, num_objects=8, num_rels=6)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key] or (
            isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key])
        ), key


def test_torch_inputs_equal_numpy_inputs():
    images = _random_images(20)
    as_torch = [
        ({k: torch.as_tensor(v) for k, v in g.items()}, {k: torch.as_tensor(v) for k, v in p.items()})
        for g, p in images
    ]
    _assert_same(_run(images), _run(as_torch))


@pytest.mark.gpu
def test_cuda_inputs_equal_numpy_inputs():
    images = _random_images(20)
    cuda = [
        (
            {k: torch.as_tensor(v).cuda() for k, v in g.items()},
            {k: torch.as_tensor(v).cuda() for k, v in p.items()},
        )
        for g, p in images
    ]
    _assert_same(_run(images), _run(cuda))


def test_merge_equals_single_process_and_dedupes_sampler_padding():
    images = _random_images(30, seed=1)
    zs = np.array([[a, b, p] for a in range(1, 151, 3) for b in range(1, 151, 4) for p in (1, 2, 3)])
    single = SceneGraphEvaluator(zeroshot_triplets=zs)
    for i, (g, p) in enumerate(images):
        single.update(g, p, image_id=i)
    # 3 "ranks" with interleaved shards, the last padded with image 0 again (as DistributedSampler does)
    shards = [SceneGraphEvaluator(zeroshot_triplets=zs) for _ in range(3)]
    for i, (g, p) in enumerate(images):
        shards[i % 3].update(g, p, image_id=i)
    shards[2].update(*images[0], image_id=0)
    merged = shards[2].merge(shards[0]).merge(shards[1].records)
    _assert_same(merged.compute(), single.compute())
    assert merged.compute()["num_images"] == single.compute()["num_images"]
    # a different image under an existing id is an error, not a duplicate
    merged.update(*images[1], image_id=0)
    with pytest.raises(ValueError, match="image_id 0 was evaluated twice"):
        merged.compute()
    with pytest.raises(ValueError, match="different settings"):
        SceneGraphEvaluator(mode="sgdet").merge(SceneGraphEvaluator(mode="sgcls"))


def test_torchmetrics_wrapper_merge_state():
    from sgseg.evaluation import SceneGraphMetric

    images = _random_images(12, seed=2)
    single = SceneGraphEvaluator()
    for g, p in images:
        single.update(g, p)
    m1, m2 = SceneGraphMetric(), SceneGraphMetric()
    big = 2**30 + 12345  # ids beyond float32's exact integers survive the float state
    m1.update([g for g, _ in images[:5]], [p for _, p in images[:5]], image_id=[big + i for i in range(5)])
    for i, (g, p) in enumerate(images[5:], start=5):
        m2.update(g, p, image_id=big + i)
    m2.update(*images[4], image_id=big + 4)  # a repeat (sampler padding): counted once
    m1.merge_state(m2)
    _assert_same(m1.compute(), single.compute())
    m2.update(
        *images[3], image_id=big + 4
    )  # another image under a used id: an error, so ids were kept exactly
    with pytest.raises(ValueError, match=f"image_id {big + 4} was evaluated twice"):
        m2.compute()


def _ddp_worker(rank: int, world: int, init_file: str, images, out_dir: str) -> None:
    import torch.distributed as dist

    from sgseg.evaluation import SceneGraphMetric

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    metric = SceneGraphMetric()
    # DistributedSampler-style interleaving, padded to equal length by repeating image 0
    ids = list(range(len(images)))
    ids += ids[: (-len(ids)) % world]
    for i in ids[rank::world]:
        metric.update(images[i][0], images[i][1], image_id=i)
    result = metric.compute()  # syncs the states of both ranks
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    # a rank that saw no image at all (torchmetrics gathers an empty tensor for it)
    metric.reset()
    if rank == 0:
        for i, (g, p) in enumerate(images):
            metric.update(g, p, image_id=i)
    torch.save(metric.compute(), os.path.join(out_dir, f"rank{rank}-empty.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    images = _random_images(11, seed=3)  # odd: one rank gets a padded repeat
    single = SceneGraphEvaluator()
    for g, p in images:
        single.update(g, p)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rdv"), images, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        for name in (f"rank{rank}.pt", f"rank{rank}-empty.pt"):
            _assert_same(torch.load(tmp_path / name, weights_only=False), single.compute())
