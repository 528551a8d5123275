"""Pixels of the synthetic benchmark: label spaces, shapes, textures, scene layout and geometric predicates.

Where this sits: :mod:`sgseg.data.synthetic` calls :func:`compose_scene` once per image and writes what it
returns in the real VG / COCO file formats. Nothing here touches the disk or the file formats; this module
decides *what is in the picture* and which relations are geometrically true in it.

The design mirrors the paper's setting on a scale a CPU can learn:

* COCO-like part: five SOURCE shapes (disc, block, triangle, ring, bar) with instance masks, drawn in random
  colours and textures, so a mask head learns shape, not colour.
* VG-like part: TARGET classes = the source names plus NOVEL names that are source shapes in disguise
  (``plate``/``coin``/``ball`` are discs, ``donut``/``hoop``/``tire`` are rings, ...), each with its own colour,
  texture and size family, so the class is learnable from pixels and its mask is transferable from the source.
* Predicates are computed from the rendered masks (:func:`pair_predicates`). ``above``/``below``/``left of``
  follow from boxes; ``in hole of``/``around`` vs ``on`` (same box containment, different masks),
  ``touching`` vs ``near`` (overlapping boxes in both cases when objects sit diagonally) and
  ``partly covering`` need masks, so grounding on masks can beat a box-only model.

Coordinates: masks are Bool[H, W] in image pixels; boxes are Float xyxy with the *continuous extent* of the
mask's pixels (x1 = first column, x2 = last column + 1), i.e. the COCO ``toBbox`` convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

# ---------------------------------------------------------------------------------------------------------
# Label spaces
# ---------------------------------------------------------------------------------------------------------

#: The COCO-like (mask-annotated) classes, in contiguous order 1..5.
SOURCE_CLASSES: tuple[str, ...] = ("disc", "block", "triangle", "ring", "bar")
#: Non-contiguous COCO category ids of :data:`SOURCE_CLASSES` (same order), like COCO's 1..90 for 80 classes.
SOURCE_CATEGORY_IDS: tuple[int, ...] = (1, 3, 4, 8, 11)


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks.

    shape: a source shape name; size: (min, max) characteristic extent in px (diameter / longer side);
    aspect: (min, max) width/height (rings and discs: ellipse axis ratio; bars: length/thickness);
    hole: (min, max) inner/outer radius ratio (rings only); colour: base RGB (``None`` = random per instance);
    textures: the texture kinds drawn from; weight: relative frequency of the class in the VG-like part;
    angle: max absolute rotation in degrees (bars additionally pick horizontal or vertical).
    """

    shape: str
    size: tuple[float, float]
    aspect: tuple[float, float] = (1.0, 1.0)
    hole: tuple[float, float] = (0.0, 0.0)
    colour: tuple[int, int, int] | None = None
    textures: tuple[str, ...] = ("solid",)
    weight: float = 1.0
    angle: float = 0.0


