"""The offline W&B runs of a real (tiny) sweep hold the dashboard keys; the .wandb reader itself."""

from __future__ import annotations

import json
import math
import re
import struct
import zlib

import pytest

from sgseg.wandb_offline import (
    BLOCK,
    FILE_HEADER,
    WandbFileError,
    find_offline_runs,
    iter_records,
    read_offline_run,
)

KS = (20, 50, 100)


def _write_log(path, payloads):
    """A W&B-format log written the way the spec in sgseg.wandb_offline describes (chunks across blocks)."""
    out = bytearray(FILE_HEADER)
    for payload in payloads:
        first = True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                left = BLOCK
            piece, payload = payload[: left - 7], payload[left - 7 :]
            kind = (1 if first else 4) if not payload else (2 if first else 3)
            out += struct.pack(
                "<IHB", zlib.crc32(piece, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, len(piece), kind
            )
            out += piece
            first = False
            if not payload:
                break
    path.write_bytes(bytes(out))


def test_iter_records_round_trip_across_blocks_and_detects_damage(tmp_path):
    payloads = [
        b"a" * 10,
        bytes(range(256)) * 300,
        b"",
        b"z" * (BLOCK - 30),
        b"tail",
    ]  # 76,800 bytes spans blocks
    path = tmp_path / "run-x.wandb"
    _write_log(path, payloads)
    assert list(iter_records(path)) == payloads
    data = bytearray(path.read_bytes())
    data[BLOCK + 100] ^= 0xFF  # a byte inside the second block
    path.write_bytes(bytes(data))
    with pytest.raises(WandbFileError, match="CRC mismatch"):
        list(iter_records(path))
    path.write_bytes(b"not a wandb file")
    with pytest.raises(WandbFileError, match="not a W&B transaction log"):
        list(iter_records(path))


def _runs(job):
    stage2 = [p for p in find_offline_runs(job) if "detector" not in p.relative_to(job).parts]
    stage1 = find_offline_runs(job / "detector")
    assert len(stage2) == 1 and len(stage1) == 1, (stage1, stage2)
    return read_offline_run(stage1[0]), read_offline_run(stage2[0])


def _table(run, key):
    """The rows of a logged W&B table, read from the media file its history entry points to."""
    entry = run.summary[key]
    assert entry["_type"] == "table-file", entry
    return json.loads((run.path / "files" / entry["path"]).read_text())


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
def test_stage2_run_holds_the_dashboard_under_stable_names(tiny_sweep):
    job = tiny_sweep.jobs["refine"]
    metrics = json.loads((job / "metrics.json").read_text())
    _, run = _runs(job)
    assert run.finished and run.job_type == "scene_graph"
    keys = run.history_keys()
    # the recall curves: one point per validation (2 epochs), and the test values
    for name in ("R", "mR", "zsR"):
        for k in KS:
            curve = run.series(f"val/{name}@{k}")
            assert len(curve) == 2 and all(0.0 <= v <= 1.0 for v in curve), (name, k, curve)
            assert run.summary[f"predcls/{name}@{k}"] == pytest.approx(metrics[f"predcls/{name}@{k}"])
    assert {"train/loss", "train/loss_rel", "train/loss_seg"} <= keys
    # per-predicate recall at K = 100: table, W&B bar chart and picture, same numbers as metrics.json
    per_pred = metrics["predcls/mR_per_predicate@100"]
    table = _table(run, "predcls/per_predicate_recall")
    assert table["columns"][:2] == ["predicate", "R@100"]
    assert [row[1] for row in table["data"]] == pytest.approx(per_pred)
    bar = _table(run, "predcls/per_predicate_recall_bar_table")
    assert [row[1] for row in bar["data"]] == pytest.approx(per_pred)
    assert [row[0] for row in bar["data"]] == [row[0] for row in table["data"]]
    assert run.summary["predcls/per_predicate_recall_plot"]["count"] == 1
    # COCO mask AP of the three Table-2 settings, refined vs. unrefined (table and scalars)
    mask = _table(run, "predcls/coco_mask_ap")
    assert [row[0] for row in mask["data"]] == ["predcls", "sgcls", "sgdet"]
    for row in mask["data"]:
        assert row[1] == pytest.approx(metrics[f"predcls/mask_{row[0]}_AP_unrefined"])
        assert row[2] == pytest.approx(metrics[f"predcls/mask_{row[0]}_AP_refined"])
        for which in ("refined", "unrefined"):
            assert f"predcls/mask_{row[0]}_AP_{which}" in keys and f"val/mask_{row[0]}_AP_{which}" in keys
    # prediction pictures, with their files
    for key in ("val/predictions", "test/predictions"):
        entry = run.summary[key]
        assert entry["count"] >= 1
        assert all((run.path / "files" / f).stat().st_size > 10_000 for f in entry["filenames"])
    # the full composed config
    assert run.config["model"]["context"]["_target_"].endswith("MotifContext")
    assert run.config["ablation_row"] == "refine" and run.config["task"]["name"] == "predcls"
    assert run.config["trainer"]["_target_"] == "pytorch_lightning.Trainer"


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
def test_stage1_run_holds_detection_curves(tiny_sweep):
    job = tiny_sweep.jobs["refine"]
    run, _ = _runs(job)
    stage1 = json.loads((job / "detector" / "detector_metrics.json").read_text())
    assert run.finished and run.job_type == "detector"
    for key in (
        "val/vg_map50",
        "val/coco_box_ap",
        "val/coco_box_ap50",
        "val/coco_mask_ap",
        "val/coco_mask_ap50",
    ):
        curve = run.series(key)
        assert len(curve) == 1 and curve[-1] == pytest.approx(stage1[key]), key
    assert run.config["detector"]["backbone"]["name"] == "tiny"


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
def test_sweep_runs_share_one_group(tiny_sweep):
    runs = [read_offline_run(p) for p in find_offline_runs(tiny_sweep.sweep)]
    assert len(runs) == 4  # 2 jobs × (stage 1 + stage 2)
    assert {r.group for r in runs} == {f"default/{tiny_sweep.sweep.name}"}
    assert sorted(r.job_type for r in runs) == ["detector", "detector", "scene_graph", "scene_graph"]
    names = {r.name for r in runs}
    assert any("+row=base" in n for n in names) and any("+row=refine" in n for n in names)


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
def test_log_file_shows_banners_progress_lines_and_the_results_table(tiny_sweep):
    log = tiny_sweep.log
    assert "\x1b[" not in log and "\r" not in log and not re.search(r"Epoch \d+/", log)  # no rich bar frames
    assert log.count("stage 1: detector pretraining") == 2 and log.count("stage 2: scene-graph training") == 4
    assert "stage 1: detector pretraining (tiny) on VG boxes only" in log  # row=base: the VG-only detector
    line = re.compile(
        r"^\[train\] step (\d+)/(\d+) \(\d+%\) epoch \d+ \| loss \d+\.\d{4}.* \| (nan|\d+\.\d\d) it/s \| "
        r"elapsed \d+:\d\d \| ETA \d+:\d\d$"
    )
    banners = log.split("steps: ")[1:]  # one part per stage, each with its own progress lines
    assert len(banners) == 4
    for part in banners:
        total = int(part.split(" ", 1)[0])
        steps = [(int(m.group(1)), int(m.group(2))) for m in map(line.match, part.splitlines()) if m]
        assert [s for s, _ in steps] == list(range(1, total + 1)), part[:2000]  # interval_s=0: every step
        assert {t for _, t in steps} == {total}
    assert log.count("[val] done at step") >= 6 and "val/mR@50" in log and "val/vg_map50" in log
    assert log.count("metric         @20     @50    @100") == 2
    assert re.search(r"^mR\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d$", log, re.M)
    assert not math.isnan(float(re.search(r"^R\s+(\S+)", log, re.M).group(1)))
