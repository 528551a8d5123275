"""Property tests of the scene-graph evaluator (hypothesis), against the independent loop implementation of
``scripts/bench_evaluator.py`` and against invariances of the protocol.

The random scenes are small and coarse on purpose: boxes on a 0..12 integer grid (IoU+1 of exactly 0.5
happens), 3 object labels, few predicates, scores from {0, 1/8, 1/4, 1/2, 1} so that argmax ties and
candidate-score ties are common (ties are where a vectorised rewrite most easily departs from the rules).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgseg.evaluation import SceneGraphEvaluator

_path = Path(__file__).resolve().parent.parent / "scripts" / "bench_evaluator.py"
_spec = importlib.util.spec_from_file_location("bench_evaluator", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SETTINGS = settings(
    max_examples=int(os.environ.get("SGSEG_HYPOTHESIS_EXAMPLES", 120)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
LEVELS = np.array([0.0, 0.125, 0.25, 0.5, 1.0])


def _scene(rng: np.random.Generator, mode: str, num_predicates: int, max_rows: int) -> tuple[dict, dict]:
    n = int(rng.integers(0, 6))
    xy = rng.integers(0, 11, (n, 2))
    gt_boxes = np.concatenate([xy, xy + rng.integers(0, 7, (n, 2))], 1).astype(np.float64)
    gt_labels = rng.integers(1, 4, n)
    num_rels = int(rng.integers(0, 7)) if n else 0
    top_pred = min(4, num_predicates - 1)
    relations = np.stack(
        [
            rng.integers(0, max(n, 1), num_rels),
            rng.integers(0, max(n, 1), num_rels),
            rng.integers(1, top_pred + 1, num_rels),
        ],
        1,
    ).reshape(-1, 3)
    m = n if mode != "sgdet" else int(rng.integers(0, 6))
    src = np.arange(m)  # the GT object each predicted object comes from (in predcls/sgcls: itself)
    if mode == "sgdet" and m and n and rng.uniform() < 0.7:  # detections near the GT objects
        src = rng.integers(0, n, m)
        boxes = np.maximum(gt_boxes[src] + rng.integers(-2, 3, (m, 4)), 0)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        labels = np.where(rng.uniform(size=m) < 0.8, gt_labels[src], rng.integers(1, 4, m))
    elif mode == "sgdet":
        xy = rng.integers(0, 11, (m, 2))
        boxes = np.concatenate([xy, xy + rng.integers(0, 7, (m, 2))], 1).astype(np.float64)
        labels = rng.integers(1, 4, m)
        src = np.full(m, -1)
    else:  # the GT objects; sgcls predicts their labels (mostly right)
        boxes = gt_boxes
        labels = np.where(rng.uniform(size=m) < 0.8, gt_labels, rng.integers(1, 4, m))
    dtype = np.float32 if rng.uniform() < 0.5 else np.float64
    scores = rng.choice(LEVELS[2:], m).astype(dtype)
    rows = int(rng.integers(max_rows // 2 if rng.uniform() < 0.5 else 0, max_rows + 1)) if m else 0
    pairs = rng.integers(0, max(m, 1), (rows, 2))
    rel_scores = rng.choice(LEVELS, (rows, num_predicates), p=[0.55, 0.2, 0.12, 0.08, 0.05]).astype(dtype)
    # a model that has learnt something: some rows sit on a GT pair, some favour its predicate
    for j in np.flatnonzero(rng.uniform(size=rows) < 0.5) if num_rels else []:
        s, o, p = relations[rng.integers(0, num_rels)]
        subj, obj = np.flatnonzero(src == s), np.flatnonzero(src == o)
        if subj.size and obj.size:
            pairs[j] = rng.choice(subj), rng.choice(obj)
            if rng.uniform() < 0.5:
                rel_scores[j, p] = 1.0
    if rows and rng.uniform() < 0.5:  # concentrate mass on the few predicates the GT uses
        rel_scores[:, top_pred + 1 :] *= 0.125
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations}
    pred = {"boxes": boxes, "labels": labels, "scores": scores, "rel_pairs": pairs, "rel_scores": rel_scores}
    return gt, pred


@st.composite
def datasets(draw):
    mode = draw(st.sampled_from(["predcls", "sgcls", "sgdet"]))
    num_predicates = draw(st.sampled_from([3, 5, 51]))
    ks = tuple(
        sorted(draw(st.sets(st.sampled_from([1, 2, 3, 5, 10, 20, 50, 100, 120]), min_size=1, max_size=4)))
    )
    seed = draw(st.integers(0, 2**32 - 1))
    num_images = draw(st.integers(1, 5))
    # 60 rows x 2 predicates > 100 candidates: the top-100 cut bites; > 100 rows: the row pre-selection too
    max_rows = draw(st.sampled_from([3, 12, 60, 150]))
    rng = np.random.default_rng(seed)
    images = [_scene(rng, mode, num_predicates, max_rows) for _ in range(num_images)]
    zs = np.array([[a, b, p] for a in (1, 2, 3) for b in (1, 2, 3) for p in (1, 2) if rng.uniform() < 0.4])
    zs = zs.reshape(-1, 3) if zs.size else None
    return {"mode": mode, "num_predicates": num_predicates, "ks": ks, "zs": zs, "images": images}


def _evaluate(d: dict, images=None) -> SceneGraphEvaluator:
    ev = SceneGraphEvaluator(d["mode"], d["num_predicates"], d["ks"], 0.5, d["zs"])
    for g, p in d["images"] if images is None else images:
        ev.update(g, p)
    return ev


def _close(a, b, tol: float = 1e-12) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= tol


@SETTINGS
@given(datasets())
def test_matches_the_loop_implementation(d):
    got = _evaluate(d).compute()
    want, _ = bench.loop_evaluate(d["images"], d["mode"], d["ks"], 0.5, d["zs"], d["num_predicates"])
    for key, value in want.items():
        assert _close(got[key], value), (key, got[key], value)


@SETTINGS
@given(datasets())
def test_ranges_and_monotone_in_k(d):
    out = _evaluate(d).compute()
    ks = d["ks"]
    for name in ("R", "ngR", "zsR", "ng-zsR", "mR", "ng-mR"):
        values = [out[f"{name}@{k}"] for k in ks]
        if (
            out["num_images"] == 0
            and name in ("R", "ngR")
            or name.endswith("zsR")
            and not out["num_images_zeroshot"]
        ):
            assert all(math.isnan(v) for v in values)
            continue
        assert all(0.0 <= v <= 1.0 for v in values)
        assert all(a <= b for a, b in zip(values, values[1:])), (name, values)
    for k in ks:
        per_pred = out[f"mR_per_predicate@{k}"]
        assert len(per_pred) == d["num_predicates"] - 1 and all(0.0 <= v <= 1.0 for v in per_pred)


@SETTINGS
@given(datasets(), st.integers(0, 2**32 - 1))
def test_invariant_to_object_order_and_relation_order(d, seed):
    rng = np.random.default_rng(seed)
    shuffled = []
    for g, p in d["images"]:
        g, p = dict(g), dict(p)
        # predicted objects permuted (sgdet: their own; predcls/sgcls: they are the GT objects, permuted below)
        if d["mode"] == "sgdet":
            perm = rng.permutation(len(p["labels"]))
            inv = np.argsort(perm)
            p.update(boxes=p["boxes"][perm], labels=p["labels"][perm], scores=p["scores"][perm])
            p["rel_pairs"] = inv[p["rel_pairs"]]
        # GT objects permuted, indices remapped; GT relation rows permuted
        perm = rng.permutation(len(g["labels"]))
        inv = np.argsort(perm)
        g.update(boxes=g["boxes"][perm], labels=g["labels"][perm])
        g["relations"] = np.concatenate([inv[g["relations"][:, :2]], g["relations"][:, 2:]], 1)
        g["relations"] = g["relations"][rng.permutation(len(g["relations"]))]
        if d["mode"] != "sgdet":
            p.update(labels=p["labels"][perm], scores=p["scores"][perm], boxes=p["boxes"][perm])
            p["rel_pairs"] = inv[p["rel_pairs"]]
        shuffled.append((g, p))
    a, b = _evaluate(d).compute(), _evaluate(d, shuffled).compute()
    for key in a:
        assert _close(a[key], b[key], 0.0), key


@SETTINGS
@given(datasets(), st.integers(0, 2**32 - 1))
def test_merging_shards_and_repeating_the_dataset_change_nothing(d, seed):
    single = _evaluate(d).compute()
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, 3, len(d["images"]))
    shards = [_evaluate(d, [im for im, o in zip(d["images"], owner) if o == r]) for r in range(3)]
    merged = shards[1].merge(shards[2]).merge(shards[0]).compute()
    twice = _evaluate(d, d["images"] * 2).compute()
    for key in single:
        if key.startswith("num_"):
            continue
        # exactly equal: the means use an exactly rounded sum, independent of image order and repetition
        assert _close(single[key], merged[key], 0.0) and _close(single[key], twice[key], 0.0), key


@SETTINGS
@given(datasets())
def test_one_predicate_per_row_makes_both_lists_agree(d):
    """ngR@K >= R@K is false in general (see test_evaluator); it holds, with equality for K <= P, when every
    row has a single positive predicate and rows are ranked by strictly decreasing score: then the top K
    candidates are exactly the first K rows with their argmax."""
    images = []
    for g, p in d["images"]:
        p = dict(p)
        rows = len(p["rel_pairs"])
        rng = np.random.default_rng(rows)
        rel = np.zeros((rows, d["num_predicates"]))
        rel[np.arange(rows), rng.integers(1, min(5, d["num_predicates"]), rows)] = 1.0
        # strictly decreasing ranking scores: divide out the object scores, then rank
        obj = np.ones(len(g["labels"])) if d["mode"] == "predcls" else p["scores"].astype(np.float64)
        prod = obj[p["rel_pairs"][:, 0]] * obj[p["rel_pairs"][:, 1]] if rows else np.zeros(0)
        rel *= (np.linspace(0.9, 0.1, rows) / np.maximum(prod, 1e-9))[:, None] if rows else 1.0
        p["rel_scores"], p["scores"] = rel, obj
        images.append((g, p))
    ev = _evaluate(d, images)
    out = ev.compute()
    layout = ev.protocol.layout
    hits = ev.records[:, layout.hits].reshape(-1, 4, len(d["ks"]))
    for i, (_, p) in enumerate(images):
        for ki, k in enumerate(d["ks"]):
            assert hits[i, 1, ki] >= hits[i, 0, ki]
            if k <= len(p["rel_pairs"]):
                assert hits[i, 1, ki] == hits[i, 0, ki]
    for k in d["ks"]:
        assert out[f"ngR@{k}"] >= out[f"R@{k}"] or math.isnan(out[f"R@{k}"])


@SETTINGS
@given(
    st.integers(1, 300),
    st.integers(1, 8),
    st.integers(1, 150),
    st.sampled_from([2, 3, 6]),
    st.integers(0, 2**32 - 1),
)
def test_top_candidates_is_a_stable_sort_prefix(rows, cols, n, levels, seed):
    """The partial selection equals the first n of a full stable sort by descending score (ties: flat index)."""
    from sgseg.evaluation.scene_graph import _top_candidates

    rng = np.random.default_rng(seed)
    cand = rng.integers(0, levels, (rows, cols)) / levels  # few distinct values: ties everywhere
    want = np.argsort(-cand.ravel(), kind="stable")[:n]
    np.testing.assert_array_equal(_top_candidates(cand, n), want)


@SETTINGS
@given(datasets())
def test_seen_and_zero_shot_split_of_the_counts_equals_filtering_the_gt(d):
    """The per-image counts cut to the seen / zero-shot GT relations (split_counts) give what the evaluator gives
    on ground truth holding only those relations (the route of ``sgseg.evaluate relations=...``), the
    zero-shot R@K is the evaluator's zsR@K, and the rows with both objects matched give its recall given the
    objects."""
    from sgseg.evaluation.scene_graph import recall_from_per_image

    ev = _evaluate(d)
    counts = ev.protocol.per_image(ev.records)
    zs = {tuple(t) for t in (d["zs"] if d["zs"] is not None else np.zeros((0, 3), int)).tolist()}
    for relations in ("seen", "zeroshot"):
        images = []
        for g, p in d["images"]:
            rels = np.asarray(g["relations"]).reshape(-1, 3)
            labels = np.asarray(g["labels"])
            is_zs = np.array([(labels[s], labels[o], c) in zs for s, o, c in rels.tolist()], dtype=bool)
            keep = is_zs if relations == "zeroshot" else ~is_zs
            images.append((g | {"relations": rels[keep]}, p))
        want = SceneGraphEvaluator(d["mode"], d["num_predicates"], d["ks"], 0.5, None)
        for g, p in images:
            want.update(g, p)
        want = want.compute()
        for k in d["ks"]:
            got = recall_from_per_image(counts, k, relations=relations)
            for key in (f"R@{k}", f"mR@{k}", f"mR_per_predicate@{k}"):
                assert _close(got[key], want[key]), (relations, key, got[key], want[key])
            if relations == "zeroshot":
                assert _close(got[f"R@{k}"], ev.compute()[f"zsR@{k}"])
    if d["mode"] != "predcls":  # the rows with both objects matched: the evaluator's recall given the objects
        out = ev.compute()
        for k in d["ks"]:
            got = recall_from_per_image(counts, k, relations="objects_ok")
            assert _close(got[f"R@{k}"], out[f"R@{k}_given_objects"])
            assert _close(got[f"mR@{k}"], out[f"mR@{k}_given_objects"])
            assert _close(got[f"mR_per_predicate@{k}"], out[f"mR_per_predicate@{k}_given_objects"])
