"""``python -m sgseg.data.check``: the summary it prints and its one-line errors (never a traceback)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from sgseg.data.check import main, parse_args
from tests.test_statistics import IMAGES
from tests.vg_format import write_vg_dataset

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sgseg.data.check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(args), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture()
def vg_root(tmp_path: Path) -> Path:
    write_vg_dataset(tmp_path / "vg", IMAGES)
    return tmp_path / "vg"


@pytest.mark.slow
def test_cli_summary(vg_root: Path, shared_data: Path) -> None:
    coco = shared_data / "coco_tiny8"
    p = _cli(
        f"data.root={vg_root}",
        "data.num_val=1",
        f"data.coco_root={coco}",
        "data.coco_ann_file=instances_tiny8.json",
        "data.coco_image_dir=images",
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stdout.splitlines()
    # Hand counts from tests/test_statistics.py IMAGES: val = the first train image (2 boxes, 1 relation),
    # train = images A, B, C (4 + 2 + 2 boxes, 4 + 2 + 2 relations), test = 2 images (4 boxes, 5 relations).
    assert [ln.split() for ln in lines[2:5]] == [
        ["train", "3", "8", "8"],
        ["val", "1", "2", "1"],
        ["test", "2", "4", "5"],
    ]
    # Train predicates: 5 ("and") 6×, 3 ("against") 1×, 7 ("attached to") 1×; zero rows are not listed.
    assert lines[6].split()[:4] == ["5", "and", "6", "75.0%"]
    assert lines[7].split()[:4] == ["3", "against", "1", "12.5%"]
    assert lines[8].split()[:5] == ["7", "attached", "to", "1", "12.5%"]
    assert (
        "images 8 (0 without training annotations), annotations 80 (crowd 1, degenerate dropped 0)"
        in p.stdout
    )
    assert lines[-1] == "OK"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing_h5", "corrupt_h5"])
def test_cli_one_line_errors(vg_root: Path, damage: str) -> None:
    h5 = vg_root / "VG-SGG-with-attri.h5"
    if damage == "missing_h5":
        h5.unlink()
    else:
        h5.write_bytes(b"\x89HDF\r\n garbage")
    p = _cli(f"data.root={vg_root}")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert str(h5) in p.stderr
    assert ("not found" if damage == "missing_h5" else "unreadable") in p.stderr
    assert p.stdout == ""


def test_missing_image_label_and_dicts_errors(vg_root: Path) -> None:
    (vg_root / "VG_100K" / "3.jpg").unlink()  # an image of train
    rc, _, err = _run(f"data.root={vg_root}", "data.num_val=1")
    assert rc == 1 and "VG train: 1 of 3 image files missing" in err and "VG_100K/3.jpg" in err
    rc, out, _ = _run(f"data.root={vg_root}", "data.num_val=1", "data.check_images=false")
    assert rc == 0 and out.endswith("OK\n")
    with h5py.File(vg_root / "VG-SGG-with-attri.h5", "a") as f:
        f["labels"][3, 0] = 151
    rc, _, err = _run(f"data.root={vg_root}", "data.check_images=false", "data.num_val=1")
    assert rc == 1 and "'labels' row 3 is 151, outside 1..150" in err and len(err.splitlines()) == 1
    (vg_root / "VG-SGG-dicts-with-attri.json").write_text("{not json")
    rc, _, err = _run(f"data.root={vg_root}")
    assert rc == 1 and "VG-SGG-dicts-with-attri.json is not readable JSON" in err


def test_invalid_box(vg_root: Path) -> None:
    with h5py.File(vg_root / "VG-SGG-with-attri.h5", "a") as f:
        f["boxes_1024"][4] = [10, 10, 0, 5]  # zero width
    rc, _, err = _run(f"data.root={vg_root}", "data.num_val=1", "data.check_images=false")
    assert rc == 1 and "'boxes_1024' row 4 = [10, 10, 0, 5] is not a valid (cx, cy, w, h) box" in err


def test_relation_pointing_to_other_image(vg_root: Path) -> None:
    with h5py.File(vg_root / "VG-SGG-with-attri.h5", "a") as f:
        f["relationships"][1] = [2, 6]  # image A owns box rows 2..5; row 6 is image B's
    rc, _, err = _run(f"data.root={vg_root}", "data.num_val=1", "data.check_images=false")
    assert rc == 1 and "'relationships' row 1 = [2, 6] points outside its image's box rows 2..5" in err


def test_coco_errors_and_usage(tmp_path: Path) -> None:
    rc, _, err = _run(f"data.coco_root={tmp_path}")
    assert rc == 1 and "annotations/instances_val2017.json" in err and "download COCO 2017" in err
    rc, _, err = _run("data.nope=1")
    assert rc == 2 and "unknown argument 'data.nope=1'" in err
    rc, _, err = _run()
    assert rc == 2 and "give data.root" in err
    cfg = parse_args(["data.root=/x", "data.num_val=7", "check_images=false", "data.coco_ann_file=null"])
    assert cfg["root"] == "/x" and cfg["num_val"] == 7 and cfg["check_images"] is False
    assert cfg["coco_ann_file"] is None
