"""The code's class lists against the real VG150 dicts file and class-names.json; the checked loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgseg.data.errors import DatasetError
from sgseg.data.label_spaces import (
    BACKGROUND,
    COCO_CATEGORY_IDS,
    COCO_OBJECT_CLASSES,
    VG150_OBJECT_CLASSES,
    VG150_PREDICATES,
    coco_category_to_contiguous,
    load_vg_dicts,
    with_background,
)


def test_lists_match_class_names_json(shared_data: Path) -> None:
    names = json.loads((shared_data / "class-names.json").read_text())
    assert list(VG150_OBJECT_CLASSES) == names["vg150_objects"]
    assert list(VG150_PREDICATES) == names["vg150_predicates"]
    assert list(COCO_OBJECT_CLASSES) == names["coco80_objects"]
    assert (len(VG150_OBJECT_CLASSES), len(VG150_PREDICATES), len(COCO_OBJECT_CLASSES)) == (150, 50, 80)
    assert len(set(VG150_OBJECT_CLASSES)) == 150 and len(set(COCO_OBJECT_CLASSES)) == 80


def test_real_vg_dicts_file(shared_data: Path) -> None:
    path = shared_data / "vg150" / "VG-SGG-dicts-with-attri.json"
    raw = json.loads(path.read_text())
    d = load_vg_dicts(path)
    assert d.object_classes == VG150_OBJECT_CLASSES and d.predicates == VG150_PREDICATES
    # Index convention: class k (1-based, as in the h5) is tuple[k - 1] and idx_to_label[k].
    for k in (1, 78, 150):
        assert d.idx_to_label[k] == raw["idx_to_label"][str(k)] == VG150_OBJECT_CLASSES[k - 1]
    assert d.idx_to_predicate[31] == raw["idx_to_predicate"]["31"] == "on"
    assert d.idx_to_label[0] == d.idx_to_predicate[0] == BACKGROUND
    assert len(d.attributes) == 200 and d.object_count["man"] == raw["object_count"]["man"]
    assert with_background(["a"]) == [BACKGROUND, "a"]


def test_dicts_mismatch_names_first_index(shared_data: Path, tmp_path: Path) -> None:
    raw = json.loads((shared_data / "vg150" / "VG-SGG-dicts-with-attri.json").read_text())
    # Swap predicates 20 ("has") and 21 ("holding") consistently in both maps: a valid file, wrong order.
    a, b = raw["idx_to_predicate"]["20"], raw["idx_to_predicate"]["21"]
    raw["idx_to_predicate"]["20"], raw["idx_to_predicate"]["21"] = b, a
    raw["predicate_to_idx"][a], raw["predicate_to_idx"][b] = 21, 20
    p = tmp_path / "dicts.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=r"predicates .* at index 20: file has 'holding', expected 'has'"):
        load_vg_dicts(p)
    assert load_vg_dicts(p, expected_predicates=None).predicates[19] == "holding"  # custom label space
    raw["label_to_idx"]["zebra"] = 3  # the two maps disagree
    p.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=r"'label_to_idx'\['zebra'\] = 3 but 'idx_to_label'\[150\]"):
        load_vg_dicts(p)
    del raw["idx_to_label"]["7"]
    p.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="keys must be 1..149 without gaps"):
        load_vg_dicts(p)
    with pytest.raises(DatasetError, match="not found"):
        load_vg_dicts(tmp_path / "absent.json")


def test_short_list_reports_missing_entry() -> None:
    with pytest.raises(DatasetError, match=r"at index 150: file has <missing>, expected 'zebra'"):
        from sgseg.data.label_spaces import check_names

        check_names(VG150_OBJECT_CLASSES[:149], VG150_OBJECT_CLASSES, what="objects", source="x.json")


def test_coco_mapping(shared_data: Path) -> None:
    cats = json.loads((shared_data / "coco_tiny8" / "instances_tiny8.json").read_text())["categories"]
    mapping = coco_category_to_contiguous(list(reversed(cats)))  # order in the file does not matter
    assert mapping == {cid: k for k, cid in enumerate(COCO_CATEGORY_IDS, start=1)}
    assert mapping[1] == 1 and mapping[11] == 11 and mapping[13] == 12 and mapping[90] == 80
    names = {c["id"]: c["name"] for c in cats}
    assert all(COCO_OBJECT_CLASSES[k - 1] == names[cid] for cid, k in mapping.items())
    with pytest.raises(DatasetError, match="at index 80: file has <missing>"):
        coco_category_to_contiguous(cats[:-1])