# The VG-like classes. The five source names are targets too (matched one-to-one by name in transfer); the
# others are novel names. Colour/texture families are distinct per class, so class = shape + appearance.
_TARGET_STYLES: dict[str, ClassStyle] = {
    # disc family
    "disc": ClassStyle("disc", (20, 32), (0.85, 1.15), colour=(60, 170, 70), textures=("noise",), weight=1.0),
    "coin": ClassStyle(
        "disc", (11, 15), (0.9, 1.1), colour=(225, 185, 40), textures=("gradient",), weight=1.4
    ),
    "plate": ClassStyle(
        "disc", (36, 48), (0.8, 1.2), colour=(238, 238, 232), textures=("solid",), weight=1.6
    ),
    "ball": ClassStyle(
        "disc", (16, 24), (0.95, 1.05), colour=(210, 40, 40), textures=("radial",), weight=1.8
    ),
    # block family
    "block": ClassStyle("block", (18, 30), (0.75, 1.33), colour=(50, 80, 205), textures=("solid",), angle=15),
    "tile": ClassStyle(
        "block", (12, 17), (0.9, 1.1), colour=(40, 170, 170), textures=("checker",), weight=1.3
    ),
    "crate": ClassStyle(
        "block", (30, 42), (0.8, 1.25), colour=(150, 100, 50), textures=("stripes",), angle=10
    ),
    "brick": ClassStyle("block", (22, 30), (1.8, 2.2), colour=(170, 70, 50), textures=("noise",), weight=0.8),
    # triangle family
    "triangle": ClassStyle(
        "triangle", (18, 30), (0.8, 1.2), colour=(140, 60, 170), textures=("solid",), angle=10
    ),
    "sail": ClassStyle(
        "triangle", (26, 38), (0.5, 0.7), colour=(230, 225, 195), textures=("stripes",), weight=0.7
    ),
    "roof": ClassStyle(
        "triangle", (30, 44), (1.8, 2.4), colour=(120, 30, 30), textures=("stripes",), weight=0.5
    ),
    "traffic cone": ClassStyle(
        "triangle", (16, 24), (0.45, 0.6), colour=(250, 130, 20), textures=("stripes",), weight=0.6
    ),
    # ring family (all have a hole)
    "ring": ClassStyle("ring", (24, 36), (0.9, 1.1), (0.52, 0.65), (220, 60, 160), ("solid",), 1.0),
    "donut": ClassStyle("ring", (24, 34), (0.9, 1.1), (0.32, 0.42), (200, 140, 90), ("noise",), 0.9),
    "hoop": ClassStyle("ring", (36, 50), (0.9, 1.1), (0.78, 0.86), (240, 120, 30), ("solid",), 0.8),
    "tire": ClassStyle("ring", (28, 40), (0.92, 1.08), (0.45, 0.55), (35, 35, 35), ("noise",), 0.7),
    # bar family
    "bar": ClassStyle("bar", (28, 42), (4.0, 6.0), colour=(130, 130, 145), textures=("solid",), angle=10),
    "plank": ClassStyle("bar", (40, 54), (4.0, 5.5), colour=(190, 150, 90), textures=("stripes",), angle=8),
    "pipe": ClassStyle("bar", (30, 46), (6.0, 8.0), colour=(160, 170, 185), textures=("gradient",), angle=8),
}

#: The VG-like classes in label-index order 1..C (alphabetical, like the real VG150 dictionary).
TARGET_CLASSES: tuple[str, ...] = tuple(sorted(_TARGET_STYLES))
#: The source shape each target class is drawn as (for tests and analysis of mask transfer).
TARGET_TO_SOURCE: dict[str, str] = {name: _TARGET_STYLES[name].shape for name in TARGET_CLASSES}
#: Target names that are not source names (the zero-shot transfer must find their source from word vectors).
NOVEL_CLASSES: tuple[str, ...] = tuple(n for n in TARGET_CLASSES if n not in SOURCE_CLASSES)

#: Predicates in label-index order 1..P (alphabetical, like the real VG150 dictionary).
PREDICATES: tuple[str, ...] = (
    "above",
    "around",
    "below",
    "in hole of",
    "left of",
    "near",
    "on",
    "partly covering",
    "touching",
)
#: When several predicates are true for a pair, the label is the first of these that holds.
PREDICATE_PRIORITY: tuple[str, ...] = (
    "in hole of",
    "around",
    "on",
    "partly covering",
    "touching",
    "near",
    "above",
    "below",
    "left of",
)
#: Predicates whose truth needs masks (boxes alone cannot decide them); the rest follow from boxes.
MASK_PREDICATES: frozenset[str] = frozenset(
    {"in hole of", "around", "on", "partly covering", "touching", "near"}
)

#: Relative frequency with which a scene *plans* a pair for each predicate (the long tail; extra
#: annotated pairs are drawn from whatever is true, which adds to the head).
PLAN_WEIGHTS: dict[str, float] = {
    "near": 26.0,
    "left of": 14.0,
    "above": 10.0,
    "on": 10.0,
    "below": 6.0,
    "touching": 7.0,
    "partly covering": 5.0,
    "in hole of": 3.0,
    "around": 1.5,
}

NEAR_MAX = 10.0  # px: "near" = visible masks disjoint and 3 <= gap <= NEAR_MAX
TOUCH_MAX = 1.5  # px: "touching" = masks disjoint and 8-adjacent (EDT distance 1 or sqrt 2)
ON_MIN_OVERLAP = 0.3  # fraction of the subject's pixels lying over the object
COVER_MIN_HIDDEN = 0.05  # fraction of the object's pixels hidden by the subject
CLEARANCE = 3.0  # px kept free between objects that are not placed as a pair

