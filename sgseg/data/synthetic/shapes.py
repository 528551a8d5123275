"""Shapes, textures and backgrounds of the synthetic benchmark, and the mask geometry helpers.

Where this sits: below :mod:`sgseg.data.synthetic.layout` and :mod:`sgseg.data.synthetic.planners`, which place
what :func:`make_shape` draws. Masks are Bool[H, W] in image pixels; boxes are Float xyxy with the *continuous
extent* of the mask's pixels (x1 = first column, x2 = last column + 1), i.e. the COCO ``toBbox`` convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from sgseg.data.synthetic.labels import _ALL_TEXTURES, SOURCE_CLASSES, ClassStyle

# ---------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    """One rasterised shape in a local frame.

    polygons: outer boundaries, each Float[V, 2] (x, y) in local pixels; holes: inner boundaries of a ring.
    mask: Bool[h, w] local mask (pycocotools rasterisation of ``polygons`` minus ``holes``).
    """

    polygons: list[np.ndarray]
    holes: list[np.ndarray]
    mask: np.ndarray


def rasterize(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of polygons (Float[V, 2] xy) as Bool[height, width], rasterised exactly as pycocotools does.

    Using pycocotools' own rasteriser makes a COCO polygon annotation decode to exactly the drawn pixels.
    """
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(
        [p.reshape(-1).astype(np.float64).tolist() for p in polygons], height, width
    )
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _ellipse(a: float, b: float, angle: float, n: int = 36) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    return _rotate(pts, angle)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    return pts @ np.array([[c, s], [-s, c]])


def make_shape(style: ClassStyle, rng: np.random.Generator, size: float | None = None) -> Shape:
    """Draw one instance of ``style`` (size, proportions, rotation from ``rng``) in a tight local frame."""
    size = float(rng.uniform(*style.size)) if size is None else size
    aspect = float(rng.uniform(*style.aspect))
    angle = float(rng.uniform(-style.angle, style.angle)) if style.angle else 0.0
    holes: list[np.ndarray] = []
    if style.shape in ("disc", "ring"):
        angle = float(rng.uniform(0, 180))
        a = size / 2.0
        b = a / aspect if aspect >= 1 else a * aspect
        outer = _ellipse(a, b, angle)
        if style.shape == "ring":
            k = float(rng.uniform(*style.hole))
            holes = [_ellipse(a * k, b * k, angle)]
    elif style.shape in ("block", "bar"):
        w = size if aspect >= 1 else size * aspect
        h = max(w / aspect, 3.0)  # thinner than 3 px would vanish in rasterisation and JPEG
        if style.shape == "bar" and rng.random() < 0.5:
            angle += 90.0
        outer = _rotate(np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]), angle)
    elif style.shape == "triangle":
        w = size if aspect >= 1 else size * aspect
        h = w / aspect
        outer = _rotate(np.array([[0.0, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]), angle)
    else:
        raise ValueError(f"unknown shape {style.shape!r}; expected one of {SOURCE_CLASSES}")
    lo = outer.min(axis=0)
    # Shift so the shape starts one pixel inside the local frame, with a random sub-pixel phase.
    shift = -np.floor(lo) + 1.0 + rng.uniform(0, 0.999, size=2)
    outer = outer + shift
    holes = [h + shift for h in holes]
    width = int(np.ceil(outer[:, 0].max())) + 2
    height = int(np.ceil(outer[:, 1].max())) + 2
    m = rasterize([outer], height, width) & ~rasterize(holes, height, width)
    return Shape([outer], holes, m)


# ---------------------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------------------


def _smooth_noise(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Float[h, w] in about [-1, 1]: bilinearly upsampled coarse noise."""
    gh, gw = h // cell + 2, w // cell + 2
    g = rng.uniform(-1, 1, size=(gh, gw))
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bot = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def texture(kind: str, h: int, w: int, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float[h, w, 3] RGB (0..255 before clipping) of a texture ``kind`` around the colour ``base``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "solid":
        v = np.zeros((h, w), np.float32)
    elif kind == "noise":
        v = 30.0 * _smooth_noise(h, w, 3, rng)
    elif kind == "stripes":
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4, 8)
        v = 40.0 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
    elif kind == "checker":
        p = int(rng.integers(3, 6))
        v = 35.0 * (((yy // p + xx // p) % 2) * 2 - 1)
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
        v = 70.0 * ((t - t.min()) / max(float(np.ptp(t)), 1.0) - 0.5)
    elif kind == "radial":
        r = np.hypot(yy - h * 0.35, xx - w * 0.35)
        v = 45.0 - 110.0 * r / max(float(r.max()), 1.0)
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {_ALL_TEXTURES}")
    grain = rng.normal(0, 5, size=(h, w)).astype(np.float32)
    return base[None, None, :].astype(np.float32) + (v + grain)[:, :, None]


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Float[h, w, 3] textured background: smooth noise, stripes or a gradient in muted colours."""
    kind = int(rng.integers(3))
    c1 = rng.uniform(60, 200, size=3)
    c2 = rng.uniform(60, 200, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        t = 0.5 + 0.5 * _smooth_noise(h, w, int(rng.integers(12, 30)), rng)
    elif kind == 1:
        ang = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / rng.uniform(10, 30))
    else:
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    img = c1[None, None] * (1 - t[:, :, None]) + c2[None, None] * t[:, :, None]
    return img + rng.normal(0, 6, size=(h, w, 1))


def mask_box(m: np.ndarray) -> np.ndarray:
    """Float[4] xyxy continuous extent (x2 = last column + 1) of a non-empty Bool[H, W] mask."""
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def _bbox_int(m: np.ndarray) -> tuple[int, int, int, int]:
    b = mask_box(m).astype(int)
    return int(b[1]), int(b[0]), int(b[3]), int(b[2])


def _local_edt(m: np.ndarray, margin: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Distance to the nearest pixel of a non-empty mask ``m``, in a window of ``margin`` px around it.

    Exact inside the window (every mask pixel lies in it). Returns ((y1, x1, y2, x2), Float[y2-y1, x2-x1]).
    """
    h, w = m.shape
    y1, x1, y2, x2 = _bbox_int(m)
    y1, x1, y2, x2 = max(y1 - margin, 0), max(x1 - margin, 0), min(y2 + margin, h), min(x2 + margin, w)
    return (y1, x1, y2, x2), ndimage.distance_transform_edt(~m[y1:y2, x1:x2])
