"""Pictures of predictions: an image with its objects' masks and boxes, next to the predicted scene graph.

Where this sits: after the model, for people. Used by ``python -m sgseg.predict`` (your own images) and by
the scene-graph LightningModule to log a few validation predictions to W&B. Everything is in
original-image pixels; masks are box-relative ``M × M`` probabilities pasted at 0.5 with the evaluator's
:func:`~sgseg.evaluation.paste_masks` (one pasting convention in the whole project).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from sgseg.evaluation import paste_masks

_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]],
    dtype=np.float32,
) / 255.0  # fmt: skip


def top_triplets(
    pair_index: Tensor, rel_scores: Tensor, obj_scores: Tensor, k: int = 10
) -> list[tuple[int, int, int, float]]:
    """The ``k`` best (subject, object, predicate, score) with the graph constraint: one predicate per pair
    (argmax over columns ≥ 1), ranked by predicate score × subject score × object score."""
    if pair_index.shape[0] == 0:
        return []
    probs, preds = rel_scores[:, 1:].max(1)
    score = probs * obj_scores[pair_index[:, 0]] * obj_scores[pair_index[:, 1]]
    order = score.argsort(descending=True, stable=True)[:k]
    return [(int(pair_index[i, 0]), int(pair_index[i, 1]), int(preds[i]) + 1, float(score[i])) for i in order]


# curvature of the graph panel's arrows (matplotlib's arc3): the two directions of a pair bend to opposite sides
EDGE_RAD = 0.25


def graph_layout(
    boxes: Tensor, triplets: Sequence[tuple[int, int, str, float]], rad: float = EDGE_RAD
) -> tuple[dict[int, tuple[float, float]], list[tuple[int, int, str, tuple[float, float]]]]:
    """Where the graph panel puts its nodes and edge labels.

    Nodes: the objects in ``triplets``, evenly spaced on the unit circle in the order of their box centres' angles
    around the centres' mean (image y points down, the panel's up) and turned to sit nearest those angles, so the
    graph keeps the picture's left/right/above/below and neighbours' edges stay short. Edges: one per ordered
    (subject, object) pair, its predicates one per line (``"near (0.40)"``), the label at the middle of the drawn
    arc (the quadratic Bézier of matplotlib's ``arc3,rad``, at t = ½) — on its own arrow, and the pair's two
    directions on opposite sides.
    Returns ``(pos, edges)``: ``pos[j] = (x, y)``, ``edges = [(s, o, text, (x, y))]`` in first-seen order."""
    nodes = sorted({s for s, _, _, _ in triplets} | {o for _, o, _, _ in triplets})
    if not nodes:
        return {}, []
    b = boxes[nodes].double().cpu()
    cx, cy = ((b[:, 0] + b[:, 2]) / 2).tolist(), ((b[:, 1] + b[:, 3]) / 2).tolist()
    mx, my = sum(cx) / len(cx), sum(cy) / len(cy)
    angle = [math.atan2(my - cy[i], cx[i] - mx) for i in range(len(nodes))]
    order = sorted(range(len(nodes)), key=lambda i: (angle[i], nodes[i]))
    # evenly spaced, turned to sit nearest the true angles: the circular mean of (true − even) angles
    step = 2 * math.pi / len(nodes)
    dev = [angle[i] - step * t for t, i in enumerate(order)]
    start = math.atan2(sum(map(math.sin, dev)), sum(map(math.cos, dev))) if len(nodes) > 1 else math.pi / 2
    pos = {nodes[i]: (math.cos(start + step * t), math.sin(start + step * t)) for t, i in enumerate(order)}
    texts: dict[tuple[int, int], list[str]] = {}
    for s, o, pred, score in triplets:
        texts.setdefault((s, o), []).append(f"{pred} ({score:.2f})")
    edges = [(s, o, "\n".join(lines), arc_point(pos[s], pos[o], rad, 0.5)) for (s, o), lines in texts.items()]
    return pos, edges


def arc_point(a: tuple[float, float], b: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at ``t`` ∈ [0, 1] of matplotlib's ``arc3,rad`` connection from ``a`` to ``b``: a quadratic
    Bézier whose control point is the chord's middle moved by ``rad · (dy, −dx)``."""
    (xa, ya), (xb, yb) = a, b
    cx, cy = (xa + xb) / 2 + rad * (yb - ya), (ya + yb) / 2 - rad * (xb - xa)
    u = 1.0 - t
    return (u * u * xa + 2 * u * t * cx + t * t * xb, u * u * ya + 2 * u * t * cy + t * t * yb)


def draw_scene_graph(
    image: Tensor,
    boxes: Tensor,
    labels: Sequence[str],
    triplets: Sequence[tuple[int, int, str, float]],
    path: str | Path,
    mask_probs: Tensor | None = None,
    title: str | None = None,
    only_related: bool = False,
) -> Path:
    """Save a two-panel PNG: the image with masks/boxes/labels, and the graph of ``triplets``.

    image: Uint8[3, H, W]; boxes: Float[N, 4] xyxy in its pixels; labels: N names; triplets:
    (subject index, object index, predicate name, score); mask_probs: optional Float[N, M, M] box-relative.
    Objects that take part in no triplet are drawn thinner, or not at all with ``only_related`` (SGDet
    pictures: dozens of low-scoring detections would hide the image).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    img = image.permute(1, 2, 0).cpu().numpy().astype(np.float32) / 255.0
    h, w = img.shape[:2]
    n = boxes.shape[0]
    colors = _PALETTE[np.arange(n) % len(_PALETTE)]
    used = {s for s, _, _, _ in triplets} | {o for _, o, _, _ in triplets}
    shown = sorted(used) if only_related else range(n)
    if mask_probs is not None and n:
        masks = paste_masks(mask_probs.float().cpu(), boxes.float().cpu(), h, w).numpy()
        for i in shown:
            img[masks[i]] = 0.55 * img[masks[i]] + 0.45 * colors[i]

    fig, (ax_img, ax_graph) = plt.subplots(1, 2, figsize=(11, 5.2), gridspec_kw={"width_ratios": [1.2, 1]})
    ax_img.imshow(img)
    for i in shown:
        x1, y1, x2, y2 = boxes[i].tolist()
        ax_img.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colors[i],
                                   lw=2.0 if i in used else 0.8))  # fmt: skip
        ax_img.text(x1, y1, f"{i}:{labels[i]}", color="white", fontsize=7, va="bottom",
                    bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "lw": 0})  # fmt: skip
    ax_img.set_axis_off()
    ax_img.set_title(title or "objects and masks", fontsize=9)

    pos, edges = graph_layout(boxes, triplets)
    for s, o, _, _ in edges:
        ax_graph.add_patch(FancyArrowPatch(pos[s], pos[o], arrowstyle="-|>", mutation_scale=12, color="0.35",
                                           shrinkA=16, shrinkB=16, connectionstyle=f"arc3,rad={EDGE_RAD}"))  # fmt: skip
    node_texts = [
        ax_graph.text(x, y, f"{j}:{labels[j]}", ha="center", va="center", fontsize=8, color="white",
                      bbox={"facecolor": colors[j], "boxstyle": "round", "pad": 0.4})
        for j, (x, y) in sorted(pos.items())
    ]  # fmt: skip
    ax_graph.set_xlim(-1.5, 1.5)
    ax_graph.set_ylim(-1.4, 1.4)
    ax_graph.set_aspect("equal")
    ax_graph.set_axis_off()
    ax_graph.set_title(f"top {len(triplets)} relations", fontsize=9)
    fig.tight_layout()
    _place_edge_labels(fig, ax_graph, pos, edges, node_texts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _place_edge_labels(fig, ax, pos, edges, node_texts) -> None:
    """Put each edge label on its own arc where it covers no node and no label placed before it: the arc's
    middle if free, else the free point nearest it (t = 0.5 ± 0.1, ± 0.2, ± 0.3), else the least-covered one."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = [t.get_bbox_patch().get_window_extent(renderer) for t in node_texts]
    for s, o, text, _ in edges:
        label = ax.text(0.0, 0.0, text, fontsize=7, ha="center", va="center",
                        bbox={"facecolor": "white", "alpha": 0.85, "pad": 1, "lw": 0})  # fmt: skip
        best = None
        for t in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
            label.set_position(arc_point(pos[s], pos[o], EDGE_RAD, t))
            box = label.get_window_extent(renderer).expanded(1.06, 1.2)
            cover = sum(_overlap(box, other) for other in taken)
            if best is None or cover < best[0]:
                best = (cover, t, box)
            if cover == 0.0:
                break
        label.set_position(arc_point(pos[s], pos[o], EDGE_RAD, best[1]))
        taken.append(best[2])


def _overlap(a, b) -> float:
    """The area two display-space boxes share."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)
