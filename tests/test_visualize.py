"""Pictures of predictions: the ranking of the drawn triplets and the drawing itself."""

from __future__ import annotations

import math

import pytest
import torch

from sgseg.visualize import (
    EDGE_RAD,
    _overlap,
    _place_edge_labels,
    arc_point,
    draw_scene_graph,
    graph_layout,
    top_triplets,
)


def test_top_triplets_rank_by_predicate_times_object_scores():
    pairs = torch.tensor([[0, 1], [1, 2], [2, 0]])
    rel = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.0, 0.1, 0.9]])
    obj = torch.tensor([1.0, 0.5, 0.8])
    # pair 0: 0.6 (pred 1) * 1.0 * 0.5 = 0.30; pair 1: 0.3 (pred 2) * 0.5 * 0.8 = 0.12 (background 0.5 ignored);
    # pair 2: 0.9 (pred 2) * 0.8 * 1.0 = 0.72
    got = top_triplets(pairs, rel, obj, k=2)
    assert [(s, o, p) for s, o, p, _ in got] == [(2, 0, 2), (0, 1, 1)]
    assert abs(got[0][3] - 0.72) < 1e-6 and abs(got[1][3] - 0.30) < 1e-6
    assert top_triplets(torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 3), obj) == []


def test_draw_scene_graph_writes_a_picture(tmp_path):
    image = torch.full((3, 60, 80), 128, dtype=torch.uint8)
    boxes = torch.tensor([[5.0, 5, 30, 30], [40, 10, 70, 50], [10, 35, 25, 55]])
    masks = torch.ones(3, 28, 28)
    for only in (False, True):
        path = draw_scene_graph(image, boxes, ["a", "b", "c"], [(0, 1, "left of", 0.9)], tmp_path / f"{only}.png",
                                masks, only_related=only)  # fmt: skip
        assert path.stat().st_size > 5_000


def test_arc_point_is_matplotlibs_arc3_curve():
    """Independent route: the quadratic Bézier matplotlib's ``arc3`` connection builds, evaluated by its own
    BezierSegment — the labels sit on the arrows actually drawn."""
    from matplotlib.bezier import BezierSegment
    from matplotlib.patches import ConnectionStyle

    a, b = (0.3, -0.8), (-0.9, 0.4)
    for rad in (0.0, EDGE_RAD, -0.4):
        path = ConnectionStyle.Arc3(rad=rad)(a, b, shrinkA=0.0, shrinkB=0.0)
        curve = BezierSegment(path.vertices)
        for t in (0.0, 0.2, 0.5, 0.9):
            assert arc_point(a, b, rad, t) == pytest.approx(tuple(curve.point_at_t(t)), abs=1e-12)


def test_graph_layout_keeps_the_pictures_arrangement_and_groups_pairs():
    # boxes right of, above, left of and below the centres' mean (image y points down)
    boxes = torch.tensor([[90.0, 45, 100, 55], [45, 0, 55, 10], [0, 45, 10, 55], [45, 90, 55, 100]])
    trip = [(0, 1, "near", 0.5), (1, 0, "near", 0.4), (0, 1, "above", 0.25), (2, 3, "on", 0.125)]
    pos, edges = graph_layout(boxes, trip)
    want = {0: (1.0, 0.0), 1: (0.0, 1.0), 2: (-1.0, 0.0), 3: (0.0, -1.0)}
    for j, xy in want.items():
        assert pos[j] == pytest.approx(xy, abs=1e-12)
    assert [(s, o, text) for s, o, text, _ in edges] == [
        (0, 1, "near (0.50)\nabove (0.25)"), (1, 0, "near (0.40)"), (2, 3, "on (0.12)"),
    ]  # fmt: skip
    # 0 → 1 and 1 → 0 bend to opposite sides of their chord, each label a quarter of rad·|chord| off it:
    # chord middle (0.5, 0.5), offset ±EDGE_RAD/2 · (dy, −dx) = ±EDGE_RAD/2 · (1, 1)
    (_, _, _, p01), (_, _, _, p10) = edges[0], edges[1]
    assert p01 == pytest.approx((0.5 + EDGE_RAD / 2, 0.5 + EDGE_RAD / 2))
    assert p10 == pytest.approx((0.5 - EDGE_RAD / 2, 0.5 - EDGE_RAD / 2))
    assert graph_layout(boxes, []) == ({}, [])


def test_edge_labels_cover_no_node_and_no_other_label():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a crowded graph (the picture that showed the problem): eight nodes, crossing chords through the middle
    boxes = torch.tensor(
        [
            [40, 85, 80, 120],
            [75, 78, 92, 95],
            [34, 37, 55, 57],
            [52, 23, 70, 42],
            [110, 85, 140, 110],
            [112, 14, 150, 55],
            [61, 50, 79, 70],
            [97, 3, 130, 14],
        ]
    ).float()
    trip = [(3, 2, "near", 0.4), (2, 3, "near", 0.3), (5, 7, "touching", 0.42), (2, 7, "left of", 0.25),
            (3, 7, "left of", 0.32), (0, 1, "touching", 0.25), (6, 1, "near", 0.17), (3, 5, "left of", 0.19),
            (4, 0, "right of", 0.15), (6, 4, "left of", 0.12)]  # fmt: skip
    pos, edges = graph_layout(boxes, trip)
    fig, ax = plt.subplots(figsize=(5, 5.2))
    nodes = [ax.text(x, y, f"{j}:ball", ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "pad": 0.4})
             for j, (x, y) in sorted(pos.items())]  # fmt: skip
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    _place_edge_labels(fig, ax, pos, edges, nodes)
    renderer = fig.canvas.get_renderer()
    node_boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in nodes]
    labels = [t for t in ax.texts if t not in nodes]
    label_boxes = [t.get_window_extent(renderer) for t in labels]
    plt.close(fig)
    assert len(labels) == len(edges)
    for i, box in enumerate(label_boxes):
        assert all(
            _overlap(box, other) == 0.0 for other in node_boxes + label_boxes[:i] + label_boxes[i + 1 :]
        )
    # each label sits on its own arc
    for (s, o, text, _), label in zip(edges, labels, strict=True):
        assert label.get_text() == text
        assert any(label.get_position() == pytest.approx(arc_point(pos[s], pos[o], EDGE_RAD, t))
                   for t in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8))  # fmt: skip


def test_graph_layout_turns_the_circle_to_the_true_angles():
    # four objects at 100°, 20°, −80° and −160° around (50, 50) (two opposite pairs: their centres' mean is
    # (50, 50)); evenly spaced 90° apart in the order −160, −80, 20, 100 and turned by the circular mean of
    # (true − even) = mean(−160, −170, −160, −170) = −165°: at −165°, −75°, 15°, 105°
    angles = {0: 100.0, 1: 20.0, 2: -80.0, 3: -160.0}
    boxes = []
    for a in angles.values():
        x, y = 50 + 30 * math.cos(math.radians(a)), 50 - 30 * math.sin(math.radians(a))
        boxes.append([x - 2, y - 2, x + 2, y + 2])
    boxes.append([0.0, 0, 1, 1])  # in no triplet: not a node, not in the mean
    pos, _ = graph_layout(torch.tensor(boxes), [(0, 1, "near", 0.5), (2, 3, "near", 0.5)])
    want = {3: -165.0, 2: -75.0, 1: 15.0, 0: 105.0}
    assert set(pos) == set(want)
    for j, a in want.items():
        assert pos[j] == pytest.approx((math.cos(math.radians(a)), math.sin(math.radians(a))), abs=1e-6)