_SOURCE_STYLES: dict[str, ClassStyle] = {
    # COCO-like instances: the union of the family's sizes and proportions, random colour and texture.
    "disc": ClassStyle("disc", (11, 48), (0.8, 1.2)),
    "block": ClassStyle("block", (12, 42), (0.75, 2.2), angle=15),
    "triangle": ClassStyle("triangle", (16, 44), (0.45, 2.4), angle=10),
    "ring": ClassStyle("ring", (24, 50), (0.9, 1.1), (0.32, 0.86)),
    "bar": ClassStyle("bar", (28, 54), (4.0, 8.0), angle=10),
}
_ALL_TEXTURES = ("solid", "noise", "stripes", "checker", "gradient", "radial")


def class_style(name: str, coco: bool) -> ClassStyle:
    """The :class:`ClassStyle` of a source (``coco=True``) or target class name."""
    return (_SOURCE_STYLES if coco else _TARGET_STYLES)[name]


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


# ---------------------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------------------


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


@dataclass
class Scene:
    """A rendered image and its objects in drawing order (later objects are drawn on top).

    image: UInt8[H, W, 3]; visible: Bool[N, H, W] (what is seen of each object); boxes: Float[N, 4] xyxy
    of the amodal masks; planned: (predicate, subject, object) for the pairs placed to satisfy a predicate;
    crowd: Bool[H, W] masks of crowd groups (COCO-like part only) with their 0-based source label.
    """

    image: np.ndarray
    objects: list[SceneObject]
    visible: np.ndarray
    boxes: np.ndarray
    planned: list[tuple[str, int, int]] = field(default_factory=list)
    crowds: list[tuple[int, np.ndarray]] = field(default_factory=list)


def mask_box(m: np.ndarray) -> np.ndarray:
    """Float[4] xyxy continuous extent (x2 = last column + 1) of a non-empty Bool[H, W] mask."""
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


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


