"""Benchmark of the vectorised scene-graph evaluator against a plain per-image loop implementation.

    python scripts/bench_evaluator.py [--images 5000] [--loop-images 100] [--repeats 3] [--seed 0]

Synthetic SGDet images of realistic size (25 GT objects, 25 detections jittered from them, all 600 ordered
pairs as candidate rows, 15 GT relations, 51 predicate columns, float32 scores, rows ranked as the model
ranks them). Prints images/second (median of ``--repeats`` runs) of ``sgseg.evaluation.SceneGraphEvaluator``
and of :func:`loop_evaluate` run in the same process, and checks that both give the same results: per-image
hit counts equal, every metric equal to 1e-12 (the two take means with differently ordered sums).
The loop is slow (~20-40 ms an image), so it runs on the first ``--loop-images`` images; the vectorised
evaluator is timed on all of them and also run on that prefix for the comparison.

:func:`loop_evaluate` is the independent reference the tests compare against: it follows
``docs/evaluation.md`` with Python loops over rows, candidates and GT relations and shares no code with
``sgseg.evaluation``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

NG_TOP = 100


# ------------------------------------------------------------------------------------ the loop reference
def _iou_plus1(b1: list[float], b2: list[float]) -> float:
    iw = max(min(b1[2], b2[2]) - max(b1[0], b2[0]) + 1.0, 0.0)
    ih = max(min(b1[3], b2[3]) - max(b1[1], b2[1]) + 1.0, 0.0)
    inter = iw * ih
    a1 = (b1[2] - b1[0] + 1.0) * (b1[3] - b1[1] + 1.0)
    a2 = (b2[2] - b2[0] + 1.0) * (b2[3] - b2[1] + 1.0)
    return inter / (a1 + a2 - inter)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def loop_evaluate_image(
    gt: dict,
    pred: dict,
    mode: str,
    ks: tuple[int, ...],
    iou_threshold: float,
    zeroshot: set,
    num_predicates: int,
) -> dict | None:
    """One image → {'R': {K: hit rows}, 'ng': ..., 'rows': [(s_label, o_label, p)], 'zs': [bool]} or None."""
    gt_boxes = _np(gt["boxes"]).astype(np.float64).reshape(-1, 4).tolist()
    gt_labels = [int(v) for v in _np(gt["labels"]).reshape(-1).tolist()]
    rels = [tuple(int(v) for v in row) for row in _np(gt["relations"]).reshape(-1, 3).tolist()]
    pairs = [tuple(int(v) for v in row) for row in _np(pred["rel_pairs"]).reshape(-1, 2).tolist()]
    if not rels or not pairs:
        return None
    rel_scores = _np(pred["rel_scores"])
    if mode == "predcls":
        boxes, labels = gt_boxes, gt_labels
        obj_scores = np.ones(len(gt_labels), dtype=rel_scores.dtype)
    elif mode == "sgcls":
        boxes = gt_boxes
        labels = [int(v) for v in _np(pred["labels"]).reshape(-1).tolist()]
        obj_scores = _np(pred["scores"])
    else:
        boxes = _np(pred["boxes"]).astype(np.float64).reshape(-1, 4).tolist()
        labels = [int(v) for v in _np(pred["labels"]).reshape(-1).tolist()]
        obj_scores = _np(pred["scores"])
    num_cls = num_predicates - 1
    kmax = max(ks)

    # graph constraint: the input rows in order, each with its first-best predicate
    gc = []
    for j in range(min(len(pairs), kmax)):
        best = 1
        for c in range(2, num_cls + 1):
            if rel_scores[j, c] > rel_scores[j, best]:
                best = c
        gc.append((pairs[j][0], pairs[j][1], best))

    # no graph constraint: every (row, predicate), score in the arrays' dtype, ties -> lower (row, predicate)
    cands = []
    for j, (a, b) in enumerate(pairs):
        prod = obj_scores[a] * obj_scores[b]
        for c in range(1, num_cls + 1):
            cands.append((-(prod * rel_scores[j, c]), j, c))
    cands.sort()
    ng = [(pairs[j][0], pairs[j][1], c) for _, j, c in cands[: max(NG_TOP, kmax)]]

    def hit_rows(triplets: list[tuple[int, int, int]]) -> set[int]:
        hit = set()
        for a, b, c in triplets:
            for r, (s, o, p) in enumerate(rels):
                if (
                    p == c
                    and labels[a] == gt_labels[s]
                    and labels[b] == gt_labels[o]
                    and _iou_plus1(gt_boxes[s], boxes[a]) >= iou_threshold
                    and _iou_plus1(gt_boxes[o], boxes[b]) >= iou_threshold
                ):
                    hit.add(r)
        return hit

    rows = [(gt_labels[s], gt_labels[o], p) for s, o, p in rels]
    return {
        "R": {k: hit_rows(gc[:k]) for k in ks},
        "ng": {k: hit_rows(ng[:k]) for k in ks},
        "rows": rows,
        "zs": [row in zeroshot for row in rows],
    }


def loop_evaluate(
    images: list[tuple[dict, dict]],
    mode: str = "sgdet",
    ks: tuple[int, ...] = (20, 50, 100),
    iou_threshold: float = 0.5,
    zeroshot_triplets: Any = None,
    num_predicates: int = 51,
) -> tuple[dict[str, Any], list[dict | None]]:
    """(metrics as SceneGraphEvaluator.compute names them, per-image results) for a list of (gt, pred)."""
    zeroshot = set()
    if zeroshot_triplets is not None:
        zeroshot = {tuple(int(v) for v in row) for row in _np(zeroshot_triplets).reshape(-1, 3).tolist()}
    per_image = [
        loop_evaluate_image(g, p, mode, ks, iou_threshold, zeroshot, num_predicates) for g, p in images
    ]
    counted = [r for r in per_image if r is not None]
    num_cls = num_predicates - 1

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    out: dict[str, Any] = {}
    for k in ks:
        for name, key in (("R", "R"), ("ngR", "ng")):
            out[f"{name}@{k}"] = mean([len(r[key][k]) / len(r["rows"]) for r in counted])
            zs_recalls = []
            for r in counted:
                zs_rows = [i for i, z in enumerate(r["zs"]) if z]
                if zs_rows:
                    zs_recalls.append(len([i for i in zs_rows if i in r[key][k]]) / len(zs_rows))
            out[("zsR" if key == "R" else "ng-zsR") + f"@{k}"] = mean(zs_recalls)
            records: dict[int, list[float]] = {p: [] for p in range(1, num_cls + 1)}
            for r in counted:
                for p in sorted({row[2] for row in r["rows"]}):
                    idx = [i for i, row in enumerate(r["rows"]) if row[2] == p]
                    records[p].append(len([i for i in idx if i in r[key][k]]) / len(idx))
            per_pred = [mean(records[p]) if records[p] else 0.0 for p in range(1, num_cls + 1)]
            prefix = "" if key == "R" else "ng-"
            out[f"{prefix}mR@{k}"] = sum(per_pred) / num_cls
            out[f"{prefix}mR_per_predicate@{k}"] = per_pred
    out["num_images"] = len(counted)
    return out, per_image


# ----------------------------------------------------------------------------------------- synthetic data
def synthetic_images(
    num_images: int, seed: int = 0, num_objects: int = 25, num_rels: int = 15, num_predicates: int = 51
) -> list[tuple[dict, dict]]:
    """SGDet-like images: detections are jittered GT boxes (mostly IoU >= 0.5), 85% right labels."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        w, h = rng.uniform(500, 1024), rng.uniform(400, 1024)
        xy = rng.uniform(0, 1, (num_objects, 2)) * [w * 0.8, h * 0.8]
        wh = rng.uniform(16, 300, (num_objects, 2))
        gt_boxes = np.round(np.concatenate([xy, xy + wh], 1))
        gt_labels = rng.integers(1, 151, num_objects)
        subj = rng.integers(0, num_objects, num_rels)
        obj = (subj + rng.integers(1, num_objects, num_rels)) % num_objects
        pred_cls = np.minimum(rng.geometric(0.15, num_rels), num_predicates - 1)  # long-tailed predicates
        relations = np.stack([subj, obj, pred_cls], 1)

        jitter = rng.normal(0, 0.12, (num_objects, 4)) * np.concatenate([wh, wh], 1)
        boxes = gt_boxes + jitter
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.uniform(size=num_objects) < 0.85, gt_labels, rng.integers(1, 151, num_objects))
        scores = rng.uniform(0.2, 1.0, num_objects).astype(np.float32)
        a, b = np.meshgrid(np.arange(num_objects), np.arange(num_objects), indexing="ij")
        keep = a != b
        pairs = np.stack([a[keep], b[keep]], 1)
        logits = rng.normal(0, 2, (pairs.shape[0], num_predicates))
        logits[:, 0] += 3  # background dominates, as in trained models
        # a model that has learnt something: the GT predicate of a GT pair often stands out
        # (detection i is jittered from GT object i, so pair row = subject * (n - 1) + object - (object > subject))
        gt_rows = subj * (num_objects - 1) + obj - (obj > subj)
        learnt = rng.uniform(size=num_rels) < 0.7
        logits[gt_rows[learnt], pred_cls[learnt]] += rng.uniform(3, 7, int(learnt.sum()))
        rel_scores = np.exp(logits - logits.max(1, keepdims=True))
        rel_scores = (rel_scores / rel_scores.sum(1, keepdims=True)).astype(np.float32)
        rank = rel_scores[:, 1:].max(1) * scores[pairs[:, 0]] * scores[pairs[:, 1]]
        order = np.argsort(-rank, kind="stable")
        gt = {"boxes": gt_boxes.astype(np.float32), "labels": gt_labels, "relations": relations}
        pred = {
            "boxes": boxes.astype(np.float32),
            "labels": labels,
            "scores": scores,
            "rel_pairs": pairs[order],
            "rel_scores": rel_scores[order],
        }
        images.append((gt, pred))
    return images


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return abs(a - b) <= 1e-12


