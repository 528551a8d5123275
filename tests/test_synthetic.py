"""The synthetic benchmark: real file formats, geometric truth of the labels, word vectors, long tail,
zero-shot hold-out, determinism and the stamp / regeneration logic."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage
from scipy.spatial.distance import cdist

from sgseg.data.synthetic import (
    FORMAT_VERSION,
    PREDICATES,
    SOURCE_CATEGORY_IDS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TARGET_TO_SOURCE,
    SceneObject,
    SyntheticConfig,
    SyntheticLayout,
    benchmark,
    cli,
    compose_scene,
    encode_vg_boxes,
    ensure_synthetic,
    feasible_pairs,
    generate,
    held_out_triplets,
    pair_predicates,
    read_stamp,
    scene_from_objects,
)
from sgseg.data.synthetic.writers import _uncompressed_rle
from sgseg.data.visual_genome import CORRUPT_IMAGE_IDS, decode_vg_boxes

# Big enough for the long tail and a few mask-only relations, small enough to render in ~2 s on one core.
# first_vg_image_id = 1585 makes the corrupt id 1592 fall inside the VG id range.
CFG = SyntheticConfig(
    seed=3, num_vg_train=120, num_vg_test=50, num_coco_train=12, num_coco_val=8, first_vg_image_id=1585
)
TINY = SyntheticConfig(seed=5, num_vg_train=6, num_vg_test=4, num_coco_train=4, num_coco_val=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticLayout:
    out = generate(tmp_path_factory.mktemp("syn") / "synthetic", CFG, num_workers=1)
    return SyntheticLayout.of(out, CFG)


def _h5(layout: SyntheticLayout) -> dict[str, np.ndarray]:
    with h5py.File(layout.vg_root / "VG-SGG-with-attri.h5", "r") as f:
        return {k: f[k][:] for k in f}


def _image_rows(h5: dict[str, np.ndarray], layout: SyntheticLayout) -> list[dict]:
    """image_data.json records aligned with the h5 rows (corrupt ids dropped, as the real loader does)."""
    infos = json.loads((layout.vg_root / "image_data.json").read_text())
    return [d for d in infos if d["image_id"] not in CORRUPT_IMAGE_IDS]


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _digest(root: Path, images: bool) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (images or p.suffix != ".jpg"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------------------- hand-made scenes
def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _obj(m: np.ndarray, ring: bool = False) -> SceneObject:
    return SceneObject(0, m, [], [], ring)


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_predicates_in_hole_vs_on_same_box_relation() -> None:
    # Ring: centre (32, 32), radii 8 < d <= 14. A coin of radius 4 at the centre sits in the hole; a disc of
    # radius 3 centred 11 px right of the centre lies on the band. Both boxes are inside the ring's box.
    img = np.zeros((64, 64, 3), np.uint8)
    ring = _disc(64, 64, 32, 32, 14) & ~_disc(64, 64, 32, 32, 8)
    coin = _disc(64, 64, 32, 32, 4)
    on_band = _disc(64, 64, 32, 43, 3)
    scene = scene_from_objects(img, [_obj(ring, True), _obj(coin), _obj(on_band)])
    b = scene.boxes
    for k in (1, 2):  # subject box inside the ring's box in both cases: boxes alone cannot tell them apart
        assert (b[k, :2] >= b[0, :2]).all() and (b[k, 2:] <= b[0, 2:]).all()
    p = pair_predicates(scene)
    assert p[(1, 0)][0] == "in hole of" and p[(0, 1)][0] == "around"
    assert p[(2, 0)][0] == "on"
    assert "in hole of" not in p[(2, 0)]
    # The ring's box: columns 18..46 -> continuous extent [18, 47); the coin's: [28, 37).
    np.testing.assert_array_equal(b[0], [18, 18, 47, 47])
    np.testing.assert_array_equal(b[1], [28, 28, 37, 37])


def test_predicates_touching_vs_near_with_overlapping_boxes() -> None:
    # Two pairs of radius-8 discs on a diagonal: centres 12 px apart along each axis touch (nearest pixels
    # (25, 25) and (26, 26), distance sqrt 2), centres 14 px apart leave a gap of 3 sqrt 2 = 4.24 px; in both
    # pairs the boxes overlap (x ranges [12, 29) and [24, 41) / [26, 43)), so only masks decide.
    img = np.zeros((100, 100, 3), np.uint8)
    a = _disc(100, 100, 20, 20, 8)
    b = _disc(100, 100, 32, 32, 8)
    c = _disc(100, 100, 60, 20, 8)
    d = _disc(100, 100, 74, 34, 8)
    scene = scene_from_objects(img, [_obj(a), _obj(b), _obj(c), _obj(d)])
    bx = scene.boxes
    for i, j in ((0, 1), (2, 3)):
        assert min(bx[i, 2], bx[j, 2]) > max(bx[i, 0], bx[j, 0])  # x ranges overlap
        assert min(bx[i, 3], bx[j, 3]) > max(bx[i, 1], bx[j, 1])  # y ranges overlap
    gap_ab = cdist(np.argwhere(a), np.argwhere(b)).min()
    gap_cd = cdist(np.argwhere(c), np.argwhere(d)).min()
    assert gap_ab == pytest.approx(2**0.5) and gap_cd == pytest.approx(3 * 2**0.5)
    p = pair_predicates(scene)
    assert p[(0, 1)] == ["touching"] and p[(1, 0)] == ["touching"]
    assert p[(2, 3)] == ["near"] and p[(3, 2)] == ["near"]


def test_predicates_blocks_hand_worked() -> None:
    img = np.zeros((60, 80, 3), np.uint8)
    a = _rect(60, 80, 10, 10, 20, 20)  # x [10, 20)
    b = _rect(60, 80, 10, 20, 20, 30)  # shares a border with a
    c = _rect(60, 80, 10, 35, 20, 45)  # 15 px right of b's last column: left of, not near
    d = _rect(60, 80, 40, 5, 50, 25)  # below a and b, 20 px away
    scene = scene_from_objects(img, [_obj(a), _obj(b), _obj(c), _obj(d)])
    p = pair_predicates(scene)
    assert p[(0, 1)] == ["touching", "left of"]
    assert p[(1, 0)] == ["touching"]
    assert p[(1, 2)] == ["near", "left of"]  # b's last column 29, c's first 35: distance 6
    assert p[(0, 2)] == ["left of"]  # distance 16 > 10
    assert p[(0, 3)] == ["above"] and p[(3, 0)] == ["below"]
    assert p[(2, 1)] == ["near"] and (2, 0) not in p  # near is symmetric; nothing is "right of"


def test_predicates_partly_covering_hand_worked() -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    a = _rect(50, 50, 10, 10, 30, 30)  # 400 px
    b = _rect(50, 50, 25, 25, 36, 36)  # drawn later; hides 5 x 5 = 25 px of a = 6.25 % >= 5 %
    scene = scene_from_objects(img, [_obj(a), _obj(b)])
    p = pair_predicates(scene)
    assert p[(1, 0)] == ["partly covering"]
    assert (0, 1) not in p  # a is under b, and neither box is above / left of the other
    assert scene.visible[0].sum() == 400 - 25
    # hiding only rows/cols 28..29 of a (4 px = 1 %) is below the 5 % threshold
    p2 = pair_predicates(scene_from_objects(img, [_obj(a), _obj(_rect(50, 50, 28, 28, 32, 32))]))
    assert (1, 0) not in p2


# ---------------------------------------------------------------------------------------------- box coding
def test_box_encoding_round_trip_within_one_pixel() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(20, 1200, size=2))
        x1, x2 = np.sort(rng.uniform(0, w, size=2))
        y1, y2 = np.sort(rng.uniform(0, h, size=2))
        box = np.array([[x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)]]).clip(0, [w, h, w, h])
        for scale in (1024, 512):
            enc = encode_vg_boxes(box, w, h, scale)
            # independent route: the reference decoding written out with Python ints
            cx, cy, bw, bh = (int(v) for v in enc[0])
            s = max(w, h) / scale
            ref = np.array([int(cx - bw / 2), int(cy - bh / 2), 0, 0], dtype=np.float64)
            ref[2:] = ref[:2] + [bw, bh]
            ref = (ref * s).clip(0, [w - 1, h - 1, w - 1, h - 1])  # the reference clamps to W - 1, H - 1
            np.testing.assert_allclose(decode_vg_boxes(enc, w, h, scale)[0].numpy(), ref, rtol=1e-6)
            assert np.abs(ref - box[0]).max() <= max(s, 1.0) + 1e-9  # within one scale unit (< 1 px here)


# --------------------------------------------------------------------------------------------- VG format
def test_vg_h5_and_json_format(data: SyntheticLayout) -> None:
    h5 = _h5(data)
    n_img = CFG.num_vg_train + CFG.num_vg_test
    assert h5["split"].shape == (n_img,) and set(np.unique(h5["split"])) == {0, 2}
    assert (h5["split"][: CFG.num_vg_train] == 0).all() and (h5["split"][CFG.num_vg_train :] == 2).all()
    B, R = h5["labels"].shape[0], h5["relationships"].shape[0]
    assert h5["labels"].shape == (B, 1) and h5["attributes"].shape == (B, 10) and not h5["attributes"].any()
    assert h5["boxes_1024"].shape == h5["boxes_512"].shape == (B, 4)
    assert h5["predicates"].shape == (R, 1)
    for k in ("labels", "boxes_1024", "boxes_512", "relationships", "predicates", "split"):
        assert np.issubdtype(h5[k].dtype, np.integer), k
    assert h5["labels"].min() >= 1 and h5["labels"].max() <= len(TARGET_CLASSES)
    assert h5["predicates"].min() >= 1 and h5["predicates"].max() <= len(PREDICATES)
    fb, lb, fr, lr = (
        h5[k] for k in ("img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel")
    )
    assert (fb >= 0).all()  # every image has boxes
    # inclusive ranges tile the box rows in order; -1 marks images without relations (some exist)
    np.testing.assert_array_equal(fb[1:], lb[:-1] + 1)
    assert fb[0] == 0 and lb[-1] == B - 1
    has = fr >= 0
    assert (~has).any() and has.sum() > n_img // 2
    assert (lr[~has] == -1).all()
    np.testing.assert_array_equal(fr[has][1:], lr[has][:-1] + 1)
    assert fr[has][0] == 0 and lr[has][-1] == R - 1
    for i in np.flatnonzero(has):
        rel = h5["relationships"][fr[i] : lr[i] + 1]
        assert ((rel >= fb[i]) & (rel <= lb[i])).all()  # global indices inside the image's box range
        assert (rel[:, 0] != rel[:, 1]).all()
    dicts = json.loads((data.vg_root / "VG-SGG-dicts-with-attri.json").read_text())
    assert dicts["idx_to_label"] == {str(i): n for i, n in enumerate(TARGET_CLASSES, 1)}
    assert dicts["label_to_idx"] == {n: i for i, n in enumerate(TARGET_CLASSES, 1)}
    assert dicts["idx_to_predicate"] == {str(i): n for i, n in enumerate(PREDICATES, 1)}
    assert sum(dicts["predicate_count"].values()) == R and sum(dicts["object_count"].values()) == B
    for key in ("attribute_to_idx", "idx_to_attribute"):
        assert key in dicts


def test_vg_image_data_alignment_and_images(data: SyntheticLayout) -> None:
    from PIL import Image

    raw = json.loads((data.vg_root / "image_data.json").read_text())
    ids = [d["image_id"] for d in raw]
    assert 1592 in ids  # a corrupt id is listed, as in the real file ...
    assert not (data.vg_root / "VG_100K" / "1592.jpg").exists()
    rows = [d for d in raw if d["image_id"] not in CORRUPT_IMAGE_IDS]
    assert len(rows) == CFG.num_vg_train + CFG.num_vg_test  # ... and has no h5 row
    assert len(set(ids)) == len(ids)
    for d in rows[:: max(1, len(rows) // 10)]:
        assert (
            set(d) >= {"image_id", "width", "height", "coco_id", "url", "flickr_id"} and d["coco_id"] is None
        )
        with Image.open(data.vg_root / "VG_100K" / f"{d['image_id']}.jpg") as im:
            assert im.size == (d["width"], d["height"]) and im.format == "JPEG"
            assert CFG.min_image_size <= min(im.size) and max(im.size) <= CFG.max_image_size


def test_hidden_test_masks_align_with_h5_boxes(data: SyntheticLayout) -> None:
    h5 = _h5(data)
    rows = _image_rows(h5, data)
    coco = _quiet_coco(data.vg_test_masks)
    test_rows = np.flatnonzero(h5["split"] == 2)
    assert sorted(coco.getImgIds()) == sorted(rows[r]["image_id"] for r in test_rows)
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == list(range(1, len(TARGET_CLASSES) + 1))
    n_exact = n_total = 0
    for r in test_rows:
        info = rows[r]
        w, h = info["width"], info["height"]
        box_rows = range(h5["img_to_first_box"][r], h5["img_to_last_box"][r] + 1)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["image_id"]]))
        assert sorted(a["vg_box_index"] for a in anns) == list(box_rows)
        for a in anns:
            k = a["vg_box_index"]
            assert a["category_id"] == h5["labels"][k, 0]
            m = coco.annToMask(a)
            assert m.sum() == a["area"]
            vis = np.array(a["bbox"][:2] + [a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]])
            box = decode_vg_boxes(h5["boxes_1024"][k], w, h, 1024)[0].numpy()
            box512 = decode_vg_boxes(h5["boxes_512"][k], w, h, 512)[0].numpy()
            # The visible mask lies inside the (amodal) box; for unoccluded objects they coincide within 1 px.
            assert (vis[:2] >= box[:2] - 1).all() and (vis[2:] <= box[2:] + 1).all()
            assert np.abs(box512 - box).max() <= 1.0
            n_exact += int(np.abs(vis - box).max() <= 1.0)
            n_total += 1
    assert n_exact >= 0.8 * n_total


def _test_split_masks(data: SyntheticLayout):
    """Yield (subject visible mask, object visible mask, subject box, object box, predicate, is duplicate)."""
    h5 = _h5(data)
    rows = _image_rows(h5, data)
    coco = _quiet_coco(data.vg_test_masks)
    for r in np.flatnonzero((h5["split"] == 2) & (h5["img_to_first_rel"] >= 0)):
        info = rows[r]
        b0 = h5["img_to_first_box"][r]
        anns = {a["vg_box_index"]: a for a in coco.loadAnns(coco.getAnnIds(imgIds=[info["image_id"]]))}
        seen = set()
        for j in range(h5["img_to_first_rel"][r], h5["img_to_last_rel"][r] + 1):
            s, o = (int(v) for v in h5["relationships"][j])
            duplicate = (s, o) in seen  # a second row of a pair carries a lower-priority true predicate
            seen.add((s, o))
            box = decode_vg_boxes(h5["boxes_1024"][[s, o]], info["width"], info["height"], 1024).numpy()
            assert s - b0 >= 0
            yield (
                coco.annToMask(anns[s]).astype(bool),
                coco.annToMask(anns[o]).astype(bool),
                box[0],
                box[1],
                PREDICATES[int(h5["predicates"][j, 0]) - 1],
                duplicate,
            )


def test_labels_are_geometrically_true_in_the_hidden_masks(data: SyntheticLayout) -> None:
    """Recompute each test label from the hidden masks and boxes, by routes independent of the generator."""
    checked = Counter()
    for ms, mo, bs, bo, pred, duplicate in _test_split_masks(data):
        # A first row carries the highest-priority true predicate, so "above" also means "not near" etc.;
        # a duplicate row carries a lower-priority one, which is only checked for being true.
        first = not duplicate
        ps, po = np.argwhere(ms), np.argwhere(mo)
        gap = cdist(ps, po).min()
        dilated = ndimage.binary_dilation(ms, structure=np.ones((3, 3), bool))
        inside = (bs[:2] >= bo[:2] - 1).all() and (bs[2:] <= bo[2:] + 1).all()
        if pred == "in hole of" or pred == "around":
            ring, inner = (mo, ms) if pred == "in hole of" else (ms, mo)
            hole = ndimage.binary_fill_holes(ring) & ~ring
            assert hole.any() and not (inner & ~hole).any()
        elif pred == "touching":
            assert not (ms & mo).any() and (dilated & mo).any() and gap <= 1.5
        elif pred == "near":
            assert 3 <= gap <= 10
        elif pred == "on":
            assert inside and (dilated & mo).any()  # sits inside the object's box, over its pixels' border
        elif pred == "partly covering":
            assert not inside and (dilated & mo).any()
        elif pred == "above":
            assert bs[3] <= bo[1] + 1 and not (first and (gap <= 1.5 or 3 <= gap <= 10))
        elif pred == "below":
            assert bo[3] <= bs[1] + 1 and not (first and (gap <= 1.5 or 3 <= gap <= 10))
        elif pred == "left of":
            assert bs[2] <= bo[0] + 1 and not (first and (gap <= 1.5 or 3 <= gap <= 10))
        checked[pred] += 1
    assert sum(checked.values()) > 50
    assert sum(checked[p] for p in ("in hole of", "around", "touching", "on", "partly covering")) >= 5, (
        checked
    )


# ------------------------------------------------------------------------------------- long tail, zero-shot
def test_long_tail_and_zero_shot(data: SyntheticLayout) -> None:
    h5 = _h5(data)
    labels = h5["labels"][:, 0]
    is_train_rel = np.zeros(h5["relationships"].shape[0], dtype=bool)
    for r in np.flatnonzero((h5["split"] == 0) & (h5["img_to_first_rel"] >= 0)):
        is_train_rel[h5["img_to_first_rel"][r] : h5["img_to_last_rel"][r] + 1] = True
    trip = np.column_stack(
        [labels[h5["relationships"][:, 0]], labels[h5["relationships"][:, 1]], h5["predicates"][:, 0]]
    )
    train = {tuple(t) for t in trip[is_train_rel].tolist()}
    test = {tuple(t) for t in trip[~is_train_rel].tolist()}
    counts = np.bincount(trip[is_train_rel, 2], minlength=len(PREDICATES) + 1)[1:]
    assert (counts > 0).all(), dict(zip(PREDICATES, counts))
    assert counts.max() >= 5 * counts.min(), dict(zip(PREDICATES, counts))
    held = held_out_triplets(CFG)
    assert not (train & held)  # held-out triplets never appear in train
    assert test & held  # ... and are planted in test
    zero_shot = test - train
    stamp = read_stamp(data.root)
    assert stamp["stats"]["num_zero_shot_test_triplets"] == len(zero_shot) > 0
    hist = stamp["stats"]["predicate_histogram"]["vg_train"]
    assert [hist[p] for p in PREDICATES] == counts.tolist()


# ------------------------------------------------------------------------------------------------ COCO
def test_coco_json_decodes_with_pycocotools(data: SyntheticLayout) -> None:
    seen = Counter()
    for split, n in (("train2017", CFG.num_coco_train), ("val2017", CFG.num_coco_val)):
        coco = _quiet_coco(data.coco_root / "annotations" / f"instances_{split}.json")
        assert len(coco.getImgIds()) == n
        assert sorted(coco.getCatIds()) == sorted(SOURCE_CATEGORY_IDS)
        assert [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == list(SOURCE_CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            assert (data.coco_root / split / img["file_name"]).is_file()
        for a in coco.loadAnns(coco.getAnnIds()):
            m = coco.annToMask(a)
            assert m.sum() == a["area"] > 0
            rle = coco.annToRLE(a)
            np.testing.assert_allclose(mask_utils.toBbox(rle), a["bbox"])
            seg = a["segmentation"]
            kind = (
                "polygon"
                if isinstance(seg, list)
                else ("rle-list" if isinstance(seg["counts"], list) else "rle")
            )
            seen[(kind, a["iscrowd"])] += 1
            if kind == "polygon":
                assert (
                    a["category_id"] != SOURCE_CATEGORY_IDS[SOURCE_CLASSES.index("ring")]
                )  # rings have holes
    assert seen[("polygon", 0)] > seen[("rle", 0)] > 0
    ann_ids = [a["id"] for s in ("train2017", "val2017") for a in json.loads(
        (data.coco_root / "annotations" / f"instances_{s}.json").read_text())["annotations"]]  # fmt: skip
    assert len(set(ann_ids)) == len(ann_ids)


def test_coco_crowd_rle_uncompressed_round_trip() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((13, 17)) < 0.3
    m[0, 0] = True  # a mask starting with a foreground pixel needs a leading zero-length run
    rle = _uncompressed_rle(m)
    assert rle["counts"][0] == 0 and sum(rle["counts"]) == m.size
    np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, 13, 17)).astype(bool), m)


# ------------------------------------------------------------------------------------------- word vectors
def test_word_vectors_gensim_and_transfer(data: SyntheticLayout) -> None:
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(data.word_vectors), binary=False, no_header=True)
    assert kv.vector_size == CFG.word_dim
    for name in TARGET_CLASSES + SOURCE_CLASSES:
        assert name.replace(" ", "_") in kv.key_to_index
    # the paper's multi-word rule: the mean of the words' vectors equals the joined key's vector
    np.testing.assert_allclose((kv["traffic"] + kv["cone"]) / 2, kv["traffic_cone"], atol=2e-6)
    src = np.stack([kv[s] for s in SOURCE_CLASSES])
    surviving = 0
    for name in TARGET_CLASSES:
        if name in SOURCE_CLASSES:
            continue
        logits = src @ kv[name.replace(" ", "_")]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        right = SOURCE_CLASSES.index(TARGET_TO_SOURCE[name])
        assert p.argmax() == right and p[right] > 0.5, (name, p.round(3))
        keep = np.where(p < 0.05, 0, p)
        surviving += int((keep > 0).sum() > 1)
    assert surviving >= 1  # some names stay ambiguous after the 0.05 threshold, like real GloVe rows


# -------------------------------------------------------------------------------------- determinism, stamp
@pytest.mark.slow
def test_deterministic_per_seed_and_worker_count(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", TINY, num_workers=1)
    b = generate(tmp_path / "b", TINY, num_workers=2)
    da, db = _digest(a, images=True), _digest(b, images=True)
    assert da == db and any(k.endswith(".h5") for k in da)
    c = generate(tmp_path / "c", SyntheticConfig(**{**TINY.__dict__, "seed": 6}), num_workers=1)
    dc = _digest(c, images=False)
    assert dc["vg/VG-SGG-with-attri.h5"] != da["vg/VG-SGG-with-attri.h5"]


def test_ensure_regenerates_only_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "syn"
    ensure_synthetic(out, TINY, num_workers=1)
    marker = out / "vg" / "marker.txt"
    marker.write_text("kept while the stamp matches")
    ensure_synthetic(out, TINY, num_workers=1)
    ensure_synthetic(out, dict(TINY.__dict__), num_workers=1)  # a plain mapping (e.g. from Hydra) works too
    assert marker.exists()
    with pytest.raises(TypeError, match="unknown field"):
        ensure_synthetic(out, {"num_vg_trian": 3})
    # a different config regenerates (and the old tree is replaced, not merged)
    other = SyntheticConfig(**{**TINY.__dict__, "num_vg_test": 5})
    ensure_synthetic(out, other, num_workers=1)
    assert not marker.exists() and read_stamp(out)["config"]["num_vg_test"] == 5
    # a stamp from another generator version is stale too
    stamp = read_stamp(out)
    stamp["format_version"] = -1
    (out / "synthetic_config.json").write_text(json.dumps(stamp))
    marker.write_text("x")
    ensure_synthetic(out, other, num_workers=1)
    assert not marker.exists() and read_stamp(out)["format_version"] == FORMAT_VERSION
    # an interrupted run leaves the previous complete dataset untouched and no temp folder behind
    marker.write_text("x")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "_write_coco", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(out, TINY, num_workers=1)
    assert marker.exists() and read_stamp(out)["config"]["num_vg_test"] == 5
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "fresh", TINY, num_workers=1)
    assert not (tmp_path / "fresh").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a synthetic dataset")
    with pytest.raises(FileExistsError, match="no synthetic_config.json"):
        ensure_synthetic(foreign, TINY, num_workers=1)
    assert (foreign / "notes.txt").exists()


def test_cli_arguments() -> None:
    out, cfg, workers, force = cli._parse_args(
        ["out=/x/y", "seed=4", "num_vg_train=30", "image_size=100,120", "workers=1"]
    )
    assert out == Path("/x/y") and workers == 1 and not force
    assert (cfg.seed, cfg.num_vg_train, cfg.min_image_size, cfg.max_image_size) == (4, 30, 100, 120)
    assert cli._parse_args(["out=o", "image_size=140", "zero_shot_fraction=0.2"])[1].max_image_size == 140
    with pytest.raises(SystemExit, match="unknown key"):
        cli._parse_args(["out=o", "nmu_vg_train=3"])
    with pytest.raises(SystemExit, match="out=DIR"):
        cli._parse_args(["seed=1"])


# ------------------------------------------------------------------------------------ the project's loaders
def test_visual_genome_loader_reads_the_output(data: SyntheticLayout) -> None:
    from sgseg.data.visual_genome import VisualGenome

    h5 = _h5(data)
    num_val = read_stamp(data.root)["recommended_num_val"]
    train = VisualGenome(data.vg_root, "train", num_val=num_val, check_label_space=False)
    val = VisualGenome(data.vg_root, "val", num_val=num_val, check_label_space=False)
    test = VisualGenome(data.vg_root, "test", num_val=num_val, check_label_space=False)
    n_train_rel = int(((h5["split"] == 0) & (h5["img_to_first_rel"] >= 0)).sum())
    assert len(train) + len(val) == n_train_rel and len(val) == num_val
    assert len(test) == CFG.num_vg_test
    assert train.idx_to_label[1:] == list(TARGET_CLASSES)
    item = test[0]
    gt = test.get_groundtruth(0)
    rows = _image_rows(h5, data)
    r = CFG.num_vg_train
    assert gt["image_id"] == rows[r]["image_id"]
    b0, b1 = h5["img_to_first_box"][r], h5["img_to_last_box"][r] + 1
    np.testing.assert_array_equal(gt["labels"].numpy(), h5["labels"][b0:b1, 0])
    ours = decode_vg_boxes(h5["boxes_1024"][b0:b1], rows[r]["width"], rows[r]["height"], 1024)
    torch.testing.assert_close(gt["boxes"], ours, rtol=0, atol=0)  # one decoder for the loader and the tests
    assert tuple(item["image"].shape) == (3, rows[r]["height"], rows[r]["width"])


def test_coco_loader_reads_the_output(data: SyntheticLayout) -> None:
    from sgseg.data.coco import CocoInstances

    ds = CocoInstances(data.coco_root, "val", check_label_space=False)
    coco = _quiet_coco(data.coco_root / "annotations" / "instances_val2017.json")
    item = ds[0]
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[item["image_id"]])) if not a["iscrowd"]]
    assert item["masks"].shape[0] == len(anns)
    assert sorted(item["masks"].sum((1, 2)).tolist()) == sorted(int(a["area"]) for a in anns)
    assert set(item["labels"].tolist()) <= set(range(1, len(SOURCE_CLASSES) + 1))


def test_similarity_matrix_finds_each_novel_source(data: SyntheticLayout) -> None:
    from sgseg.models.masks.similarity import build_similarity, load_word_vectors

    sim = build_similarity(TARGET_CLASSES, SOURCE_CLASSES, load_word_vectors(data.word_vectors))
    for i, name in enumerate(TARGET_CLASSES):
        right = SOURCE_CLASSES.index(TARGET_TO_SOURCE[name])
        if name in SOURCE_CLASSES:
            assert sim[i, right] == 1.0  # same name: copied one-to-one
        else:
            assert int(sim[i].argmax()) == right and sim[i, right] > 0.5, (name, sim[i])


def test_data_check_cli_accepts_the_output(data: SyntheticLayout) -> None:
    from sgseg.data.check import main

    out, err = io.StringIO(), io.StringIO()
    num_val = read_stamp(data.root)["recommended_num_val"]
    argv = [f"data.root={data.vg_root}", f"data.coco_root={data.coco_root}", f"data.num_val={num_val}",
            "data.check_label_space=false"]  # fmt: skip
    assert main(argv, out=out, err=err) == 0, err.getvalue()
    # without the two keys, the stamp next to vg/ supplies them: the same summary
    out2 = io.StringIO()
    assert main([f"data.root={data.vg_root}", f"data.coco_root={data.coco_root}"], out=out2, err=err) == 0
    assert out2.getvalue() == out.getvalue()


def test_boxes_alone_leave_mask_predicates_ambiguous(data: SyntheticLayout) -> None:
    """Same box relation, different labels: only the masks tell "in hole of" from "on", "touching" from "near"."""
    h5 = _h5(data)
    rows = _image_rows(h5, data)
    by_box_relation: dict[str, set[str]] = {"inside": set(), "overlapping": set()}
    for r in np.flatnonzero(h5["img_to_first_rel"] >= 0):
        w, h = rows[r]["width"], rows[r]["height"]
        for j in range(h5["img_to_first_rel"][r], h5["img_to_last_rel"][r] + 1):
            bs, bo = decode_vg_boxes(h5["boxes_1024"][h5["relationships"][j]], w, h, 1024).numpy()
            pred = PREDICATES[int(h5["predicates"][j, 0]) - 1]
            if (bs[:2] >= bo[:2]).all() and (bs[2:] <= bo[2:]).all():
                by_box_relation["inside"].add(pred)
            elif min(bs[2], bo[2]) > max(bs[0], bo[0]) and min(bs[3], bo[3]) > max(bs[1], bo[1]):
                by_box_relation["overlapping"].add(pred)
    assert {"in hole of", "on"} <= by_box_relation["inside"]
    assert {"touching", "near", "partly covering"} <= by_box_relation["overlapping"]


def test_visible_masks_partition_the_objects(data: SyntheticLayout) -> None:
    """Masks are what is seen: in every image, no pixel belongs to two annotations (COCO-like and hidden VG)."""
    files = [data.coco_root / "annotations" / f"instances_{s}.json" for s in ("train2017", "val2017")]
    for path in [*files, data.vg_test_masks]:
        coco = _quiet_coco(path)
        for img_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            cover = sum(coco.annToMask(a).astype(np.int32) for a in anns)
            assert cover.max() == 1, (path.name, img_id)


def test_pipeline_derives_the_zero_shot_set(data: SyntheticLayout) -> None:
    """The project's own derivation (test triplets absent from train) finds the planted hold-out."""
    from sgseg.data.statistics import zeroshot_triplets
    from sgseg.data.visual_genome import VisualGenome

    train = VisualGenome(data.vg_root, "train", num_val=0, check_label_space=False)
    test = VisualGenome(data.vg_root, "test", num_val=0, check_label_space=False)
    zs = {tuple(t) for t in zeroshot_triplets(train, test).tolist()}
    assert len(zs) == read_stamp(data.root)["stats"]["num_zero_shot_test_triplets"]
    planted = zs & held_out_triplets(CFG)
    # Not all: on 120 train images many rare combinations are unseen by chance too (as in real VG).
    assert len(planted) >= 10