def _plan_pair(
    pred: str,
    s_style: ClassStyle,
    o_style: ClassStyle,
    canvas: _Canvas,
    rng: np.random.Generator,
) -> tuple[Shape, tuple[int, int], Shape, tuple[int, int], bool] | None:
    """Shapes and positions for a (subject, object) pair meant to satisfy ``pred``.

    Returns (subject shape, subject y0x0, object shape, object y0x0, subject drawn last) or None.
    """
    h, w = canvas.h, canvas.w
    inner_style, ring_style = (s_style, o_style) if pred == "in hole of" else (o_style, s_style)
    if pred in ("in hole of", "around"):
        ring = make_shape(
            ring_style, rng, size=float(rng.uniform(0.5 * sum(ring_style.size), ring_style.size[1]))
        )
        hole = ndimage.binary_fill_holes(ring.mask) & ~ring.mask
        hys, hxs = np.nonzero(hole)
        if len(hys) == 0:
            return None
        cap = 2.0 * float(ndimage.distance_transform_edt(hole).max()) - 1.0
        if cap < inner_style.size[0] * 0.9:
            return None
        inner = make_shape(
            inner_style,
            rng,
            size=float(rng.uniform(inner_style.size[0] * 0.9, min(cap, inner_style.size[1]))),
        )
        rs = _random_free(ring, canvas, rng)
        if rs is None:
            return None
        ih, iw = inner.mask.shape
        iys, ixs = np.nonzero(inner.mask)
        cy, cx = hys.mean(), hxs.mean()
        for _ in range(8):
            oy = int(round(cy - ih / 2 + rng.uniform(-2, 2)))
            ox = int(round(cx - iw / 2 + rng.uniform(-2, 2)))
            yy, xx = iys + oy, ixs + ox
            if (
                (yy >= 0).all()
                and (xx >= 0).all()
                and (yy < hole.shape[0]).all()
                and (xx < hole.shape[1]).all()
            ):
                if hole[yy, xx].all():
                    pos = (rs[0] + oy, rs[1] + ox)
                    if pred == "in hole of":
                        return inner, pos, ring, rs, True
                    return ring, rs, inner, pos, False
        return None

    obj = make_shape(o_style, rng)
    op = _random_free(obj, canvas, rng, margin=0)
    if op is None:
        return None
    anchor = np.zeros((h, w), dtype=bool)
    oh, ow = obj.mask.shape
    anchor[op[0] : op[0] + oh, op[1] : op[1] + ow] = obj.mask
    sub = make_shape(s_style, rng)
    sh, sw = sub.mask.shape
    sys_, sxs = np.nonzero(sub.mask)
    if pred == "on":
        if sh > oh or sw > ow:
            return None
        for _ in range(12):
            y = op[0] + int(rng.integers(0, oh - sh + 1))
            x = op[1] + int(rng.integers(0, ow - sw + 1))
            if anchor[sys_ + y, sxs + x].mean() >= 0.5:
                return sub, (y, x), obj, op, True
        return None
    if pred == "partly covering":
        bys, bxs = np.nonzero(anchor & ~ndimage.binary_erosion(anchor))
        for _ in range(12):
            k = int(rng.integers(len(bys)))
            y, x = int(bys[k] - sh // 2 + rng.integers(-2, 3)), int(bxs[k] - sw // 2 + rng.integers(-2, 3))
            if not _fits(sub, y, x, h, w):
                continue
            hidden = anchor[sys_ + y, sxs + x].sum() / anchor.sum()
            inside = y >= op[0] and x >= op[1] and y + sh <= op[0] + oh and x + sw <= op[1] + ow
            if 0.08 <= hidden <= 0.6 and not inside:
                return sub, (y, x), obj, op, True
        return None
    if pred in ("touching", "near"):
        round_anchor = o_style.shape in ("disc", "ring")
        base = rng.integers(4) * np.pi / 2
        angle = base + (np.pi / 4 + rng.uniform(-0.25, 0.25) if round_anchor else rng.uniform(0, np.pi / 2))
        stop = 1.0 if pred == "touching" else float(rng.uniform(4.0, 9.0))
        pos = _ray_scan(sub, anchor, float(angle), stop, h, w)
        if pos is None:
            return None
        return sub, pos, obj, op, bool(rng.random() < 0.5)
    # Box-decidable placements: far enough apart that "near" is false.
    gap = int(rng.integers(int(NEAR_MAX) + 3, int(NEAR_MAX) + 20))
    if pred == "above":
        y = op[0] - gap - sh
        x = op[1] + int(rng.integers(-sw + 3, ow - 2))
    elif pred == "below":
        y = op[0] + oh + gap
        x = op[1] + int(rng.integers(-sw + 3, ow - 2))
    elif pred == "left of":
        y = op[0] + int(rng.integers(-sh, oh + 1))
        x = op[1] - gap - sw
    else:
        raise ValueError(f"unknown predicate {pred!r}; expected one of {PREDICATES}")
    return sub, (y, x), obj, op, False


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


def compose_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    coco: bool,
    plan: list[tuple[str, int, int]],
    singles: list[int],
    crowd_label: int | None = None,
) -> Scene:
    """Render one image.

    plan: (predicate, subject label, object label) pairs to place so the predicate holds (labels index
    :data:`SOURCE_CLASSES` if ``coco`` else :data:`TARGET_CLASSES`); a pair that cannot be placed so is
    placed as two single objects instead.
    singles: labels of further objects placed anywhere free (clearance >= 3 px from everything).
    crowd_label: if given, a crowd of 4-7 tiny instances of that source label (COCO ``iscrowd``) is added.
    """
    names = SOURCE_CLASSES if coco else TARGET_CLASSES
    styles = [class_style(n, coco) for n in names]
    canvas = _Canvas(height, width)
    objects: list[SceneObject] = []
    planned: list[tuple[str, int, int]] = []
    for pred, s_lab, o_lab in plan:
        got = None
        for _ in range(4):
            got = _plan_pair(pred, styles[s_lab], styles[o_lab], canvas, rng)
            if got is None:
                continue
            sub, (sy, sx), obj, (oy, ox), subject_last = got
            if not (_fits(sub, sy, sx, height, width) and _fits(obj, oy, ox, height, width)):
                got = None
                continue
            ys, xs = np.nonzero(sub.mask)
            ys2, xs2 = np.nonzero(obj.mask)
            if not (canvas.free(ys + sy, xs + sx) and canvas.free(ys2 + oy, xs2 + ox)):
                got = None
                continue
            break
        if got is None:
            singles = [s_lab, o_lab, *singles]  # keep the objects, placed on their own
            continue
        s_obj = _place(sub, s_lab, sy, sx, height, width, styles[s_lab].shape == "ring")
        o_obj = _place(obj, o_lab, oy, ox, height, width, styles[o_lab].shape == "ring")
        first, second = (o_obj, s_obj) if subject_last else (s_obj, o_obj)
        objects += [first, second]
        n = len(objects)
        planned.append((pred, n - 1, n - 2) if subject_last else (pred, n - 2, n - 1))
        canvas.add(s_obj.full | o_obj.full)
    for lab in singles:
        for _ in range(3):  # a smaller draw of the class may fit where the first did not
            shp = make_shape(styles[lab], rng)
            pos = _random_free(shp, canvas, rng)
            if pos is not None:
                break
        if pos is None:
            continue
        ob = _place(shp, lab, pos[0], pos[1], height, width, styles[lab].shape == "ring")
        objects.append(ob)
        canvas.add(ob.full)
    crowds: list[tuple[int, np.ndarray]] = []
    crowd_members: list[SceneObject] = []
    if crowd_label is not None:
        cm = np.zeros((height, width), dtype=bool)
        lo, hi = styles[crowd_label].aspect
        small = ClassStyle(styles[crowd_label].shape, (7, 10), (min(lo, 2.0), min(hi, 2.0)), (0.4, 0.5))
        for _ in range(int(rng.integers(4, 8))):
            shp = make_shape(small, rng)
            pos = _random_free(shp, canvas, rng)
            if pos is None:
                continue
            ob = _place(shp, crowd_label, pos[0], pos[1], height, width, False)
            crowd_members.append(ob)
            cm |= ob.full
            canvas.add(ob.full)
        if cm.any():
            crowds.append((crowd_label, cm))

    # Paint: background, then objects in order (later on top), each with a 1-px darker rim so that touching
    # objects of the same colour stay separable in the pixels.
    img = background(height, width, rng)
    crowd_colour = rng.uniform(30, 230, size=3)
    for k, ob in enumerate(objects + crowd_members):
        style = styles[ob.label]
        is_crowd = k >= len(objects)
        if style.colour is None or coco:
            base = crowd_colour if is_crowd else rng.uniform(20, 240, size=3)
            kind = _ALL_TEXTURES[int(rng.integers(len(_ALL_TEXTURES)))]
        else:
            base = np.clip(np.array(style.colour, np.float64) + rng.uniform(-18, 18, size=3), 0, 255)
            kind = style.textures[int(rng.integers(len(style.textures)))]
        y1, x1, y2, x2 = _bbox_int(ob.full)
        tex = texture(kind, y2 - y1, x2 - x1, base, rng)
        local = ob.full[y1:y2, x1:x2]
        rim = local & ~ndimage.binary_erosion(local)
        tex[rim] *= 0.6
        region = img[y1:y2, x1:x2]
        region[local] = tex[local]
    scene = scene_from_objects(np.clip(img, 0, 255).astype(np.uint8), objects)
    scene.planned, scene.crowds = planned, crowds
    return scene


