"""Predicate planners: one small class per predicate, placing a (subject, object) pair so the predicate holds.

Where this sits: :func:`sgseg.data.synthetic.scene.compose_scene` asks :func:`plan_pair` for the shapes and
positions of each planned pair; :func:`feasible_pairs` (which class pairs a planner can place) feeds the
zero-shot hold-out and the pair sampling of :mod:`sgseg.data.synthetic.images`. A planner only *aims* at its
predicate: what is annotated is decided from the rendered masks (:func:`sgseg.data.synthetic.scene.pair_predicates`).

A plan is ``(subject shape, subject y0x0, object shape, object y0x0, subject drawn last)`` or None when the
pair cannot be placed on this canvas (the scene then places the two objects on their own). Every planner
draws from ``rng`` in a fixed order: the generated benchmark depends on it byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sgseg.data.synthetic.labels import _TARGET_STYLES, NEAR_MAX, PREDICATES, TARGET_CLASSES, ClassStyle
from sgseg.data.synthetic.layout import _Canvas, _fits, _random_free, _ray_scan
from sgseg.data.synthetic.shapes import Shape, make_shape

Plan = tuple[Shape, tuple[int, int], Shape, tuple[int, int], bool]


class PairPlanner:
    """Places a (subject, object) pair meant to satisfy one predicate; every class pair is feasible."""

    def feasible(self, subject: ClassStyle, obj: ClassStyle) -> bool:
        """Whether a pair of these classes can be placed (checked on the class styles' size ranges)."""
        return True

    def place(
        self, subject: ClassStyle, obj: ClassStyle, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        raise NotImplementedError


class InHole(PairPlanner):
    """``in hole of`` (``inner_is_subject``) and its mirror ``around``: a ring, and a shape inside its hole."""

    def __init__(self, inner_is_subject: bool) -> None:
        self.inner_is_subject = inner_is_subject

    def _roles(self, subject: ClassStyle, obj: ClassStyle) -> tuple[ClassStyle, ClassStyle]:
        """(inner, ring) styles."""
        return (subject, obj) if self.inner_is_subject else (obj, subject)

    def feasible(self, subject: ClassStyle, obj: ClassStyle) -> bool:
        inner, ring = self._roles(subject, obj)
        return ring.shape == "ring" and inner.size[0] * 1.25 <= ring.size[1] * ring.hole[1] - 2

    def place(
        self, subject: ClassStyle, obj: ClassStyle, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        inner_style, ring_style = self._roles(subject, obj)
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
                    if self.inner_is_subject:
                        return inner, pos, ring, rs, True
                    return ring, rs, inner, pos, False
        return None


@dataclass
class _Anchor:
    """The object of an anchored pair, already placed: its shape, top-left (y0, x0) and Bool[H, W] mask."""

    shape: Shape
    pos: tuple[int, int]
    mask: np.ndarray
    style: ClassStyle


class Anchored(PairPlanner):
    """Places the object first, at a free spot, then draws the subject and places it relative to the object."""

    def place(
        self, subject: ClassStyle, obj: ClassStyle, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        shape = make_shape(obj, rng)
        op = _random_free(shape, canvas, rng, margin=0)
        if op is None:
            return None
        mask = np.zeros((canvas.h, canvas.w), dtype=bool)
        oh, ow = shape.mask.shape
        mask[op[0] : op[0] + oh, op[1] : op[1] + ow] = shape.mask
        sub = make_shape(subject, rng)
        return self.place_subject(sub, _Anchor(shape, op, mask, obj), canvas, rng)

    def place_subject(
        self, sub: Shape, anchor: _Anchor, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        raise NotImplementedError


class On(Anchored):
    """``on``: the subject drawn over the object, its box inside the object's, half of it over the mask."""

    def feasible(self, subject: ClassStyle, obj: ClassStyle) -> bool:
        return subject.size[1] <= 0.75 * obj.size[0] and obj.shape != "bar"

    def place_subject(
        self, sub: Shape, anchor: _Anchor, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        (sh, sw), (oh, ow), op = sub.mask.shape, anchor.shape.mask.shape, anchor.pos
        sys_, sxs = np.nonzero(sub.mask)
        if sh > oh or sw > ow:
            return None
        for _ in range(12):
            y = op[0] + int(rng.integers(0, oh - sh + 1))
            x = op[1] + int(rng.integers(0, ow - sw + 1))
            if anchor.mask[sys_ + y, sxs + x].mean() >= 0.5:
                return sub, (y, x), anchor.shape, op, True
        return None


class PartlyCovering(Anchored):
    """``partly covering``: the subject drawn over the object's rim, hiding 8–60 % of it, box not inside."""

    def place_subject(
        self, sub: Shape, anchor: _Anchor, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        (sh, sw), (oh, ow), op = sub.mask.shape, anchor.shape.mask.shape, anchor.pos
        sys_, sxs = np.nonzero(sub.mask)
        mask = anchor.mask
        bys, bxs = np.nonzero(mask & ~ndimage.binary_erosion(mask))
        for _ in range(12):
            k = int(rng.integers(len(bys)))
            y, x = int(bys[k] - sh // 2 + rng.integers(-2, 3)), int(bxs[k] - sw // 2 + rng.integers(-2, 3))
            if not _fits(sub, y, x, canvas.h, canvas.w):
                continue
            hidden = mask[sys_ + y, sxs + x].sum() / mask.sum()
            inside = y >= op[0] and x >= op[1] and y + sh <= op[0] + oh and x + sw <= op[1] + ow
            if 0.08 <= hidden <= 0.6 and not inside:
                return sub, (y, x), anchor.shape, op, True
        return None


class Contact(Anchored):
    """``touching`` (``gap=None``: slide in until 1 px away) and ``near`` (stop at a gap drawn from ``gap``).

    The subject slides toward the object along a ray (diagonal for round objects, so their boxes overlap
    although the masks do not touch: only masks tell ``touching``/``near`` from ``on``).
    """

    def __init__(self, gap: tuple[float, float] | None) -> None:
        self.gap = gap

    def place_subject(
        self, sub: Shape, anchor: _Anchor, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        round_anchor = anchor.style.shape in ("disc", "ring")
        base = rng.integers(4) * np.pi / 2
        angle = base + (np.pi / 4 + rng.uniform(-0.25, 0.25) if round_anchor else rng.uniform(0, np.pi / 2))
        stop = 1.0 if self.gap is None else float(rng.uniform(*self.gap))
        pos = _ray_scan(sub, anchor.mask, float(angle), stop, canvas.h, canvas.w)
        if pos is None:
            return None
        return sub, pos, anchor.shape, anchor.pos, bool(rng.random() < 0.5)


class Beside(Anchored):
    """Box-decidable placements (``above``/``below``/``left of``): far enough apart that ``near`` is false."""

    def place_subject(
        self, sub: Shape, anchor: _Anchor, canvas: _Canvas, rng: np.random.Generator
    ) -> Plan | None:
        gap = int(rng.integers(int(NEAR_MAX) + 3, int(NEAR_MAX) + 20))
        y, x = self.offset(sub.mask.shape, anchor.shape.mask.shape, anchor.pos, gap, rng)
        return sub, (y, x), anchor.shape, anchor.pos, False

    def offset(
        self,
        sub_size: tuple[int, int],
        obj_size: tuple[int, int],
        op: tuple[int, int],
        gap: int,
        rng: np.random.Generator,
    ) -> tuple[int, int]:
        """The subject's top-left (y0, x0) given both local frame sizes (h, w) and the object's top-left."""
        raise NotImplementedError


class Above(Beside):
    def offset(self, sub_size, obj_size, op, gap, rng):
        (sh, sw), (_oh, ow) = sub_size, obj_size
        return op[0] - gap - sh, op[1] + int(rng.integers(-sw + 3, ow - 2))


class Below(Beside):
    def offset(self, sub_size, obj_size, op, gap, rng):
        (_sh, sw), (oh, ow) = sub_size, obj_size
        return op[0] + oh + gap, op[1] + int(rng.integers(-sw + 3, ow - 2))


class LeftOf(Beside):
    def offset(self, sub_size, obj_size, op, gap, rng):
        (sh, sw), (oh, _ow) = sub_size, obj_size
        return op[0] + int(rng.integers(-sh, oh + 1)), op[1] - gap - sw


#: The planner of every predicate.
PLANNERS: dict[str, PairPlanner] = {
    "above": Above(),
    "around": InHole(inner_is_subject=False),
    "below": Below(),
    "in hole of": InHole(inner_is_subject=True),
    "left of": LeftOf(),
    "near": Contact(gap=(4.0, 9.0)),
    "on": On(),
    "partly covering": PartlyCovering(),
    "touching": Contact(gap=None),
}
assert set(PLANNERS) == set(PREDICATES), "one planner per predicate"


def _planner(pred: str) -> PairPlanner:
    try:
        return PLANNERS[pred]
    except KeyError:
        raise ValueError(f"unknown predicate {pred!r}; expected one of {PREDICATES}") from None


def plan_pair(
    pred: str, s_style: ClassStyle, o_style: ClassStyle, canvas: _Canvas, rng: np.random.Generator
) -> Plan | None:
    """Shapes and positions for a (subject, object) pair meant to satisfy ``pred`` (see the module doc)."""
    return _planner(pred).place(s_style, o_style, canvas, rng)


def feasible_pairs(pred: str) -> list[tuple[int, int]]:
    """(subject, object) target label pairs (0-based) a scene can place for ``pred``.

    ``in hole of`` needs a ring object whose largest hole fits the subject's smallest size (``around``
    mirrors it); ``on`` needs a subject smaller than the object; the other predicates allow every pair.
    """
    planner = _planner(pred)
    styles = [_TARGET_STYLES[n] for n in TARGET_CLASSES]
    return [
        (s, o) for s, ss in enumerate(styles) for o, os_ in enumerate(styles) if planner.feasible(ss, os_)
    ]