def test_empty_parts_are_allowed(tmp_path: Path) -> None:
    cfg = SyntheticConfig(seed=1, num_vg_train=0, num_vg_test=2, num_coco_train=0, num_coco_val=0)
    out = generate(tmp_path / "s", cfg, num_workers=1)
    with h5py.File(out / "vg" / "VG-SGG-with-attri.h5", "r") as f:
        assert (f["split"][:] == 2).all() and f["boxes_1024"].shape[1] == 4
    assert json.loads((out / "coco" / "annotations" / "instances_train2017.json").read_text())["images"] == []


# ------------------------------------------------------------------------------------------- planners
def test_one_planner_per_predicate_and_feasibility_hand_worked() -> None:
    from sgseg.data.synthetic.labels import class_style
    from sgseg.data.synthetic.planners import PLANNERS

    assert set(PLANNERS) == set(PREDICATES)
    style = {n: class_style(n, False) for n in TARGET_CLASSES}
    hole = PLANNERS["in hole of"]
    # subject's min size × 1.25 <= ring's max size × max hole ratio − 2: ring (24-36 px, hole ≤ 0.65) → 21.4 px
    assert hole.feasible(style["coin"], style["ring"])  # 11 × 1.25 = 13.75
    assert hole.feasible(style["ball"], style["ring"])  # 16 × 1.25 = 20
    assert not hole.feasible(style["disc"], style["ring"])  # 20 × 1.25 = 25
    assert not hole.feasible(style["coin"], style["plate"])  # not a ring
    assert PLANNERS["around"].feasible(style["ring"], style["coin"])  # the mirror
    on = PLANNERS["on"]
    assert on.feasible(style["coin"], style["plate"])  # 15 <= 0.75 × 36
    assert not on.feasible(style["ball"], style["coin"])  # 24 > 0.75 × 11
    assert not on.feasible(style["coin"], style["plank"])  # never on a bar
    names = {n: k for k, n in enumerate(TARGET_CLASSES)}
    assert (names["coin"], names["ring"]) in feasible_pairs("in hole of")
    assert (names["disc"], names["ring"]) not in feasible_pairs("in hole of")
    assert len(feasible_pairs("near")) == len(TARGET_CLASSES) ** 2


@pytest.mark.parametrize("pred", PREDICATES)
def test_each_planner_places_pairs_its_predicate_holds_for(pred: str) -> None:
    pairs = feasible_pairs(pred)
    placed = held = 0
    for seed in range(10):
        rng = np.random.default_rng([seed, 7])
        s, o = pairs[int(rng.integers(len(pairs)))]
        scene = compose_scene(rng, 128, 128, False, [(pred, s, o)], [])
        if scene.planned:
            placed += 1
            _, i, j = scene.planned[0]
            held += pred in pair_predicates(scene).get((i, j), [])
    assert placed >= 5 and held >= 0.7 * placed  # a planner aims; the labels come from the masks