def scene_from_objects(image: np.ndarray, objects: list[SceneObject]) -> Scene:
    """A :class:`Scene` from objects in drawing order: visible masks (what later objects leave uncovered)
    and amodal boxes. Also the way to build hand-made scenes for testing :func:`pair_predicates`."""
    height, width = image.shape[:2]
    n = len(objects)
    visible = np.zeros((n, height, width), dtype=bool)
    above = np.zeros((height, width), dtype=bool)
    for i in range(n - 1, -1, -1):
        visible[i] = objects[i].full & ~above
        above |= objects[i].full
    boxes = np.stack([mask_box(o.full) for o in objects]) if n else np.zeros((0, 4))
    return Scene(image, objects, visible, boxes)


def _bbox_int(m: np.ndarray) -> tuple[int, int, int, int]:
    b = mask_box(m).astype(int)
    return int(b[1]), int(b[0]), int(b[3]), int(b[2])


# ---------------------------------------------------------------------------------------------------------
# Geometric predicates
# ---------------------------------------------------------------------------------------------------------


def pair_predicates(scene: Scene) -> dict[tuple[int, int], list[str]]:
    """The predicates true for every ordered pair of distinct objects, in :data:`PREDICATE_PRIORITY` order.

    Definitions (F = amodal mask, V = visible mask, z = drawing order, b = box of F):

    * ``in hole of`` (s, o): o is a ring and F_s lies entirely in o's hole (fill_holes(F_o) minus F_o);
      ``around`` (s, o) = ``in hole of`` (o, s).
    * ``on``: z_s > z_o, b_s inside b_o and at least 30 % of F_s lies over F_o.
    * ``partly covering``: z_s > z_o, b_s not inside b_o, and s hides at least 5 % of F_o.
    * ``touching``: F_s, F_o disjoint and the visible masks 8-adjacent (distance <= 1.5 px).
    * ``near``: F_s, F_o disjoint and 3 <= distance(V_s, V_o) <= 10 px.
    * ``above``: b_s ends above b_o starts and the boxes overlap horizontally; ``below`` mirrors it.
    * ``left of``: b_s ends left of where b_o starts.

    Returns {(s, o): [true predicates]} for pairs with at least one true predicate.
    """
    objs = scene.objects
    n = len(objs)
    boxes = scene.boxes
    areas = [int(o.full.sum()) for o in objs]
    holes: list[np.ndarray | None] = []
    for o in objs:
        holes.append(ndimage.binary_fill_holes(o.full) & ~o.full if o.is_ring else None)
    edt: dict[int, tuple[tuple[int, int, int, int], np.ndarray]] = {}
    vis_any = scene.visible.reshape(n, -1).any(axis=1) if n else np.zeros(0, dtype=bool)
    out: dict[tuple[int, int], list[str]] = {}
    for s in range(n):
        for o in range(n):
            if s == o:
                continue
            bs, bo = boxes[s], boxes[o]
            preds: list[str] = []
            hole_o, hole_s = holes[o], holes[s]
            if hole_o is not None and hole_o.any() and not (objs[s].full & ~hole_o).any():
                preds.append("in hole of")
            if hole_s is not None and hole_s.any() and not (objs[o].full & ~hole_s).any():
                preds.append("around")
            inter = int((objs[s].full & objs[o].full).sum())
            inside = bs[0] >= bo[0] and bs[1] >= bo[1] and bs[2] <= bo[2] and bs[3] <= bo[3]
            if inter > 0 and s > o:
                if inside and inter >= ON_MIN_OVERLAP * areas[s]:
                    preds.append("on")
                if not inside and inter >= COVER_MIN_HIDDEN * areas[o]:
                    preds.append("partly covering")
            box_gap = max(bo[0] - bs[2], bs[0] - bo[2], bo[1] - bs[3], bs[1] - bo[3], 0.0)
            if inter == 0 and box_gap <= NEAR_MAX + 1 and vis_any[s] and vis_any[o]:
                if o not in edt:
                    edt[o] = _local_edt(scene.visible[o], int(NEAR_MAX) + 2)
                (y1, x1, y2, x2), dist = edt[o]
                near_s = scene.visible[s][y1:y2, x1:x2]
                # Subject pixels outside the window are farther than NEAR_MAX: only the window matters.
                d = float(dist[near_s].min()) if near_s.any() else np.inf
                if d <= TOUCH_MAX:
                    preds.append("touching")
                elif 3.0 <= d <= NEAR_MAX:
                    preds.append("near")
            x_overlap = min(bs[2], bo[2]) > max(bs[0], bo[0])
            if bs[3] <= bo[1] and x_overlap:
                preds.append("above")
            if bo[3] <= bs[1] and x_overlap:
                preds.append("below")
            if bs[2] <= bo[0]:
                preds.append("left of")
            if preds:
                out[(s, o)] = sorted(preds, key=PREDICATE_PRIORITY.index)
    return out


