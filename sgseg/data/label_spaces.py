"""Label spaces in code: VG150 objects and predicates, COCO's 80 categories, and the checked readers of them.

Where this sits: the bottom of the data layer. Loaders (``visual_genome.py``, ``coco.py``), the mask transfer
(VG ↔ COCO similarity) and evaluation all index classes through these tuples, so the class lists live here
once, in code (not YAML), and files on disk are *checked* against them rather than trusted.

Index convention (explicit, because off-by-one here silently corrupts everything downstream):
the tuples list the foreground classes only, in index order, so class ``k`` (1-based, as stored in the VG h5
``labels``/``predicates`` and in model logits) is ``TUPLE[k - 1]``. Index 0 is background in every label
space; :func:`with_background` returns the ``idx_to_*`` list with ``"__background__"`` at position 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sgseg.data.errors import DatasetError

BACKGROUND = "__background__"

# fmt: off
VG150_OBJECT_CLASSES: tuple[str, ...] = (
    "airplane", "animal", "arm", "bag", "banana", "basket", "beach", "bear", "bed", "bench", "bike",
    "bird", "board", "boat", "book", "boot", "bottle", "bowl", "box", "boy", "branch", "building", "bus",
    "cabinet", "cap", "car", "cat", "chair", "child", "clock", "coat", "counter", "cow", "cup", "curtain",
    "desk", "dog", "door", "drawer", "ear", "elephant", "engine", "eye", "face", "fence", "finger", "flag",
    "flower", "food", "fork", "fruit", "giraffe", "girl", "glass", "glove", "guy", "hair", "hand",
    "handle", "hat", "head", "helmet", "hill", "horse", "house", "jacket", "jean", "kid", "kite", "lady",
    "lamp", "laptop", "leaf", "leg", "letter", "light", "logo", "man", "men", "motorcycle", "mountain",
    "mouth", "neck", "nose", "number", "orange", "pant", "paper", "paw", "people", "person", "phone",
    "pillow", "pizza", "plane", "plant", "plate", "player", "pole", "post", "pot", "racket", "railing",
    "rock", "roof", "room", "screen", "seat", "sheep", "shelf", "shirt", "shoe", "short", "sidewalk",
    "sign", "sink", "skateboard", "ski", "skier", "sneaker", "snow", "sock", "stand", "street",
    "surfboard", "table", "tail", "tie", "tile", "tire", "toilet", "towel", "tower", "track", "train",
    "tree", "truck", "trunk", "umbrella", "vase", "vegetable", "vehicle", "wave", "wheel", "window",
    "windshield", "wing", "wire", "woman", "zebra",
)

VG150_PREDICATES: tuple[str, ...] = (
    "above", "across", "against", "along", "and", "at", "attached to", "behind", "belonging to", "between",
    "carrying", "covered in", "covering", "eating", "flying in", "for", "from", "growing on",
    "hanging from", "has", "holding", "in", "in front of", "laying on", "looking at", "lying on",
    "made of", "mounted on", "near", "of", "on", "on back of", "over", "painted on", "parked on",
    "part of", "playing", "riding", "says", "sitting on", "standing on", "to", "under", "using",
    "walking in", "walking on", "watching", "wearing", "wears", "with",
)

COCO_OBJECT_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# Official COCO 2017 category ids of COCO_OBJECT_CLASSES, in the same order (ids 1..90 with 10 gaps).
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
    32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
    88, 89, 90,
)
# fmt: on


def with_background(names: Sequence[str]) -> list[str]:
    """The ``idx_to_*`` list of a label space: ``["__background__", *names]``, so ``list[k]`` is class k."""
    return [BACKGROUND, *names]


def _first_mismatch(got: Sequence[str], expected: Sequence[str]) -> int | None:
    """0-based position of the first differing entry (or of the length difference), None if equal."""
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return i
    if len(got) != len(expected):
        return min(len(got), len(expected))
    return None


def check_names(got: Sequence[str], expected: Sequence[str], *, what: str, source: str) -> None:
    """Raise :class:`DatasetError` naming the first 1-based index where ``got`` differs from ``expected``."""
    i = _first_mismatch(got, expected)
    if i is None:
        return
    g = repr(got[i]) if i < len(got) else "<missing>"
    e = repr(expected[i]) if i < len(expected) else "<none expected>"
    raise DatasetError(
        f"{source}: {what} differ from the built-in list at index {i + 1}: file has {g}, expected {e} "
        f"({len(got)} in file, {len(expected)} expected); use the standard file of that dataset, or set "
        "check_label_space=False for a custom label space (e.g. the synthetic benchmark)"
    )


@dataclass(frozen=True)
class VGDicts:
    """The contents of a VG-SGG dicts json, ordered by index (foreground only, class k at position k - 1).

    object_classes / predicates / attributes: names in index order.
    object_count / predicate_count: the preprocessing's instance counts per name (empty if absent).
    """

    object_classes: tuple[str, ...]
    predicates: tuple[str, ...]
    attributes: tuple[str, ...] = ()
    object_count: dict[str, int] = field(default_factory=dict)
    predicate_count: dict[str, int] = field(default_factory=dict)

    @property
    def idx_to_label(self) -> list[str]:
        return with_background(self.object_classes)

    @property
    def idx_to_predicate(self) -> list[str]:
        return with_background(self.predicates)


def _ordered_names(info: dict, idx_key: str, to_idx_key: str, source: str) -> tuple[str, ...]:
    """Names in 1-based index order from ``idx_to_*`` (str keys "1".."K"), cross-checked with ``*_to_idx``."""
    if idx_key not in info:
        raise DatasetError(f"{source}: key {idx_key!r} missing; this is not a VG-SGG dicts json")
    idx_to = info[idx_key]
    try:
        keys = sorted(int(k) for k in idx_to)
    except ValueError as e:
        raise DatasetError(f"{source}: {idx_key!r} has a non-integer key ({e}); the file is corrupt") from e
    if keys != list(range(1, len(keys) + 1)):
        raise DatasetError(
            f"{source}: {idx_key!r} keys must be 1..{len(keys)} without gaps (index 0 is the implicit "
            f"background), got {keys[:5]}…; the file is corrupt"
        )
    names = tuple(idx_to[str(k)] for k in keys)
    to_idx = info.get(to_idx_key)
    if to_idx is not None:
        for k, name in enumerate(names, start=1):
            if to_idx.get(name) != k:
                raise DatasetError(
                    f"{source}: {to_idx_key!r}[{name!r}] = {to_idx.get(name)!r} but {idx_key!r}[{k}] = "
                    f"{name!r}; the two maps disagree, the file is corrupt"
                )
    return names


def load_vg_dicts(
    path: str | Path,
    expected_objects: Sequence[str] | None = VG150_OBJECT_CLASSES,
    expected_predicates: Sequence[str] | None = VG150_PREDICATES,
) -> VGDicts:
    """Load a ``VG-SGG-dicts-with-attri.json`` (or ``VG-SGG-dicts.json``) and check it against the code lists.

    expected_objects / expected_predicates: the lists the file must equal (default VG150); None skips the
    check (a custom label space). Raises :class:`DatasetError` naming the file and the first mismatching
    1-based index.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"VG dicts file not found at {path}; download VG-SGG-dicts-with-attri.json of the VG150 "
            "preprocessing into the dataset root (or run `python -m sgseg.data.synthetic`)"
        )
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"VG dicts file {path} is not readable JSON ({e}); download it again") from e
    if not isinstance(info, dict):
        raise DatasetError(f"VG dicts file {path}: top level must be an object, got {type(info).__name__}")
    src = str(path)
    objects = _ordered_names(info, "idx_to_label", "label_to_idx", src)
    predicates = _ordered_names(info, "idx_to_predicate", "predicate_to_idx", src)
    attributes: tuple[str, ...] = ()
    if "idx_to_attribute" in info:
        attributes = _ordered_names(info, "idx_to_attribute", "attribute_to_idx", src)
    if expected_objects is not None:
        check_names(objects, expected_objects, what="object classes (idx_to_label)", source=src)
    if expected_predicates is not None:
        check_names(predicates, expected_predicates, what="predicates (idx_to_predicate)", source=src)
    return VGDicts(
        object_classes=objects,
        predicates=predicates,
        attributes=attributes,
        object_count={str(k): int(v) for k, v in info.get("object_count", {}).items()},
        predicate_count={str(k): int(v) for k, v in info.get("predicate_count", {}).items()},
    )


def coco_category_to_contiguous(
    categories: Sequence[dict],
    source: str = "COCO annotation file",
    expected: Sequence[str] | None = COCO_OBJECT_CLASSES,
) -> dict[int, int]:
    """Map COCO category ids to contiguous labels 1..K in the standard order (sorted category id).

    categories: the ``categories`` list of an instances json (dicts with ``id`` and ``name``). Their names,
    sorted by id, must equal ``expected`` (default the 80 COCO classes; None accepts any label space, e.g.
    the synthetic benchmark's); otherwise :class:`DatasetError` names the first mismatching index.
    """
    try:
        cats = sorted(((int(c["id"]), str(c["name"])) for c in categories), key=lambda t: t[0])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(
            f"{source}: every entry of 'categories' needs an integer 'id' and a 'name' ({e})"
        ) from e
    names = [n for _, n in cats]
    if len({cid for cid, _ in cats}) != len(cats):
        raise DatasetError(f"{source}: duplicate category ids in 'categories'; the file is corrupt")
    if expected is not None:
        check_names(names, expected, what="COCO categories (sorted by id)", source=source)
    return {cid: k for k, (cid, _) in enumerate(cats, start=1)}
