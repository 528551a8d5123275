"""Pictures of predictions: the ranking of the drawn triplets and the drawing itself."""

from __future__ import annotations

import torch

from sgseg.visualize import draw_scene_graph, top_triplets


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