def _local_edt(m: np.ndarray, margin: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Distance to the nearest pixel of a non-empty mask ``m``, in a window of ``margin`` px around it.

    Exact inside the window (every mask pixel lies in it). Returns ((y1, x1, y2, x2), Float[y2-y1, x2-x1]).
    """
    h, w = m.shape
    y1, x1, y2, x2 = _bbox_int(m)
    y1, x1, y2, x2 = max(y1 - margin, 0), max(x1 - margin, 0), min(y2 + margin, h), min(x2 + margin, w)
    return (y1, x1, y2, x2), ndimage.distance_transform_edt(~m[y1:y2, x1:x2])


def feasible_pairs(pred: str) -> list[tuple[int, int]]:
    """(subject, object) target label pairs (0-based) a scene can place for ``pred``.

    ``in hole of`` needs a ring object whose largest hole fits the subject's smallest size (``around``
    mirrors it); ``on`` needs a subject smaller than the object; the other predicates allow every pair.
    """
    styles = [_TARGET_STYLES[n] for n in TARGET_CLASSES]
    pairs = []
    for s, ss in enumerate(styles):
        for o, os_ in enumerate(styles):
            if pred in ("in hole of", "around"):
                ring, inner = (os_, ss) if pred == "in hole of" else (ss, os_)
                ok = ring.shape == "ring" and inner.size[0] * 1.25 <= ring.size[1] * ring.hole[1] - 2
            elif pred == "on":
                ok = ss.size[1] <= 0.75 * os_.size[0] and os_.shape != "bar"
            else:
                ok = True
            if ok:
                pairs.append((s, o))
    return pairs
