"""Label spaces, class looks and predicate constants of the synthetic benchmark.

Where this sits: the bottom of :mod:`sgseg.data.synthetic`; everything else in the package reads these
tables. Nothing here draws random numbers or touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass

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
