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

    nodes = sorted(used)
    pos = {
        j: (math.cos(2 * math.pi * t / max(len(nodes), 1)), math.sin(2 * math.pi * t / max(len(nodes), 1)))
        for t, j in enumerate(nodes)
    }
    for s, o, pred, score in triplets:
        (xs, ys), (xo, yo) = pos[s], pos[o]
        ax_graph.add_patch(FancyArrowPatch((xs, ys), (xo, yo), arrowstyle="-|>", mutation_scale=12,
                                           color="0.35", shrinkA=16, shrinkB=16,
                                           connectionstyle="arc3,rad=0.12"))  # fmt: skip
        ax_graph.text((xs + xo) / 2, (ys + yo) / 2, f"{pred} ({score:.2f})", fontsize=7, ha="center",
                      bbox={"facecolor": "white", "alpha": 0.85, "pad": 1, "lw": 0})  # fmt: skip
    for j in nodes:
        x, y = pos[j]
        ax_graph.text(x, y, f"{j}:{labels[j]}", ha="center", va="center", fontsize=8, color="white",
                      bbox={"facecolor": colors[j], "boxstyle": "round", "pad": 0.4})  # fmt: skip
    ax_graph.set_xlim(-1.5, 1.5)
    ax_graph.set_ylim(-1.4, 1.4)
    ax_graph.set_aspect("equal")
    ax_graph.set_axis_off()
    ax_graph.set_title(f"top {len(triplets)} relations", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
