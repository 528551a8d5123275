"""CocoInstances on the real 8-image COCO sample and on edited copies of its json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sgseg.data.coco import CocoInstances
from sgseg.data.errors import DatasetError
from sgseg.data.label_spaces import COCO_CATEGORY_IDS, COCO_OBJECT_CLASSES


@pytest.fixture(scope="module")
def tiny8(shared_data: Path) -> tuple[Path, dict]:
    root = shared_data / "coco_tiny8"
    return root, json.loads((root / "instances_tiny8.json").read_text())


def _open(root: Path, **kw) -> CocoInstances:
    return CocoInstances(root, split="val", ann_file="instances_tiny8.json", image_dir="images", **kw)


def test_tiny8_counts_boxes_labels(tiny8) -> None:
    root, js = tiny8
    ds = _open(root)
    assert len(ds) == 8 and ds.num_dropped_degenerate == 0 and ds.num_object_classes == 81
    assert ds.image_ids == sorted(im["id"] for im in js["images"])
    non_crowd = Counter(a["image_id"] for a in js["annotations"] if not a["iscrowd"])
    by_id = {a["id"]: a for a in js["annotations"]}
    cat_name = {c["id"]: c["name"] for c in js["categories"]}
    for i in range(len(ds)):
        gt = ds.get_groundtruth(i)
        assert gt["boxes"].shape == (non_crowd[gt["image_id"]], 4)
        anns = [by_id[k] for k in ds._ann_ids[i]]
        x, y, w, h = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).T
        torch.testing.assert_close(gt["boxes"], torch.stack([x, y, x + w, y + h], 1).float())
        # Contiguous label k names the same class as the json's category id.
        assert [COCO_OBJECT_CLASSES[k - 1] for k in gt["labels"].tolist()] == [
            cat_name[a["category_id"]] for a in anns
        ]
    assert sum(non_crowd.values()) == 79  # 80 annotations, one of them crowd
    # Standard mapping at the gaps: id 13 (stop sign) → 12, id 90 (toothbrush) → 80.
    assert ds.category_to_label[13] == 12 and ds.category_to_label[90] == 80
    assert ds.label_to_category[12] == 13


def test_tiny8_masks_match_polygon_areas(tiny8) -> None:
    root, js = tiny8
    ds = _open(root, include_crowd=True)
    by_id = {a["id"]: a for a in js["annotations"]}
    total_mask, total_area = 0, 0.0
    for i in range(len(ds)):
        item = ds[i]
        h, w = item["height"], item["width"]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, h, w)
        masks = item["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (item["boxes"].shape[0], h, w)
        assert set(masks.unique().tolist()) <= {0, 1}
        area = np.array([by_id[k]["area"] for k in ds._ann_ids[i]])
        pixels = masks.sum((1, 2)).numpy()
        # Rasterised polygons differ from their exact area by boundary pixels: a few % on small objects.
        assert (np.abs(pixels - area) <= 0.05 * area + 2).all()
        total_mask += pixels.sum()
        total_area += area.sum()
        # Every mask lies inside its box (rounded outward by a pixel).
        for m, b in zip(masks, item["boxes"]):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert (
                xs.min() >= b[0] - 1
                and xs.max() <= b[2] + 1
                and ys.min() >= b[1] - 1
                and ys.max() <= b[3] + 1
            )
    assert abs(total_mask - total_area) / total_area < 0.01
    crowd_item = ds[ds.image_ids.index(184324)]
    assert crowd_item["crowd_masks"].shape[0] == 1 and crowd_item["crowd_labels"].tolist() == [1]
    crowd = next(a for a in js["annotations"] if a["iscrowd"])
    # Uncompressed RLE: the foreground pixel count is the sum of the odd-position run lengths.
    assert int(crowd_item["crowd_masks"].sum()) == sum(crowd["segmentation"]["counts"][1::2]) == 32885


def test_degenerate_and_empty_images(tiny8, tmp_path: Path) -> None:
    root, js = tiny8
    js = json.loads(json.dumps(js))
    first = sorted(im["id"] for im in js["images"])[0]
    # Make two annotations of the first image degenerate (w < 1, h < 1) and strip all from the last image.
    anns_first = [a for a in js["annotations"] if a["image_id"] == first]
    anns_first[0]["bbox"][2] = 0.5
    anns_first[1]["bbox"][3] = 0.0
    last = sorted(im["id"] for im in js["images"])[-1]
    js["annotations"] = [a for a in js["annotations"] if a["image_id"] != last]
    (tmp_path / "ann.json").write_text(json.dumps(js))
    keep_all = CocoInstances(tmp_path, split="val", ann_file="ann.json", image_dir=root / "images")
    assert keep_all.num_dropped_degenerate == 2
    assert sorted(keep_all.dropped_degenerate_ids) == sorted([anns_first[0]["id"], anns_first[1]["id"]])
    assert len(keep_all) == 8 and keep_all.get_groundtruth(7)["boxes"].shape == (0, 4)
    assert keep_all.get_groundtruth(0)["boxes"].shape[0] == len(anns_first) - 2
    train_like = CocoInstances(
        tmp_path, split="val", ann_file="ann.json", image_dir=root / "images", skip_empty=True
    )
    assert len(train_like) == 7 and last not in train_like.image_ids


def test_errors(tiny8, tmp_path: Path) -> None:
    root, js = tiny8
    with pytest.raises(DatasetError, match="instances_train2017.json"):
        CocoInstances(root, split="train", image_dir="images")
    bad = json.loads(json.dumps(js))
    bad["categories"][11]["name"] = "stop-sign"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"at index 12: file has 'stop-sign', expected 'stop sign'"):
        CocoInstances(tmp_path, split="val", ann_file="bad.json", image_dir=root / "images")
    (tmp_path / "trunc.json").write_text((root / "instances_tiny8.json").read_text()[:1000])
    with pytest.raises(DatasetError, match="trunc.json"):
        CocoInstances(tmp_path, split="val", ann_file="trunc.json", image_dir=root / "images")
    (tmp_path / "imgs").mkdir()
    ds = CocoInstances(root, split="val", ann_file="instances_tiny8.json", image_dir=tmp_path / "imgs")
    assert ds.get_groundtruth(0, with_masks=True)["masks"].shape[0] == 6  # no image needed
    with pytest.raises(
        DatasetError, match=r"COCO image file missing: .*000000119828.jpg \(image id 119828\)"
    ):
        ds[0]


def test_code_category_ids_match_json(tiny8) -> None:
    _, js = tiny8
    assert tuple(sorted(c["id"] for c in js["categories"])) == COCO_CATEGORY_IDS


def test_custom_label_space(tiny8, tmp_path: Path) -> None:
    root, js = tiny8
    js = json.loads(json.dumps(js))
    used = sorted({a["category_id"] for a in js["annotations"]})
    js["categories"] = [{"id": cid, "name": f"shape{cid}"} for cid in reversed(used)]
    (tmp_path / "custom.json").write_text(json.dumps(js))
    with pytest.raises(DatasetError, match="check_label_space=False"):
        CocoInstances(tmp_path, split="val", ann_file="custom.json", image_dir=root / "images")
    ds = CocoInstances(
        tmp_path, split="val", ann_file="custom.json", image_dir=root / "images", check_label_space=False
    )
    # Labels 1..K follow the sorted category ids of the file.
    assert ds.class_names == tuple(f"shape{cid}" for cid in used)
    assert ds.num_object_classes == len(used) + 1
    assert ds.category_to_label == {cid: k for k, cid in enumerate(used, start=1)}
    gt = ds.get_groundtruth(ds.image_ids.index(184324))
    assert gt["labels"].max() <= len(used) and ds.class_names[0] == "shape1"
