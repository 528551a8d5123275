"""One synthetic image: compose a scene from planned pairs and singles, paint it, and read off its predicates.

Where this sits: :mod:`sgseg.data.synthetic.images` calls :func:`compose_scene` once per image; the pairs are
placed by the per-predicate planners of :mod:`sgseg.data.synthetic.planners`. Which relations are true is
decided afterwards from the rendered masks (:func:`pair_predicates`), not from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sgseg.data.synthetic.labels import (
    _ALL_TEXTURES,
    COVER_MIN_HIDDEN,
    NEAR_MAX,
    ON_MIN_OVERLAP,
    PREDICATE_PRIORITY,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TOUCH_MAX,
    ClassStyle,
    class_style,
)
from sgseg.data.synthetic.layout import SceneObject, _Canvas, _fits, _place, _random_free
from sgseg.data.synthetic.planners import plan_pair
from sgseg.data.synthetic.shapes import _bbox_int, _local_edt, background, make_shape, mask_box, texture


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
            got = plan_pair(pred, styles[s_lab], styles[o_lab], canvas, rng)
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
