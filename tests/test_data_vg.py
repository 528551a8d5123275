"""VisualGenome on tiny VG-format files: box decoding, splits and filters, duplicate sampling, errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sgseg.data.errors import DatasetError
from sgseg.data.visual_genome import VisualGenome, decode_boxes_1024
from tests.vg_format import CORRUPT_IDS, encode_box, write_vg_dataset


def _img(split=0, rels=((0, 1, 31),), n=2, w=64, h=48, **kw):
    boxes = [[4 + 10 * k, 4, 20 + 10 * k, 30] for k in range(n)]
    return {"width": w, "height": h, "split": split, "labels": [1 + k for k in range(n)], "boxes_xyxy": boxes,
            "relations": list(rels), **kw}  # fmt: skip


# ------------------------------------------------------------------------------------------- box decoding
def test_decode_boxes_hand_computed(tmp_path: Path) -> None:
    # Image 600 x 400: scale = max(W, H) / 1024 = 600 / 1024 = 0.5859375; clamp x to [0, 599], y to [0, 399].
    # Row A (cx, cy, w, h) = (100, 51, 40, 21):
    #   x1 = trunc(100 - 40/2) = 80, y1 = trunc(51 - 21/2) = trunc(40.5) = 40, x2 = 80 + 40 = 120, y2 = 61
    #   → 80·0.5859375 = 46.875, 40·… = 23.4375, 120·… = 70.3125, 61·… = 35.7421875
    # Row B = (3, 1020, 9, 10):
    #   x1 = trunc(3 - 4.5) = trunc(-1.5) = -1 (toward zero, not floor's -2), y1 = 1015, x2 = 8, y2 = 1025
    #   → -0.5859375 → clamp 0; 594.7265625 → clamp 399; 4.6875; 600.5859375 → clamp 399
    raw = [[100, 51, 40, 21], [3, 1020, 9, 10]]
    np.testing.assert_array_equal(decode_boxes_1024(np.array(raw)), [[80, 40, 120, 61], [-1, 1015, 8, 1025]])
    im = {"width": 600, "height": 400, "labels": [5, 6], "boxes_1024": raw, "relations": [(0, 1, 2)]}
    write_vg_dataset(tmp_path, [im])
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    gt = ds.get_groundtruth(0)
    assert gt["boxes"].dtype == torch.float32
    expected = [[46.875, 23.4375, 70.3125, 35.7421875], [0.0, 399.0, 4.6875, 399.0]]
    assert gt["boxes"].tolist() == expected  # exact: all are dyadic fractions
    assert gt["labels"].tolist() == [5, 6] and gt["relations"].tolist() == [[0, 1, 2]]
    assert (gt["width"], gt["height"]) == (600, 400)


def test_encode_decode_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = []
    for w, h in [(500, 333), (333, 500), (1024, 768), (97, 61)]:
        x1 = rng.uniform(0, w - 20, 6)
        y1 = rng.uniform(0, h - 20, 6)
        boxes = np.stack([x1, y1, x1 + rng.uniform(2, 19, 6), y1 + rng.uniform(2, 19, 6)], 1)
        images.append({"width": w, "height": h, "labels": list(range(1, 7)), "boxes_xyxy": boxes.tolist(),
                       "relations": [(0, 1, 1)]})  # fmt: skip
    write_vg_dataset(tmp_path, images)
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    for i, im in enumerate(images):
        got = ds.get_groundtruth(i)["boxes"].double().numpy()
        want = np.asarray(im["boxes_xyxy"])
        unit = max(im["width"], im["height"]) / 1024
        # encode floors x1 and ceils w; decoding loses half a unit on odd widths (x + w//2 - w/2 truncated):
        # decoded x1 ∈ (x1 - 2u, x1], x2 ∈ (x2 - 2u, x2 + u).
        assert (got[:, :2] <= want[:, :2] + 1e-4).all() and (got[:, :2] > want[:, :2] - 2 * unit).all()
        assert (got[:, 2:] > want[:, 2:] - 2 * unit).all() and (got[:, 2:] < want[:, 2:] + unit + 1e-4).all()
        # Independent route in the 1024 frame: x1 = x + w//2 - w/2 truncated, from the encoder's integers.
        enc = np.array([encode_box(*b, im["width"], im["height"]) for b in im["boxes_xyxy"]])
        g = ds.get_graph(i)["boxes_1024"]
        x1 = np.trunc(enc[:, 0] - enc[:, 2] / 2)
        np.testing.assert_array_equal(g[:, 0], x1)
        np.testing.assert_array_equal(g[:, 2], x1 + enc[:, 2])


# ----------------------------------------------------------------------------------- splits and filters
@pytest.fixture()
def split_root(tmp_path: Path) -> tuple[Path, list[int]]:
    images = [_img(rels=[(0, 1, k + 1)]) for k in range(4)]  # rows 0-3: train with relations
    images.append(_img(rels=()))  # row 4: train, no relations → dropped from train/val
    images.append({**_img(rels=()), "labels": [], "boxes_xyxy": []})  # row 5: train, no boxes → dropped
    images += [_img(rels=[(1, 0, k + 10)], w=70 + k) for k in range(4)]  # rows 6-9: train with relations
    images.append(_img(split=2, rels=[(0, 1, 20)]))  # row 10: test
    images.append(_img(split=2, rels=()))  # row 11: test without relations → kept in test
    images.append({**_img(split=2, rels=()), "labels": [], "boxes_xyxy": []})  # row 12: test, no boxes
    ids = write_vg_dataset(tmp_path, images)["image_ids"]
    return tmp_path, ids


def test_splits_val_is_first_train_images_after_filtering(split_root) -> None:
    root, ids = split_root
    assert not set(ids) & set(CORRUPT_IDS)
    val = VisualGenome(root, split="val", num_val=3)
    train = VisualGenome(root, split="train", num_val=3)
    test = VisualGenome(root, split="test", num_val=3)
    train_rows = [0, 1, 2, 3, 6, 7, 8, 9]  # 8 train images with relations, in h5 order
    assert val.image_ids == [ids[r] for r in train_rows[:3]]
    assert train.image_ids == [ids[r] for r in train_rows[3:]]
    assert test.image_ids == [ids[10], ids[11]]
    assert len(val) == 3 and len(train) == 5 and len(test) == 2
    # image_data.json had the 4 corrupt ids interleaved; alignment must still give each row its own size.
    assert [train.image_info(i)["width"] for i in range(len(train))] == [64, 70, 71, 72, 73]
    assert train.get_groundtruth(1)["relations"].tolist() == [[1, 0, 10]]
    assert test.get_groundtruth(1)["relations"].shape == (0, 3)
    # Test with the reference's filter_empty_rels=True (its 26,446-image test set) drops row 11.
    assert VisualGenome(root, split="test", filter_empty_rels=True).image_ids == [ids[10]]
    # num_images limits before the val carve-out.
    assert VisualGenome(root, split="train", num_val=3, num_images=5).image_ids == [ids[3], ids[6]]
    assert len(VisualGenome(root, split="train", num_val=0)) == 8


def test_overlap_filter(tmp_path: Path) -> None:
    # boxes_1024 rows → xyxy: A (10,10,10,10) → 5,5,15,15; B (20,10,10,10) → 15,5,25,15 touches A at x = 15,
    # which overlaps under the +1 pixel convention ((15 - 15 + 1) · (15 - 5 + 1) = 11 > 0); C (40,...) →
    # 35..45, disjoint from both.
    abc = [[10, 10, 10, 10], [20, 10, 10, 10], [40, 10, 10, 10]]
    images = [
        {"width": 100, "height": 100, "labels": [1, 2, 3], "boxes_1024": abc,
         "relations": [(0, 2, 5), (0, 1, 6), (2, 1, 7)]},  # only A-B overlaps
        {"width": 100, "height": 100, "labels": [1, 2, 3], "boxes_1024": abc, "relations": [(0, 2, 5)]},
    ]  # fmt: skip
    write_vg_dataset(tmp_path, images)
    train = VisualGenome(tmp_path, split="train", num_val=0, filter_non_overlap=True)
    assert len(train) == 1  # the second image has no overlapping relation left
    assert train.get_groundtruth(0)["relations"].tolist() == [[0, 1, 6]]
    plain = VisualGenome(tmp_path, split="train", num_val=0)
    assert len(plain) == 2 and plain.get_groundtruth(0)["relations"].shape[0] == 3
    # val never filters overlap (reference: train only).
    val = VisualGenome(tmp_path, split="val", num_val=2, filter_non_overlap=True)
    assert len(val) == 2 and val.get_groundtruth(0)["relations"].shape[0] == 3


def test_duplicate_relation_sampling(tmp_path: Path) -> None:
    rels = [(0, 1, 3), (1, 0, 2), (0, 1, 7), (0, 1, 9)]
    write_vg_dataset(tmp_path, [_img(rels=rels, n=2)])
    train = VisualGenome(tmp_path, split="train", num_val=0)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        r = train.get_groundtruth(0, sample_duplicates=True)["relations"].tolist()
        assert len(r) == 2 and r[1] == [1, 0, 2]  # one row per pair, pairs in order of first appearance
        assert r[0][:2] == [0, 1] and r[0][2] in {3, 7, 9}
        seen.add(r[0][2])
    assert seen == {3, 7, 9}  # P(missing one in 40 draws) = 3·(2/3)^40 ≈ 3e-7
    item = train[0]
    assert item["relations"].shape == (2, 3)
    # Evaluation view and non-train splits keep every relation.
    assert train.get_groundtruth(0)["relations"].tolist() == [list(r) for r in rels]
    val = VisualGenome(tmp_path, split="val", num_val=1)
    assert val[0]["relations"].tolist() == [list(r) for r in rels]
    no_dup = VisualGenome(tmp_path, split="train", num_val=0, filter_duplicate_rels=False)
    assert no_dup[0]["relations"].shape == (4, 3)


def test_item_image_and_types(split_root) -> None:
    root, ids = split_root
    ds = VisualGenome(root, split="test")
    item = ds[0]
    assert set(item) >= {"image", "boxes", "labels", "relations", "image_id", "width", "height"}
    img = item["image"]
    assert img.dtype == torch.uint8 and img.shape == (3, 48, 64)
    iid = ids[10]
    colour = torch.tensor([(37 * iid) % 256, (91 * iid) % 256, (53 * iid) % 256], dtype=torch.float32)
    assert (img.float().mean((1, 2)) - colour).abs().max() < 4  # JPEG of a flat colour
    assert item["boxes"].dtype == torch.float32 and item["labels"].dtype == torch.long
    assert item["relations"].dtype == torch.long and item["image_id"] == iid
    assert ds.idx_to_label[0] == "__background__" and ds.idx_to_label[1] == "airplane"
    assert len(ds.idx_to_label) == 151 and len(ds.idx_to_predicate) == 51 and ds.idx_to_predicate[31] == "on"
    assert (ds.num_object_classes, ds.num_predicates) == (151, 51)  # with background, as structures.py
    assert ds.predicates[30] == "on" and ds.object_classes[0] == "airplane"
    calls = []
    with_tf = VisualGenome(root, split="test", transform=lambda d: calls.append(d["image_id"]) or d)
    with_tf[1]
    assert calls == [ids[11]]


def test_h5_is_lazy_and_reopened_per_process(split_root) -> None:
    root, _ = split_root
    ds = VisualGenome(root, split="train", num_val=3)
    assert ds._h5 is None  # nothing held open after construction: safe to fork into workers
    ds.get_groundtruth(0)
    first = ds._h5
    assert first is not None
    ds.get_groundtruth(1)
    assert ds._h5 is first
    ds._h5_pid = -1  # as seen from a forked worker: the handle belongs to another process
    ds.get_groundtruth(0)
    assert ds._h5 is not first
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None and clone.get_groundtruth(0)["labels"].tolist() == [1, 2]
    ds.close()


def test_h5_fallback_name(tmp_path: Path) -> None:
    write_vg_dataset(tmp_path, [_img()], h5_name="VG-SGG.h5")
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    assert ds.h5_path.name == "VG-SGG.h5" and len(ds) == 1


# ------------------------------------------------------------------------------------------------ errors
def test_missing_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="VG-SGG-with-attri.h5.*nor VG-SGG.h5"):
        VisualGenome(tmp_path)
    write_vg_dataset(tmp_path, [_img()])
    (tmp_path / "image_data.json").unlink()
    with pytest.raises(DatasetError, match="image_data.json not found"):
        VisualGenome(tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        VisualGenome(tmp_path / "nope")


def test_corrupt_h5(tmp_path: Path) -> None:
    write_vg_dataset(tmp_path, [_img()])
    h5 = tmp_path / "VG-SGG-with-attri.h5"
    with h5py.File(h5, "a") as f:
        del f["predicates"]
    with pytest.raises(DatasetError, match=r"lacks key\(s\) \['predicates'\]"):
        VisualGenome(tmp_path)
    h5.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError, match="unreadable"):
        VisualGenome(tmp_path)


def test_image_data_misaligned(tmp_path: Path) -> None:
    ids = write_vg_dataset(tmp_path, [_img(), _img()])["image_ids"]
    records = json.loads((tmp_path / "image_data.json").read_text())
    kept = [r for r in records if r["image_id"] != ids[1]]
    (tmp_path / "image_data.json").write_text(json.dumps(kept))
    with pytest.raises(DatasetError, match="1 records after dropping the corrupt ids"):
        VisualGenome(tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("labels", 0, r"'labels' has 0 at box row 1, outside 1..150"),
        ("labels", 151, r"'labels' has 151 at box row 1, outside 1..150"),
        ("predicates", 51, r"'predicates' has 51 at relation row 0, outside 1..50"),
        ("predicates", 0, r"'predicates' has 0 at relation row 0, outside 1..50"),
    ],
)
def test_out_of_range_labels(tmp_path: Path, key: str, value: int, message: str) -> None:
    ids = write_vg_dataset(tmp_path, [_img()])["image_ids"]
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "a") as f:
        f[key][1 if key == "labels" else 0, 0] = value
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    with pytest.raises(DatasetError, match=message) as e:
        ds.get_groundtruth(0)
    assert f"image id {ids[0]}" in str(e.value)


def test_relation_pointing_outside_image(tmp_path: Path) -> None:
    write_vg_dataset(tmp_path, [_img(), _img()])
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "a") as f:
        f["relationships"][0] = [0, 3]  # box row 3 belongs to the second image
    with pytest.raises(DatasetError, match=r"'relationships' row 0 points to box rows \[0, 3\]"):
        VisualGenome(tmp_path, split="train", num_val=0).get_groundtruth(0)


def test_missing_image_file(tmp_path: Path) -> None:
    ids = write_vg_dataset(tmp_path, [_img()])["image_ids"]
    (tmp_path / "VG_100K" / f"{ids[0]}.jpg").unlink()
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    ds.get_groundtruth(0)  # ground truth needs no image
    with pytest.raises(
        DatasetError, match=rf"image file missing: .*VG_100K/{ids[0]}.jpg \(image id {ids[0]}\)"
    ):
        ds[0]


def test_dataloader_workers_reopen_h5(split_root) -> None:
    root, ids = split_root
    ds = VisualGenome(root, split="train", num_val=3)
    ds.get_groundtruth(0)  # the parent holds an open handle before the workers fork
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork", shuffle=False
    )
    got = [item["image_id"] for item in loader]
    assert got == ds.image_ids == [ids[r] for r in (3, 6, 7, 8, 9)]


def test_custom_label_space(tmp_path: Path) -> None:
    from tests.vg_format import write_dicts

    write_vg_dataset(tmp_path, [_img(n=3, rels=[(0, 1, 2)]), _img(n=3)])
    write_dicts(tmp_path / "VG-SGG-dicts-with-attri.json", ["ball", "cube", "disc"], ["near", "on"])
    with pytest.raises(DatasetError, match="at index 1: file has 'ball', expected 'airplane'"):
        VisualGenome(tmp_path)
    ds = VisualGenome(tmp_path, split="train", num_val=0, check_label_space=False)
    assert ds.idx_to_label == ["__background__", "ball", "cube", "disc"] and ds.predicates == ("near", "on")
    assert (ds.num_object_classes, ds.num_predicates) == (4, 3)
    gt = ds.get_groundtruth(0)
    assert gt["labels"].tolist() == [1, 2, 3] and gt["relations"].tolist() == [[0, 1, 2]]
    # The second image's default relation has predicate 31, outside this 2-predicate space.
    with pytest.raises(DatasetError, match=r"'predicates' has 31 at relation row 1, outside 1..2"):
        ds.get_graph(1)


def test_iter_graphs_equals_get_graph(split_root) -> None:
    root, _ = split_root
    for kw in ({"split": "train"}, {"split": "test"}, {"split": "train", "filter_non_overlap": True}):
        ds = VisualGenome(root, num_val=3, **kw)
        bulk = list(ds.iter_graphs())
        assert len(bulk) == len(ds)
        for i, g in enumerate(bulk):
            one = ds.get_graph(i)
            assert g["image_id"] == one["image_id"]
            np.testing.assert_array_equal(g["boxes_1024"], one["boxes_1024"])
            assert torch.equal(g["labels"], one["labels"]) and torch.equal(g["relations"], one["relations"])


def test_image_size_mismatch_warns(tmp_path: Path) -> None:
    ids = write_vg_dataset(tmp_path, [_img(w=64, h=48)])["image_ids"]
    records = json.loads((tmp_path / "image_data.json").read_text())
    for r in records:
        if r["image_id"] == ids[0]:
            r["width"] = 65
    (tmp_path / "image_data.json").write_text(json.dumps(records))
    ds = VisualGenome(tmp_path, split="train", num_val=0)
    with pytest.warns(UserWarning, match=r"decoded size 64x48 differs from image_data.json 65x48"):
        item = ds[0]
    assert item["width"] == 65 and item["image"].shape == (
        3,
        48,
        64,
    )  # boxes follow the json, as the reference


def test_corrupt_index_ranges(tmp_path: Path) -> None:
    write_vg_dataset(tmp_path, [_img(), _img()])
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "a") as f:
        f["img_to_last_box"][1] = 9  # only 4 box rows exist
    with pytest.raises(
        DatasetError, match=r"row 1 has img_to_first_box=2, img_to_last_box=9, outside the 4 box"
    ):
        VisualGenome(tmp_path)
    with h5py.File(tmp_path / "VG-SGG-with-attri.h5", "a") as f:
        f["img_to_last_box"][1] = 3
        del f["img_to_first_rel"]
        f["img_to_first_rel"] = np.zeros(3, dtype=np.int32)
    with pytest.raises(DatasetError, match=r"'img_to_first_rel' has 3 rows but 'split' has 2"):
        VisualGenome(tmp_path)


def test_decode_matches_reference_int32_arithmetic() -> None:
    # Independent route: the reference's literal in-place arithmetic on the h5's int32 array, where
    # assigning the float difference back into int32 truncates toward zero.
    rng = np.random.default_rng(1)
    raw = np.concatenate([rng.integers(0, 1024, (5000, 2)), rng.integers(1, 1025, (5000, 2))], 1).astype(
        np.int32
    )
    ref = raw.copy()
    ref[:, :2] = ref[:, :2] - ref[:, 2:] / 2
    ref[:, 2:] = ref[:, :2] + ref[:, 2:]
    got = decode_boxes_1024(raw)
    np.testing.assert_array_equal(got, ref)
    assert (got[:, 0] < 0).any()  # the sample does exercise negative x1 (trunc ≠ floor there)
    # and Python's int() (also truncation toward zero) row by row
    for (cx, cy, w, h), (x1, y1, x2, y2) in zip(raw[:200].tolist(), got[:200].tolist()):
        assert (x1, y1, x2, y2) == (
            int(cx - w / 2),
            int(cy - h / 2),
            int(cx - w / 2) + w,
            int(cy - h / 2) + h,
        )
