"""Placement on the canvas: scene objects, clearance bookkeeping, free spots and the contact ray scan.

Where this sits: between :mod:`sgseg.data.synthetic.shapes` (what is drawn) and the predicate planners
(:mod:`sgseg.data.synthetic.planners`) and :func:`sgseg.data.synthetic.scene.compose_scene`, which decide where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sgseg.data.synthetic.labels import CLEARANCE
from sgseg.data.synthetic.shapes import Shape, _bbox_int, _local_edt, rasterize


@dataclass
class SceneObject:
    """One object of a scene.

    label: index into the class tuple the scene was drawn from (0-based); full: Bool[H, W] amodal mask;
    polygons / holes: image-frame boundaries (Float[V, 2] xy) that rasterise to ``full``.
    """

    label: int
    full: np.ndarray
    polygons: list[np.ndarray]
    holes: list[np.ndarray]
    is_ring: bool


class _Canvas:
    """Placement bookkeeping: which pixels are closer than :data:`CLEARANCE` to a placed object."""

    _R = int(np.ceil(CLEARANCE)) - 1
    # Offsets with dy² + dx² < CLEARANCE²: a pixel is blocked iff its distance to an object is < CLEARANCE
    # (distances between pixel centres are square roots of integers, so this is exact).
    _FOOTPRINT = np.add.outer(np.arange(-_R, _R + 1) ** 2, np.arange(-_R, _R + 1) ** 2) < CLEARANCE**2

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.blocked = np.zeros((h, w), dtype=bool)

    def add(self, m: np.ndarray) -> None:
        # Dilate only around the new object: a whole-image distance transform per object cost 3x more.
        r = self._R
        y1, x1, y2, x2 = _bbox_int(m)
        y1, x1, y2, x2 = max(y1 - r, 0), max(x1 - r, 0), min(y2 + r, self.h), min(x2 + r, self.w)
        self.blocked[y1:y2, x1:x2] |= ndimage.binary_dilation(m[y1:y2, x1:x2], structure=self._FOOTPRINT)

    def free(self, ys: np.ndarray, xs: np.ndarray) -> bool:
        return len(ys) > 0 and not self.blocked[ys, xs].any()


def _fits(shape: Shape, y0: int, x0: int, h: int, w: int) -> bool:
    sh, sw = shape.mask.shape
    return y0 >= 0 and x0 >= 0 and y0 + sh <= h and x0 + sw <= w


def _place(shape: Shape, label: int, y0: int, x0: int, h: int, w: int, is_ring: bool) -> SceneObject:
    # Vertices are rounded to 2 decimals (what the COCO json stores) *before* rasterising, so the written
    # polygon decodes to exactly the pixels drawn and labelled.
    off = np.array([x0, y0], dtype=np.float64)
    polys = [np.round(p + off, 2) for p in shape.polygons]
    holes = [np.round(p + off, 2) for p in shape.holes]
    full = rasterize(polys, h, w) & ~rasterize(holes, h, w)
    return SceneObject(label, full, polys, holes, is_ring)


def _ray_scan(
    shape: Shape, anchor: np.ndarray, angle: float, stop_gap: float, h: int, w: int
) -> tuple[int, int] | None:
    """Slide ``shape`` toward ``anchor`` (Bool[H, W]) along a 4-connected path; stop at gap <= ``stop_gap``.

    The path moves one axis by one pixel per step, so the gap (minimum distance transform over the shape's
    pixels) changes by at most 1 per step: the last position before contact has gap exactly 1 (touching).
    Returns the top-left (y0, x0) or None when the path leaves the image or hits the anchor first.
    """
    # Only gaps <= max(stop_gap, 1) and contact (0) decide anything, so distances are needed only near the
    # anchor; farther pixels read as infinitely far.
    (y1, x1, y2, x2), local = _local_edt(anchor, int(np.ceil(stop_gap)) + 2)
    dist = np.full((h, w), np.inf)
    dist[y1:y2, x1:x2] = local
    ys, xs = np.nonzero(shape.mask)
    sh, sw = shape.mask.shape
    ay, ax = np.argwhere(anchor).mean(axis=0)
    dy, dx = np.sin(angle), np.cos(angle)
    reach = (max(h, w) + max(sh, sw)) / 2.0
    cy, cx = ay + dy * reach, ax + dx * reach
    y, x = int(round(cy - sh / 2)), int(round(cx - sw / 2))
    ty, tx = int(round(ay - sh / 2)), int(round(ax - sw / 2))
    best: tuple[int, int] | None = None
    steps_y, steps_x = abs(ty - y), abs(tx - x)
    sy, sx = int(np.sign(ty - y)), int(np.sign(tx - x))
    done_y = done_x = 0
    total = steps_y + steps_x
    for _ in range(total + 1):
        if 0 <= y and 0 <= x and y + sh <= h and x + sw <= w:
            gap = float(dist[ys + y, xs + x].min())
            if gap == 0.0:
                return best
            best = (y, x)
            if gap <= stop_gap:
                return best
        # Bresenham-like interleaving of the y and x moves keeps the path close to the ray.
        if done_y * steps_x <= done_x * steps_y and done_y < steps_y or done_x >= steps_x:
            y += sy
            done_y += 1
        else:
            x += sx
            done_x += 1
    return None


def _random_free(
    shape: Shape, canvas: _Canvas, rng: np.random.Generator, margin: int = 0, tries: int = 30
) -> tuple[int, int] | None:
    sh, sw = shape.mask.shape
    if sh + 2 * margin > canvas.h or sw + 2 * margin > canvas.w:
        return None
    ys, xs = np.nonzero(shape.mask)
    for _ in range(tries):
        y = int(rng.integers(margin, canvas.h - sh - margin + 1))
        x = int(rng.integers(margin, canvas.w - sw - margin + 1))
        if canvas.free(ys + y, xs + x):
            return y, x
    return None
