"""The frozen detector's identity recorded by stage 2 (``detector_source.json``) and its use in resumption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sgseg.lit.build import ConfigError
from sgseg.lit.run import record_detector
from sgseg.models.detector import PROVENANCE_FILE, detector_provenance


def _detector_file(folder: Path, content: bytes, metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "detector.pt"
    path.write_bytes(content)
    if metrics is not None:
        (folder / "detector_metrics.json").write_text(json.dumps(metrics))
    return path


def test_provenance_is_the_files_content_hash_and_its_metrics(tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000  # > one read block of 1 MiB
    path = _detector_file(tmp_path / "a", content, {"val/vg_map50": 0.8261})
    info = detector_provenance(path)
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert info["bytes"] == len(content) and info["checkpoint"] == str(path.resolve())
    assert info["metrics"] == {"val/vg_map50": 0.8261}
    # the same bytes elsewhere: the same identity; one byte changed: another
    other = _detector_file(tmp_path / "b", content)
    assert (
        detector_provenance(other)["sha256"] == info["sha256"]
        and detector_provenance(other)["metrics"] is None
    )
    changed = _detector_file(tmp_path / "c", content[:-1] + b"\x00")
    assert detector_provenance(changed)["sha256"] != info["sha256"]
    (tmp_path / "c" / "detector_metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="detector_metrics.json"):
        detector_provenance(changed)


def test_record_detector_writes_it_and_refuses_to_resume_on_another(tmp_path: Path) -> None:
    first = _detector_file(tmp_path / "det1", b"weights one", {"val/vg_map50": 0.84})
    second = _detector_file(tmp_path / "det2", b"weights two")
    run = tmp_path / "run"
    run.mkdir()
    info = record_detector(first, run)
    assert json.loads((run / PROVENANCE_FILE).read_text()) == info
    assert info["sha256"] == hashlib.sha256(b"weights one").hexdigest()
    record_detector(first, run)  # the same detector again (a resumed run): fine
    with pytest.raises(ConfigError, match="not the detector this run started on"):
        record_detector(second, run)
    assert json.loads((run / PROVENANCE_FILE).read_text())["sha256"] == info["sha256"]  # left as it was
    # resuming from an earlier run directory (ckpt_path=last in a new Hydra folder): checked against that one
    new = tmp_path / "run_resumed"
    new.mkdir()
    with pytest.raises(ConfigError, match="sha256"):
        record_detector(second, new, prev_dir=run)
    assert not (new / PROVENANCE_FILE).exists()
    assert record_detector(first, new, prev_dir=run)["sha256"] == info["sha256"]
    # a damaged record is an error naming the file, not silently replaced
    (new / PROVENANCE_FILE).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a readable detector record"):
        record_detector(first, new)
