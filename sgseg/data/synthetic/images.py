"""One image of the synthetic benchmark, end to end: plan the pairs, compose, save the JPEG, annotate.

Where this sits: :func:`sgseg.data.synthetic.benchmark.generate` maps :func:`_render_one` over every image (in
worker processes); the per-image seed ``(seed, part, index)`` makes the output independent of the worker
count. Also the zero-shot hold-out (:func:`held_out_triplets`), shared by the planning of every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sgseg.data.synthetic.config import _PARTS, SyntheticConfig
from sgseg.data.synthetic.labels import PLAN_WEIGHTS, PREDICATES, SOURCE_CLASSES, TARGET_CLASSES, class_style
from sgseg.data.synthetic.planners import feasible_pairs
from sgseg.data.synthetic.scene import compose_scene, pair_predicates
from sgseg.data.synthetic.writers import _compressed_rle, _uncompressed_rle


def held_out_triplets(config: SyntheticConfig) -> frozenset[tuple[int, int, int]]:
    """Triplets (subject label, object label, predicate), 1-based, never annotated in the VG train split.

    Per predicate, ``zero_shot_fraction`` of its placeable (subject, object) class pairs (at least one),
    drawn from the seed. Test scenes plant them; train scenes avoid them and never label them.
    """
    rng = np.random.default_rng([config.seed, 90211])
    out = set()
    for p_idx, pred in enumerate(PREDICATES, start=1):
        pairs = feasible_pairs(pred)
        k = max(1, int(round(config.zero_shot_fraction * len(pairs)))) if config.zero_shot_fraction > 0 else 0
        for j in rng.choice(len(pairs), size=k, replace=False):
            s, o = pairs[int(j)]
            out.add((s + 1, o + 1, p_idx))
    return frozenset(out)


def _class_weights(coco: bool) -> np.ndarray:
    if coco:
        return np.full(len(SOURCE_CLASSES), 1.0 / len(SOURCE_CLASSES))
    w = np.array([class_style(n, False).weight for n in TARGET_CLASSES])
    return w / w.sum()


_PLAN_P = np.array([PLAN_WEIGHTS[p] for p in PLAN_WEIGHTS]) / sum(PLAN_WEIGHTS.values())
_PLAN_NAMES = tuple(PLAN_WEIGHTS)


def _choose_pair(
    rng: np.random.Generator, pairs: list[tuple[int, int]], weights: np.ndarray
) -> tuple[int, int] | None:
    if not pairs:
        return None
    w = np.array([weights[s] * weights[o] for s, o in pairs])
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))]


# ---------------------------------------------------------------------------------------------------------
# One image (runs in worker processes)
# ---------------------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: SyntheticConfig, tmp_root: str) -> None:
    held = held_out_triplets(config)
    feas = {p: feasible_pairs(p) for p in PREDICATES}
    _WORKER.update(
        config=config,
        root=Path(tmp_root),
        held=held,
        train_pairs={
            p: [(s, o) for s, o in feas[p] if (s + 1, o + 1, i) not in held]
            for i, p in enumerate(PREDICATES, start=1)
        },
        test_pairs={
            p: [(s, o) for s, o in feas[p] if (s + 1, o + 1, i) in held]
            for i, p in enumerate(PREDICATES, start=1)
        },
        coco_pairs={
            p: [(s, o) for s in range(len(SOURCE_CLASSES)) for o in range(len(SOURCE_CLASSES))]
            for p in PREDICATES
        },
    )
    # COCO-like scenes (no relations written) still plan pairs, for occlusions, contacts and filled holes
    # in the mask supervision: every source pair except where the ring / size constraints forbid it.
    idx = {n: k for k, n in enumerate(SOURCE_CLASSES)}
    others = [k for n, k in idx.items() if n != "ring"]
    _WORKER["coco_pairs"]["in hole of"] = [(k, idx["ring"]) for k in others]
    _WORKER["coco_pairs"]["around"] = [(idx["ring"], k) for k in others]
    _WORKER["coco_pairs"]["on"] = [
        (idx[a], idx[b]) for a in ("disc", "block", "triangle") for b in ("disc", "block")
    ]


def _render_one(task: tuple[str, int, int, str]) -> dict[str, Any]:
    """Render, save and annotate one image. Returns plain python data for the main process to assemble."""
    part, index, image_id, rel_path = task
    cfg: SyntheticConfig = _WORKER["config"]
    coco = part.startswith("coco")
    train = part == "vg_train"
    rng = np.random.default_rng([cfg.seed, _PARTS.index(part), index])
    height, width = (int(v) for v in rng.integers(cfg.min_image_size, cfg.max_image_size + 1, size=2))
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    weights = _class_weights(coco)
    plan: list[tuple[str, int, int]] = []
    for _ in range(int(rng.integers(1, max(1, min(3, n_obj // 2)) + 1))):
        pred = _PLAN_NAMES[int(rng.choice(len(_PLAN_NAMES), p=_PLAN_P))]
        if coco:
            pairs = _WORKER["coco_pairs"][pred]
        elif not train and _WORKER["test_pairs"][pred] and rng.random() < cfg.zero_shot_test_rate:
            pairs = _WORKER["test_pairs"][pred]
        else:
            pairs = _WORKER["train_pairs"][pred]
        pair = _choose_pair(rng, pairs, weights)
        if pair is not None:
            plan.append((pred, pair[0], pair[1]))
    singles = [int(c) for c in rng.choice(len(weights), size=max(0, n_obj - 2 * len(plan)), p=weights)]
    crowd = int(rng.integers(len(SOURCE_CLASSES))) if coco and rng.random() < 0.08 else None
    scene = compose_scene(rng, height, width, coco, plan, singles, crowd_label=crowd)

    Image.fromarray(scene.image).save(_WORKER["root"] / rel_path, format="JPEG", quality=90)
    out: dict[str, Any] = {
        "part": part,
        "image_id": image_id,
        "width": width,
        "height": height,
        "labels": [o.label for o in scene.objects],
        "boxes": scene.boxes.tolist(),
    }
    if coco:
        segs = []
        for o, vis in zip(scene.objects, scene.visible):
            if not o.is_ring and np.array_equal(vis, o.full):
                segs.append({"polygons": [p.reshape(-1).tolist() for p in o.polygons]})
            else:  # a hole or an occluded part cannot be a COCO polygon: RLE, like real COCO's odd cases
                segs.append({"rle": _compressed_rle(vis)})
        out["segmentations"] = segs
        out["crowds"] = [(lab, _uncompressed_rle(m)) for lab, m in scene.crowds]
        return out
    out["masks"] = [_compressed_rle(v) for v in scene.visible]  # no RNG draw: the other files stay the same
    out["amodal_masks"] = [_compressed_rle(o.full) for o in scene.objects]  # nor here

    true = pair_predicates(scene)
    held = _WORKER["held"]
    chosen = [(s, o) for _, s, o in scene.planned if (s, o) in true]
    rest = [pair for pair in sorted(true) if pair not in chosen]
    for k in rng.permutation(len(rest))[: int(rng.integers(0, 4))]:
        chosen.append(rest[int(k)])
    rels = []
    for s, o in chosen:
        preds = true[(s, o)]
        # The label is the highest-priority true predicate; a few pairs also carry the second one as a
        # duplicate row (real VG has several predicates per pair; training samples one per load).
        labelled = preds[:2] if len(preds) > 1 and rng.random() < 0.08 else preds[:1]
        rows = [
            (scene.objects[s].label + 1, scene.objects[o].label + 1, PREDICATES.index(p) + 1)
            for p in labelled
        ]
        if train and rows[0] in held:
            continue  # never label a held-out pair by its lower-priority predicate instead
        rels += [[s, o, r[2]] for r in rows if not (train and r in held)]
    if rng.random() < 0.03:
        rels = []  # real VG has images without relations; the train filter must drop them
    out["relations"] = rels
    return out