def main() -> None:
    from sgseg.evaluation import SceneGraphEvaluator  # after argparse: `--help` stays instant

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000, help="images for the vectorised evaluator")
    parser.add_argument("--loop-images", type=int, default=100, help="images for the loop baseline")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ks = (20, 50, 100)
    zs = np.stack(np.meshgrid(np.arange(1, 151, 7), np.arange(1, 151, 5), np.arange(1, 51, 3)), -1).reshape(
        -1, 3
    )
    t0 = time.perf_counter()
    images = synthetic_images(args.images, args.seed)
    print(f"made {len(images)} synthetic sgdet images in {time.perf_counter() - t0:.1f} s")
    loop_images = images[: args.loop_images]

    def run_vectorised(imgs: list) -> SceneGraphEvaluator:
        ev = SceneGraphEvaluator("sgdet", 51, ks, 0.5, zs)
        for g, p in imgs:
            ev.update(g, p)
        return ev

    def timed(fn, n: int) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return n / statistics.median(times)

    vec_rate = timed(lambda: run_vectorised(images).compute(), len(images))
    loop_rate = timed(lambda: loop_evaluate(loop_images, "sgdet", ks, 0.5, zs), len(loop_images))

    # identical results on the loop's images
    ev = run_vectorised(loop_images)
    vec = ev.compute()
    ref, per_image = loop_evaluate(loop_images, "sgdet", ks, 0.5, zs)
    nk = len(ks)
    rec = ev.records
    for i, r in enumerate(per_image):
        got = rec[i, 4 : 4 + 2 * nk].tolist()
        want = [len(r["R"][k]) for k in ks] + [len(r["ng"][k]) for k in ks]
        assert got == want, f"image {i}: per-image hits differ: vectorised {got} vs loop {want}"
    mismatched = [key for key in ref if not _same(ref[key], vec[key])]
    assert not mismatched, f"metrics differ: {mismatched}"

    print()
    print(f"| implementation     | images | images/s (median of {args.repeats}) |")
    print("|--------------------|-------:|---------------------:|")
    print(f"| vectorised (numpy) | {len(images):6d} | {vec_rate:20.1f} |")
    print(f"| per-image loop     | {len(loop_images):6d} | {loop_rate:20.1f} |")
    print(f"\nspeed-up: {vec_rate / loop_rate:.1f}x")
    print(
        f"identical results on the {len(loop_images)} loop images: per-image hits equal, all "
        f"{len(ref)} metrics equal to 1e-12 (R@100 = {vec['R@100']:.4f}, ngR@100 = {vec['ngR@100']:.4f}, "
        f"mR@100 = {vec['mR@100']:.4f}, zsR@100 = {vec['zsR@100']:.4f})"
    )


if __name__ == "__main__":
    main()
