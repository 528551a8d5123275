"""Scene-graph recall: R@K, ngR@K, zsR@K, ng-zsR@K, mR@K, ng-mR@K (+ pair accuracy A@K) of the VG150 protocol,
and the object labels behind them (``obj_acc`` in SGCls, ``obj_recall`` in SGDet; the recall split into relations
with both objects matched, ``rel_objects_ok``, and recall over those, ``R@K_given_objects`` / ``mR@K_given_objects``).

Where this sits: the last stage of the pipeline. The LightningModules split their flat
:class:`~sgseg.structures.RelationPredictions` per image (``per_image``, rows already ranked) and hand each
image's ground truth and prediction to :meth:`SceneGraphEvaluator.update`; ``compute`` gives the numbers the
papers' tables report. The protocol is ``docs/evaluation.md`` of the shared docs, reproduced quirk for quirk
(per-image means, "+1" IoU, many-to-many matching, input row order as the ranking, top-100 candidate list
for the no-graph-constraint variant, absent predicates scoring 0 in mR, ...).

How it is computed (no Python loop over predictions or GT relations inside an image):

* ``obj_ok[g, m]``: GT object ``g`` and predicted object ``m`` have equal labels and ``IoU+1 >= thr``;
* for a ranked candidate list (rows with their argmax predicate, or the top-100 (row, predicate) pairs) the
  GT-by-candidate hit matrix is ``obj_ok[s][:, a] & obj_ok[o][:, b] & (p == c)``;
* the first hit rank of every GT row, compared with each K, gives the hits of every prefix at once
  (many-to-many matching: a GT row is hit when *any* candidate of the prefix hits it).

Each image leaves one fixed-length ``int32`` record (:class:`RecordLayout`): counts only, so merging
evaluators across processes is concatenation, and the dataset means are taken with an exactly rounded,
order-independent sum (``math.fsum``): a DDP run gives bit-identical numbers to a single process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgseg.ops.boxes import box_iou_plus1, to_numpy

MODES = ("predcls", "sgcls", "sgdet")
NG_TOP = 100  # length of the no-graph-constraint candidate list (the protocol's "top 100")
_I32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class RecordLayout:
    """Column layout of one image's ``int32`` record.

    ``image_id`` (-1 when not given), ``counted`` (0 = skipped: no GT relation or no predicted row),
    ``n_rel`` (GT relation rows R), ``n_zs`` (zero-shot GT rows), then per K: hits of the graph-constrained
    list, of the no-graph-constraint list, and the same restricted to zero-shot rows; then the GT row count
    of every predicate 1..C, and per K the hits per predicate (graph constraint, then no graph constraint);
    then per K the pair-accuracy hits (A@K, predcls/sgcls; 0 in sgdet); then the image's GT objects and
    how many of them the prediction labels right (sgcls: the label predicted for that GT box; sgdet: some
    predicted box of its label at IoU+1 >= the threshold; both 0 in predcls, where the labels are given);
    then, per predicate 1..C the GT rows whose subject and object are *both* matched by some predicted object
    (label equal, IoU+1 >= the threshold) — the only rows any candidate can hit (0 in predcls and for skipped
    images); last, the zero-shot GT rows per predicate 1..C and per K their hits (graph constraint) — with the
    columns above they split mR@K into the seen and the zero-shot triplets (:func:`recall_from_per_image`).
    """

    num_ks: int
    num_classes: int  # C = num_predicates - 1 foreground predicates

    @property
    def hits(self) -> slice:  # (4, num_ks): gc, ng, zs-gc, zs-ng
        return slice(4, 4 + 4 * self.num_ks)

    @property
    def pred_count(self) -> slice:  # (C,)
        start = 4 + 4 * self.num_ks
        return slice(start, start + self.num_classes)

    @property
    def pred_hits(self) -> slice:  # (2, num_ks, C): gc, ng
        start = self.pred_count.stop
        return slice(start, start + 2 * self.num_ks * self.num_classes)

    @property
    def pair_hits(self) -> slice:  # (num_ks,): A@K hits
        start = self.pred_hits.stop
        return slice(start, start + self.num_ks)

    @property
    def objects(self) -> slice:  # (2,): GT objects, of them labelled right
        start = self.pair_hits.stop
        return slice(start, start + 2)

    @property
    def pred_count_ok(self) -> slice:  # (C,): GT rows per predicate whose two objects are matched
        start = self.objects.stop
        return slice(start, start + self.num_classes)

    @property
    def zs_pred_count(self) -> slice:  # (C,): zero-shot GT rows per predicate
        start = self.pred_count_ok.stop
        return slice(start, start + self.num_classes)

    @property
    def zs_pred_hits(self) -> slice:  # (num_ks, C): their hits, graph constraint
        start = self.zs_pred_count.stop
        return slice(start, start + self.num_ks * self.num_classes)

    @property
    def width(self) -> int:
        return self.zs_pred_hits.stop


# ----------------------------------------------------------------------------------------------- validation


def _where(index: int, image_id: int | None) -> str:
    return f"image {index}" if image_id is None else f"image {index} (image_id {image_id})"


def _field(d: Any, side: str, key: str, where: str, required: bool = True) -> np.ndarray | None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: `{side}` must be a dict of arrays, got {type(d).__name__}")
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"{where}: {side}['{key}'] is missing (keys given: {sorted(d)})")
        return None
    try:
        return to_numpy(d[key])
    except Exception as err:  # np.asarray of ragged lists and the like
        raise ValueError(f"{where}: {side}['{key}'] is not an array ({err})") from err


def _real(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{where}: {name} must be a real-valued array, got dtype {a.dtype}")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{where}: {name} contains NaN/inf (first at index {tuple(int(i) for i in bad)})")
    return a


def _index(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"{where}: {name} must hold integers, got non-integer values")
        return a.astype(np.int64)
    raise ValueError(f"{where}: {name} must be an integer array, got dtype {a.dtype}")


def _shape(a: np.ndarray, name: str, where: str, rows: int | None, cols: int | None, what: str) -> None:
    """Check ``a`` is 1-D (cols None) or 2-D with ``cols`` columns, and has ``rows`` rows if given."""
    if cols is None:
        if a.ndim != 1:
            raise ValueError(f"{where}: {name} must be {what}, got shape {a.shape}")
    else:
        if a.ndim != 2:
            raise ValueError(f"{where}: {name} must be {what}, got shape {a.shape}")
        if a.shape[1] != cols:
            raise ValueError(f"{where}: {name} has {a.shape[1]} columns, expected {cols}")
    if rows is not None and a.shape[0] != rows:
        raise ValueError(f"{where}: {name} has {a.shape[0]} rows, expected {rows}")


def _in_range(a: np.ndarray, name: str, where: str, lo: int, hi: int, hint: str = "") -> None:
    if a.size and (a.min() < lo or a.max() > hi):
        bad = np.argwhere((a < lo) | (a > hi))[0]
        pos = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"{where}: {name}[{pos}] = {int(a[tuple(bad)])} is out of range {lo}..{hi}{hint}")


def _boxes(a: np.ndarray, name: str, where: str, rows: int | None) -> np.ndarray:
    if a.size == 0 and a.ndim == 1:
        a = a.reshape(0, 4)  # an empty list
    _shape(a, name, where, rows, 4, "Float[N, 4] xyxy")
    a = _real(a, name, where).astype(np.float64, copy=False)
    bad = (a[:, 2] < a[:, 0]) | (a[:, 3] < a[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: {name}[{i}] = {a[i].tolist()} has x2 < x1 or y2 < y1 (boxes must be xyxy)"
        )
    return a


# ------------------------------------------------------------------------------------------- the protocol


def _top_candidates(cand: np.ndarray, n: int) -> np.ndarray:
    """Flat indices (row-major into ``cand`` Float[P, C]) of the ``n`` highest scores, best first.

    Ties are broken by the lower flat index (earlier row, then lower predicate), deterministically; the
    reference sorts with numpy's unstable quicksort, whose tie order is not defined.
    Only rows whose best candidate is among the ``n`` best row maxima can contribute (at least ``n``
    candidates score >= the n-th row maximum), so the selection runs on those rows only.
    """
    num_rows, num_cls = cand.shape
    if num_rows > n:
        row_max = cand.max(1)
        v = np.partition(row_max, num_rows - n)[num_rows - n]
        rows = np.flatnonzero(row_max >= v)
        sub = cand[rows].ravel()
        flat = (rows[:, None] * num_cls + np.arange(num_cls)).ravel()
    else:
        sub = cand.ravel()
        flat = np.arange(sub.size)
    if sub.size > n:
        kth = np.partition(sub, sub.size - n)[sub.size - n]
        above = np.flatnonzero(sub > kth)
        tied = np.flatnonzero(sub == kth)[: n - above.size]  # ascending position = ascending flat index
        sel = np.concatenate([above, tied])
        sub, flat = sub[sel], flat[sel]
    return flat[np.lexsort((flat, -sub))]


def _first_hit(hit: np.ndarray) -> np.ndarray:
    """Int64[R]: rank of the first candidate hitting each GT row (``hit`` Bool[R, L]); L+huge when none."""
    if hit.shape[1] == 0:
        return np.full(hit.shape[0], np.iinfo(np.int64).max)
    return np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)


@dataclass(frozen=True)
class _Protocol:
    """The evaluator's configuration and its two pure functions: one image → record, records → metrics."""

    mode: str
    num_predicates: int
    ks: tuple[int, ...]
    iou_threshold: float
    zeroshot_keys: np.ndarray | None  # sorted unique int64 keys of (subject label, object label, predicate)
    num_object_classes: int

    @property
    def layout(self) -> RecordLayout:
        return RecordLayout(len(self.ks), self.num_predicates - 1)

    def same_as(self, other: _Protocol) -> bool:
        zs_a, zs_b = self.zeroshot_keys, other.zeroshot_keys
        same_zs = (zs_a is None and zs_b is None) or (
            zs_a is not None and zs_b is not None and np.array_equal(zs_a, zs_b)
        )
        return (
            self.mode == other.mode
            and self.num_predicates == other.num_predicates
            and self.ks == other.ks
            and self.iou_threshold == other.iou_threshold
            and self.num_object_classes == other.num_object_classes
            and same_zs
        )

    def triplet_keys(self, subj: np.ndarray, obj: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return (subj * self.num_object_classes + obj) * self.num_predicates + pred

    def is_zeroshot(self, subj: np.ndarray, obj: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Bool[R]: whether each (subject label, object label, predicate) is a zero-shot triplet (all False
        without zero-shot triplets)."""
        keys = self.triplet_keys(subj, obj, pred)
        if self.zeroshot_keys is None or not self.zeroshot_keys.size or not keys.size:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.zeroshot_keys, keys), self.zeroshot_keys.size - 1)
        return self.zeroshot_keys[pos] == keys

    # ------------------------------------------------------------------------------------------ one image
    def evaluate_image(self, gt: Any, pred: Any, index: int, image_id: int | None) -> np.ndarray:
        where = _where(index, image_id)
        num_cls = self.num_predicates - 1
        max_label = self.num_object_classes - 1

        # --- ground truth
        gt_boxes = _boxes(_field(gt, "gt", "boxes", where), "gt['boxes']", where, None)
        n_gt = gt_boxes.shape[0]
        gt_labels = _field(gt, "gt", "labels", where)
        _shape(gt_labels, "gt['labels']", where, n_gt, None, "Long[N] (one per GT box)")
        gt_labels = _index(gt_labels, "gt['labels']", where)
        _in_range(gt_labels, "gt['labels']", where, 1, max_label)
        rels = _field(gt, "gt", "relations", where)
        if rels.size == 0 and rels.ndim == 1:
            rels = rels.reshape(0, 3)  # an empty list
        _shape(rels, "gt['relations']", where, None, 3, "Long[R, 3] rows (subject, object, predicate)")
        rels = _index(rels, "gt['relations']", where)
        _in_range(rels[:, :2], "gt['relations']", where, 0, n_gt - 1, f" (N = {n_gt} GT objects)")
        _in_range(rels[:, 2:], "gt['relations'][:, 2:]", where, 1, num_cls, " (predicates)")

        # --- prediction; with GT boxes (predcls, sgcls) the predicted objects *are* the GT objects
        rel_pairs = _field(pred, "pred", "rel_pairs", where)
        if rel_pairs.size == 0 and rel_pairs.ndim == 1:
            rel_pairs = rel_pairs.reshape(0, 2)
        _shape(rel_pairs, "pred['rel_pairs']", where, None, 2, "Long[P, 2] (subject, object) indices")
        rel_pairs = _index(rel_pairs, "pred['rel_pairs']", where)
        num_rows = rel_pairs.shape[0]
        rel_scores = _field(pred, "pred", "rel_scores", where)
        if rel_scores.size == 0 and rel_scores.ndim == 1:
            rel_scores = rel_scores.reshape(0, self.num_predicates)
        _shape(rel_scores, "pred['rel_scores']", where, num_rows, self.num_predicates, "Float[P, C_rel]")
        rel_scores = _real(rel_scores, "pred['rel_scores']", where)

        if self.mode == "sgdet":
            boxes = _boxes(_field(pred, "pred", "boxes", where), "pred['boxes']", where, None)
            n_obj = boxes.shape[0]
            what = "one per predicted box"
        else:
            n_obj = n_gt
            what = f"{self.mode} uses the GT boxes: one per GT object, N = {n_gt}"
            given_boxes = _field(pred, "pred", "boxes", where, required=False)
            if given_boxes is not None and given_boxes.shape[:1] != (n_gt,):
                raise ValueError(
                    f"{where}: pred['boxes'] has {given_boxes.shape[0] if given_boxes.ndim else 0} rows, "
                    f"expected {n_gt}: in {self.mode} the predicted objects are the GT objects "
                    "(pred['rel_pairs'] index GT objects, pred['boxes'] is ignored)"
                )
            boxes = gt_boxes
        if self.mode == "predcls":
            for key in ("labels", "scores"):  # ignored, but a different count betrays other indices
                given = _field(pred, "pred", key, where, required=False)
                if given is not None and given.shape[:1] != (n_gt,):
                    raise ValueError(
                        f"{where}: pred['{key}'] has shape {given.shape}, expected ({n_gt},): {what} "
                        f"(pred['{key}'] is ignored in predcls, but its length shows what rel_pairs index)"
                    )
            labels = gt_labels
            scores = np.ones(n_gt, dtype=rel_scores.dtype)
        else:
            labels = _field(pred, "pred", "labels", where)
            _shape(labels, "pred['labels']", where, n_obj, None, f"Long[M] ({what})")
            labels = _index(labels, "pred['labels']", where)
            _in_range(labels, "pred['labels']", where, 1, max_label)
            scores = _field(pred, "pred", "scores", where)
            _shape(scores, "pred['scores']", where, n_obj, None, f"Float[M] ({what})")
            scores = _real(scores, "pred['scores']", where)
        hint = f" ({n_obj} predicted objects" + ("" if self.mode == "sgdet" else " = the GT objects") + ")"
        _in_range(rel_pairs, "pred['rel_pairs']", where, 0, n_obj - 1, hint)

        # --- the record
        lay = self.layout
        nk = len(self.ks)
        rec = np.zeros(lay.width, dtype=np.int32)
        rec[0] = -1 if image_id is None else image_id
        n_rel = rels.shape[0]
        rec[2] = n_rel
        gt_pred = rels[:, 2]
        is_zs = self.is_zeroshot(gt_labels[rels[:, 0]], gt_labels[rels[:, 1]], gt_pred)
        rec[3] = int(is_zs.sum())
        rec[lay.pred_count] = np.bincount(gt_pred - 1, minlength=num_cls)
        rec[lay.zs_pred_count] = np.bincount(gt_pred[is_zs] - 1, minlength=num_cls)

        def matches() -> np.ndarray:
            """obj_ok[g, m]: GT object g and predicted object m match (labels equal and IoU+1 >= threshold)."""
            return (gt_labels[:, None] == labels[None, :]) & (
                box_iou_plus1(gt_boxes, boxes) >= self.iou_threshold
            )

        # the object labels (every image, with or without relations): sgcls compares each GT box's own
        # predicted label (another GT box of the same label on top of it does not count), sgdet asks for any
        # predicted box of the right label that matches it
        obj_ok = None
        if self.mode == "sgcls":
            rec[lay.objects] = n_gt, int((labels == gt_labels).sum())
        elif self.mode == "sgdet":
            obj_ok = matches()
            rec[lay.objects] = n_gt, int(obj_ok.any(1).sum())
        if n_rel == 0 or num_rows == 0:
            return rec  # skipped: enters no recall average
        rec[1] = 1
        if obj_ok is None:
            obj_ok = matches()
        ok_subj = obj_ok[rels[:, 0]]  # Bool[R, M]
        ok_obj = obj_ok[rels[:, 1]]
        if self.mode != "predcls":
            # GT rows with both objects matched: a hit needs this, so hits / these = recall given the labels
            both = ok_subj.any(1) & ok_obj.any(1)
            rec[lay.pred_count_ok] = np.bincount(gt_pred[both] - 1, minlength=num_cls)
        kmax = max(self.ks)
        subj, obj = rel_pairs[:, 0], rel_pairs[:, 1]

        # graph constraint: the first K input rows, each with its argmax predicate (ties -> lowest id)
        n_gc = min(num_rows, kmax)
        gc_pred = rel_scores[:n_gc, 1:].argmax(1) + 1
        hit_gc = ok_subj[:, subj[:n_gc]] & ok_obj[:, obj[:n_gc]] & (gt_pred[:, None] == gc_pred[None, :])

        # no graph constraint: every (row, predicate) scored scores[s] * scores[o] * rel_scores[row, c]
        cand = (scores[subj] * scores[obj])[:, None] * rel_scores[:, 1:]
        top = _top_candidates(cand, max(NG_TOP, kmax))
        ng_rows, ng_pred = top // num_cls, top % num_cls + 1
        hit_ng = ok_subj[:, subj[ng_rows]] & ok_obj[:, obj[ng_rows]] & (gt_pred[:, None] == ng_pred[None, :])

        ks = np.asarray(self.ks)
        hits = (
            np.stack([_first_hit(hit_gc), _first_hit(hit_ng)])[:, None, :] < ks[None, :, None]
        )  # (2, nk, R)
        rec[lay.hits] = np.concatenate([hits.sum(2), (hits & is_zs).sum(2)]).ravel()
        # per-predicate hits of each (list, K): bincount of (list * nk + k) * C + (predicate - 1)
        bins = (np.arange(2 * nk)[:, None] * num_cls + (gt_pred - 1)[None, :]).reshape(2, nk, -1)
        rec[lay.pred_hits] = np.bincount(bins[hits], minlength=2 * nk * num_cls)
        zs_hits = hits[0] & is_zs  # (nk, R), graph constraint
        rec[lay.zs_pred_hits] = np.bincount(bins[0][zs_hits], minlength=nk * num_cls)

        # pair accuracy A@K (reference SGPairAccuracy, predcls/sgcls): keep the rows whose (subject, object)
        # is a GT pair, in input order; the first K of *those* rows, each with its argmax predicate; hits =
        # distinct GT rows they match (same matching as R@K)
        if self.mode != "sgdet":
            is_gt_pair = np.isin(subj * n_obj + obj, rels[:, 0] * n_obj + rels[:, 1])
            rows = np.flatnonzero(is_gt_pair)[:kmax]
            pa_pred = rel_scores[rows, 1:].argmax(1) + 1
            hit_pa = ok_subj[:, subj[rows]] & ok_obj[:, obj[rows]] & (gt_pred[:, None] == pa_pred[None, :])
            rec[lay.pair_hits] = (_first_hit(hit_pa)[None, :] < ks[:, None]).sum(1)
        return rec

    # ---------------------------------------------------------------------------------------- aggregation
    def aggregate(self, records: np.ndarray) -> dict[str, Any]:
        lay = self.layout
        records = _dedupe(np.asarray(records).reshape(-1, lay.width))
        counted = records[records[:, 1] == 1]
        nk, num_cls = len(self.ks), lay.num_classes
        n_rel = counted[:, 2].astype(np.float64)
        n_zs = counted[:, 3].astype(np.float64)
        hits = counted[:, lay.hits].reshape(-1, 4, nk)
        is_zs = n_zs > 0
        count = counted[:, lay.pred_count]
        pred_hits = counted[:, lay.pred_hits].reshape(-1, 2, nk, num_cls)
        out: dict[str, Any] = {}
        for ki, k in enumerate(self.ks):
            out[f"R@{k}"] = _mean(hits[:, 0, ki] / n_rel)
            out[f"ngR@{k}"] = _mean(hits[:, 1, ki] / n_rel)
            out[f"zsR@{k}"] = _mean(hits[is_zs, 2, ki] / n_zs[is_zs])
            out[f"ng-zsR@{k}"] = _mean(hits[is_zs, 3, ki] / n_zs[is_zs])
            for li, prefix in enumerate(("", "ng-")):
                per_pred = per_predicate_recall(count, pred_hits[:, li, ki])
                out[f"{prefix}mR@{k}"] = mean_over_predicates(per_pred)
                out[f"{prefix}mR_per_predicate@{k}"] = per_pred
        if self.mode != "sgdet":
            # reference: mean(hits) / mean(GT rows) over the images, i.e. pooled hits / pooled GT rows (the
            # shared docs/evaluation.md says "averaged per image"; the reference's printed A@K is this ratio)
            pair_hits = counted[:, lay.pair_hits].astype(np.int64).sum(0)
            total = int(counted[:, 2].astype(np.int64).sum())
            for ki, k in enumerate(self.ks):
                out[f"A@{k}"] = float(pair_hits[ki]) / total if total else float("nan")
        if self.mode != "predcls":
            # pooled over every image (also those without relations, which enter no recall): labelled-right
            # GT objects / GT objects
            n_obj, n_right = records[:, lay.objects].astype(np.int64).sum(0)
            key = "obj_acc" if self.mode == "sgcls" else "obj_recall"
            out[key] = float(n_right) / n_obj if n_obj else float("nan")
            # the recalls split into "both objects matched" x "recall given that" (graph constraint)
            count_ok = counted[:, lay.pred_count_ok]
            n_ok = count_ok.astype(np.int64).sum(1)  # per image
            n_all = int(counted[:, 2].astype(np.int64).sum())
            out["rel_objects_ok"] = int(n_ok.sum()) / n_all if n_all else float("nan")
            rows_ok = n_ok > 0
            for ki, k in enumerate(self.ks):
                out[f"R@{k}_given_objects"] = _mean(hits[rows_ok, 0, ki] / n_ok[rows_ok])
                per_pred = per_predicate_recall(count_ok, pred_hits[:, 0, ki])
                out[f"mR@{k}_given_objects"] = mean_over_predicates(per_pred)
                out[f"mR_per_predicate@{k}_given_objects"] = per_pred
        out["num_images"] = int(counted.shape[0])
        out["num_images_skipped"] = int(records.shape[0] - counted.shape[0])
        out["num_images_zeroshot"] = int(is_zs.sum())
        return out

    def per_image(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """The per-image counts behind R@K and mR@K (graph constraint), one row per image (repeats dropped).

        ``image_id`` Int32[I] (-1 when not given), ``counted`` Bool[I] (the image enters the means),
        ``num_rel`` Int32[I] GT relation rows, ``hits`` Int32[I, K] GT rows hit by the top-K list,
        ``pred_count`` Int32[I, C] GT rows per predicate 1..C, ``pred_hits`` Int32[I, K, C] their hits, ``ks``
        Int64[K]; the zero-shot part of each: ``num_zs`` Int32[I], ``zs_hits`` Int32[I, K], ``zs_pred_count``
        Int32[I, C], ``zs_pred_hits`` Int32[I, K, C]; ``pred_count_ok`` Int32[I, C] the GT rows per predicate
        whose two objects some prediction matches (SGCls / SGDet; the denominators of ``mR@K_given_objects``).
        :func:`recall_from_per_image` turns any subset or resample of the rows back into R@K / mR@K exactly as
        :meth:`aggregate` computes them (paired bootstrap over test images, ``sgseg.results``), over all GT
        relations or one part of them (:func:`split_counts`).
        """
        lay = self.layout
        records = _dedupe(np.asarray(records).reshape(-1, lay.width))
        nk, num_cls = len(self.ks), lay.num_classes
        return {
            "image_id": records[:, 0].copy(),
            "counted": records[:, 1] == 1,
            "num_rel": records[:, 2].copy(),
            "hits": records[:, lay.hits].reshape(-1, 4, nk)[:, 0].copy(),
            "pred_count": records[:, lay.pred_count].copy(),
            "pred_hits": records[:, lay.pred_hits].reshape(-1, 2, nk, num_cls)[:, 0].copy(),
            "num_zs": records[:, 3].copy(),
            "zs_hits": records[:, lay.hits].reshape(-1, 4, nk)[:, 2].copy(),
            "zs_pred_count": records[:, lay.zs_pred_count].copy(),
            "zs_pred_hits": records[:, lay.zs_pred_hits].reshape(-1, nk, num_cls).copy(),
            "pred_count_ok": records[:, lay.pred_count_ok].copy(),
            "ks": np.asarray(self.ks, dtype=np.int64),
        }


def per_predicate_recall(count: np.ndarray, hits: np.ndarray) -> list[float]:
    """R@K of each predicate: the mean over the images holding it of hits / GT rows (``count``, ``hits``:
    Int[I, C] over counted images). A predicate absent from every image scores 0 (and still counts in mR)."""
    out = []
    for c in range(count.shape[1]):
        m = count[:, c] > 0
        out.append(_mean(hits[m, c] / count[m, c]) if m.any() else 0.0)
    return out


def mean_over_predicates(per_pred: Sequence[float]) -> float:
    """mR@K: the plain mean of the per-predicate recalls, summed sequentially in predicate order (as the
    reference sums)."""
    total = 0.0
    for r in per_pred:
        total += r
    return total / len(per_pred)


RELATION_SETS = ("all", "seen", "zeroshot", "objects_ok")
_ZS_KEYS = ("num_zs", "zs_hits", "zs_pred_count", "zs_pred_hits")


def split_counts(data: Mapping[str, np.ndarray], relations: str = "all") -> dict[str, np.ndarray]:
    """:meth:`_Protocol.per_image` arrays restricted to one set of GT relations: ``all``, ``seen`` (triplets of
    the training split), ``zeroshot`` (the others) — the counts a test scoring only those GT relations
    (``sgseg.evaluate relations=seen|zeroshot``) writes: an image without a relation of the set is not counted —
    or ``objects_ok`` (SGCls / SGDet: the rows whose subject and object some prediction matches, the only ones a
    candidate can hit; R@K / mR@K over them are :meth:`_Protocol.aggregate`'s ``R@K_given_objects`` /
    ``mR@K_given_objects``). Hits of one GT row do not depend on the other rows (many-to-many matching), so the
    split is exact."""
    if relations not in RELATION_SETS:
        raise ValueError(f"relations={relations!r}: one of {', '.join(RELATION_SETS)}")
    if relations == "all":
        return dict(data)
    if relations == "objects_ok":
        if "pred_count_ok" not in data:
            raise ValueError(
                "per-image counts without pred_count_ok (written before 2026-12-06): re-test the run "
                "(python -m sgseg.evaluate run_dir=RUN ckpt=...) to split the recall by matched objects"
            )
        count = np.asarray(data["pred_count_ok"]).astype(np.int64)
        num = count.sum(1)
        return dict(data) | {"counted": np.asarray(data["counted"]) & (num > 0), "num_rel": num,
                             "pred_count": count}  # fmt: skip
    missing = [key for key in _ZS_KEYS if key not in data]
    if missing:
        raise ValueError(
            f"per-image counts without the zero-shot split (missing {', '.join(missing)}: written before "
            f"2026-12-06): re-test the run (python -m sgseg.evaluate run_dir=RUN ckpt=...), or score relations="
            f"{relations} with python -m sgseg.evaluate run_dir=RUN ckpt=... relations={relations}"
        )
    zs = {key: np.asarray(data[key]).astype(np.int64) for key in _ZS_KEYS}
    if relations == "zeroshot":
        num, hits, count, pred_hits = zs["num_zs"], zs["zs_hits"], zs["zs_pred_count"], zs["zs_pred_hits"]
    else:
        num = np.asarray(data["num_rel"]).astype(np.int64) - zs["num_zs"]
        hits = np.asarray(data["hits"]).astype(np.int64) - zs["zs_hits"]
        count = np.asarray(data["pred_count"]).astype(np.int64) - zs["zs_pred_count"]
        pred_hits = np.asarray(data["pred_hits"]).astype(np.int64) - zs["zs_pred_hits"]
    return dict(data) | {  # image_id, ks and the rest as they are
        "counted": np.asarray(data["counted"]) & (num > 0),
        "num_rel": num,
        "hits": hits,
        "pred_count": count,
        "pred_hits": pred_hits,
    }


def recall_from_per_image(
    data: Mapping[str, np.ndarray], k: int, rows: np.ndarray | None = None, relations: str = "all"
) -> dict[str, Any]:
    """R@K, mR@K and the per-predicate R@K from :meth:`_Protocol.per_image` arrays (e.g. a run's
    ``<task>_per_image.npz``), over ``rows`` (Int[J] indices, repeats allowed: a bootstrap resample; None =
    every image) and the GT relations of ``relations`` (:func:`split_counts`). Same arithmetic as
    :meth:`_Protocol.aggregate`, so the full set gives metrics.json's values."""
    ks = [int(x) for x in np.asarray(data["ks"]).tolist()]
    if k not in ks:
        raise ValueError(f"recall_from_per_image: K = {k} is not among the saved ks {ks}")
    ki = ks.index(k)
    if relations != "all":
        data = split_counts(data, relations)
    idx = np.arange(len(data["counted"])) if rows is None else np.asarray(rows)
    idx = idx[np.asarray(data["counted"])[idx]]
    per_pred = per_predicate_recall(data["pred_count"][idx], data["pred_hits"][idx, ki])
    return {
        f"R@{k}": _mean(data["hits"][idx, ki] / data["num_rel"][idx].astype(np.float64)),
        f"mR@{k}": mean_over_predicates(per_pred),
        f"mR_per_predicate@{k}": per_pred,
    }


def _mean(x: np.ndarray) -> float:
    """Plain mean with an exactly rounded sum, so it does not depend on the order of the images."""
    return math.fsum(x.tolist()) / x.size if x.size else float("nan")


def _dedupe(records: np.ndarray) -> np.ndarray:
    """Drop repeated records of one ``image_id`` (DistributedSampler pads shards by repeating images).

    Records without an id (-1) are all kept. Two *different* records under one id raise: that is two images
    sharing an id, not a repeat.
    """
    ids = records[:, 0]
    has_id = np.flatnonzero(ids >= 0)
    if has_id.size < 2:
        return records
    order = has_id[np.argsort(ids[has_id], kind="stable")]
    same_id = ids[order[1:]] == ids[order[:-1]]
    if not same_id.any():
        return records
    differs = same_id & (records[order[1:]] != records[order[:-1]]).any(1)
    if differs.any():
        i = int(ids[order[1:][differs][0]])
        raise ValueError(f"image_id {i} was evaluated twice with different results: image ids must be unique")
    keep = np.ones(records.shape[0], dtype=bool)
    keep[order[1:][same_id]] = False
    return records[keep]


def _zeroshot_keys(triplets: Any, num_object_classes: int, num_predicates: int) -> np.ndarray | None:
    if triplets is None:
        return None
    a = to_numpy(triplets)
    where = "zeroshot_triplets"
    if a.size == 0:
        a = a.reshape(0, 3)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(
            f"{where} must be Long[Z, 3] rows (subject label, object label, predicate), got {a.shape}"
        )
    a = _index(a, where, "SceneGraphEvaluator")
    _in_range(a[:, :2], where, "SceneGraphEvaluator", 1, num_object_classes - 1, " (object labels)")
    _in_range(a[:, 2:], where + "[:, 2:]", "SceneGraphEvaluator", 1, num_predicates - 1, " (predicates)")
    return np.unique((a[:, 0] * num_object_classes + a[:, 1]) * num_predicates + a[:, 2])


def make_protocol(
    mode: str,
    num_predicates: int,
    ks: Iterable[int],
    iou_threshold: float,
    zeroshot_triplets: Any,
    num_object_classes: int,
) -> _Protocol:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(num_predicates) != num_predicates or num_predicates < 2:
        raise ValueError(
            f"num_predicates must be an int >= 2 (background + predicates), got {num_predicates}"
        )
    if int(num_object_classes) != num_object_classes or num_object_classes < 2:
        raise ValueError(
            f"num_object_classes must be an int >= 2 (background + classes), got {num_object_classes}"
        )
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers, got {ks}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    return _Protocol(
        mode=mode,
        num_predicates=int(num_predicates),
        ks=ks,
        iou_threshold=float(iou_threshold),
        zeroshot_keys=_zeroshot_keys(zeroshot_triplets, int(num_object_classes), int(num_predicates)),
        num_object_classes=int(num_object_classes),
    )


def check_image_id(image_id: Any) -> int | None:
    if image_id is None:
        return None
    if hasattr(image_id, "item"):
        image_id = image_id.item()
    if isinstance(image_id, bool) or int(image_id) != image_id or not 0 <= int(image_id) <= _I32_MAX:
        raise ValueError(f"image_id must be an int in 0..{_I32_MAX} or None, got {image_id!r}")
    return int(image_id)


class SceneGraphEvaluator:
    """Recall metrics of scene-graph generation, as the VG150 benchmark computes them.

    Args:
        mode: ``predcls`` (GT boxes, GT labels, object scores 1), ``sgcls`` (GT boxes, predicted labels and
            scores) or ``sgdet`` (everything predicted).
        num_predicates: C_rel, predicate logits including background column 0 (51 for VG150).
        ks: the K of R@K (any distinct positive ints; the no-graph-constraint list holds
            ``max(100, max(ks))`` candidates, so K <= 100 are prefixes of the protocol's top-100 list).
        iou_threshold: IoU+1 at or above which boxes match (0.5: exactly 0.5 counts).
        zeroshot_triplets: Long[Z, 3] rows ``(subject label, object label, predicate)`` or None (then every
            zero-shot key is NaN).
        num_object_classes: C_obj including background (151 for VG150); labels must lie in 1..C_obj-1.

    ``update(gt, pred, image_id=None)`` once per image (numpy arrays or torch tensors on any device):

    * ``gt``: ``boxes`` Float[N, 4] xyxy original-image pixels, ``labels`` Long[N],
      ``relations`` Long[R, 3] rows ``(subject index, object index, predicate 1..C_rel-1)``;
    * ``pred``: ``boxes`` Float[M, 4], ``labels`` Long[M], ``scores`` Float[M], ``rel_pairs`` Long[P, 2],
      ``rel_scores`` Float[P, C_rel]; rows ranked by the model (the evaluator never re-sorts them).
      In ``predcls``/``sgcls`` the predicted objects are the GT objects: ``rel_pairs`` index the GT objects
      (``< N``), ``pred['boxes']`` is ignored and may be absent (if given it must have N rows), and in
      ``predcls`` ``labels``/``scores`` are ignored as well (if given they must have N rows); ``sgcls``
      needs ``labels`` and ``scores`` with N rows.

    Malformed input raises ``ValueError`` naming the image (its ``update`` index, and ``image_id`` if given)
    and the field. ``image_id`` is optional; when given, repeats of an id (the padding of
    ``DistributedSampler``) are counted once, and two different results under one id raise.

    ``compute()`` returns, per K: ``R@K``, ``ngR@K``, ``zsR@K``, ``ng-zsR@K``, ``mR@K``, ``ng-mR@K`` (floats;
    R/zsR keys are NaN when no image counts) and ``mR_per_predicate@K``, ``ng-mR_per_predicate@K`` (lists of
    C_rel - 1 floats, predicate 1 first); ``A@K`` in predcls / sgcls; the object labels: ``obj_acc`` in sgcls (GT
    boxes given the right label / GT boxes) and ``obj_recall`` in sgdet (GT boxes matched by a predicted box of
    their label at IoU+1 >= the threshold, any score / GT boxes), pooled over every image, also those without
    relations; in sgcls / sgdet also the recalls split in two (graph constraint): ``rel_objects_ok`` (GT
    relation rows whose subject and object are both matched by some predicted object — label and IoU — / GT
    rows, pooled over the counted images) and ``R@K_given_objects``, ``mR@K_given_objects`` (lists:
    ``mR_per_predicate@K_given_objects``): R@K / mR@K with those rows in place of all GT rows (the same per-image
    means; an image without such a row is left out, a predicate without any scores 0 in mR as in mR@K) —
    comparable to PredCls's R@K / mR@K, where every row qualifies; plus ``num_images`` (counted),
    ``num_images_skipped`` and ``num_images_zeroshot``. Means use an exactly rounded sum, so they do not depend
    on image order.
    """

    def __init__(
        self,
        mode: str = "sgdet",
        num_predicates: int = 51,
        ks: Sequence[int] = (20, 50, 100),
        iou_threshold: float = 0.5,
        zeroshot_triplets: Any = None,
        num_object_classes: int = 151,
    ) -> None:
        self.protocol = make_protocol(
            mode, num_predicates, ks, iou_threshold, zeroshot_triplets, num_object_classes
        )
        self._records: list[np.ndarray] = []
        self._num_updates = 0

    @property
    def mode(self) -> str:
        return self.protocol.mode

    @property
    def ks(self) -> tuple[int, ...]:
        return self.protocol.ks

    def __len__(self) -> int:
        """Number of per-image records held (counted and skipped images)."""
        return sum(r.shape[0] for r in self._records)

    def update(self, gt: Mapping[str, Any], pred: Mapping[str, Any], image_id: int | None = None) -> None:
        """Evaluate one image and keep its record."""
        image_id = check_image_id(image_id)
        rec = self.protocol.evaluate_image(gt, pred, self._num_updates, image_id)
        self._num_updates += 1
        self._records.append(rec[None])

    def compute(self) -> dict[str, Any]:
        return self.protocol.aggregate(self.records)

    @property
    def records(self) -> np.ndarray:
        """Int32[I, L] one row per image (see :class:`RecordLayout`); concatenating these merges evaluators."""
        if not self._records:
            return np.zeros((0, self.protocol.layout.width), dtype=np.int32)
        if len(self._records) > 1:
            self._records = [np.concatenate(self._records)]
        return self._records[0]

    def merge(self, other: SceneGraphEvaluator | np.ndarray) -> SceneGraphEvaluator:
        """Add another evaluator's records (or a records array, e.g. all-gathered), in place; returns self."""
        if isinstance(other, SceneGraphEvaluator):
            if not self.protocol.same_as(other.protocol):
                raise ValueError(
                    "cannot merge evaluators with different settings (mode, ks, predicates, zero-shot)"
                )
            rec = other.records
        else:
            rec = to_numpy(other)
            if rec.ndim != 2 or rec.shape[1] != self.protocol.layout.width:
                raise ValueError(f"records must be Int[I, {self.protocol.layout.width}], got {rec.shape}")
            rec = rec.astype(np.int32)
        if rec.shape[0]:
            self._records.append(rec)
        return self

    def reset(self) -> None:
        self._records = []
        self._num_updates = 0
