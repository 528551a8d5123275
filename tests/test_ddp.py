"""Training and evaluation under Lightning's DDP (``trainer=ddp``): 2 CPU processes with the gloo backend.

The tiny pipeline runs as a user runs it (``python -m sgseg.train trainer=ddp …``; Lightning starts the second
process), with :class:`tests.ddp_probe.DDPProbe` recording per rank the image ids of every training batch,
hashes of the frozen detector and of the trained weights, and what each rank's test metric was fed. Checked:
the VG and COCO streams are sharded (every image exactly once per epoch across the ranks), the detector stays
frozen and identical on both ranks, the ranks end with the same weights, the test metrics equal one process
scoring the same predictions, a killed 2-process run resumed with ``ckpt_path=last`` sees the same batches as
the uninterrupted one, and the ablation rows train without DDP's unused-parameter error.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from sgseg.evaluation import coco_mask_ap
from sgseg.evaluation.metric import SceneGraphMetric

from .conftest import REPO, once_per_session
from .ddp_probe import state_hash
from .test_train_cli import ENV, _cmd

# meant to keep the module on one worker (pytest --dist loadgroup); with pytest 9 it does not, so the pipeline
# fixture shares its run through once_per_session
pytestmark = pytest.mark.xdist_group("ddp_pipeline")

DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "callbacks.progress_bar=null",
    "+callbacks.probe._target_=tests.ddp_probe.DDPProbe",
    # 5 test images on 2 ranks: DistributedSampler repeats one, the metrics must count it once
    "data.generate.num_vg_test=5",
    "model.trainer.max_epochs=2",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    # per-item augmentation draws + checkpointed RNG states: a resumed run trains the uninterrupted run's numbers
    "data.loader.augment_draws=keyed",
]
VG_STEPS_PER_EPOCH = 3  # 12 VG train images (16 minus 4 val) / (2 ranks x batch 2)


def _run(tmp_path: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(
        _cmd(tmp_path, *DDP, *extra), capture_output=True, text=True, cwd=REPO, env=ENV, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _probe(stage_dir: Path, stage: str) -> dict[int, list[dict]]:
    lines = {}
    for rank in (0, 1):
        path = stage_dir / "probe" / f"{stage}_rank{rank}.jsonl"
        lines[rank] = [json.loads(x) for x in path.read_text().splitlines()]
    return lines


def _batches(lines: list[dict]) -> list[dict]:
    return [x for x in lines if x["event"] == "batch"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Stage 1 (4 steps) + stage 2 (2 epochs, 8 steps) + test of the seg-grounded MOTIF, as 2 processes; run
    once per test session even when xdist spreads this module's tests over two workers (as it does with
    pytest 9, ``xdist_group`` notwithstanding: measured, the pipeline ran on both, two 2-process gloo jobs at
    once): its stdout and stderr are kept in files for the workers that did not run it."""
    from types import SimpleNamespace

    with once_per_session(tmp_path_factory, "ddp_pipeline") as (tmp, build):
        if build:
            out = _run(tmp)
            (tmp / "stdout.txt").write_text(out.stdout)
            (tmp / "stderr.txt").write_text(out.stderr)
    out = SimpleNamespace(stdout=(tmp / "stdout.txt").read_text(), stderr=(tmp / "stderr.txt").read_text())
    run_dir = next((tmp / "logs").rglob("metrics.json")).parent
    return tmp, run_dir, out


def _assert_sharded(lines: dict[int, list[dict]], key: str, num_items: int, batch: int = 2) -> int:
    """Group the steps into epochs of the stream; in each, the ranks together see every image once (a
    last, unfinished epoch: no image twice). Returns the number of complete epochs."""
    steps_per_epoch = num_items // (len(lines) * batch)
    by_epoch: dict[int, list[int]] = defaultdict(list)
    for rank_lines in lines.values():
        for k, b in enumerate(_batches(rank_lines)):
            assert len(b[key]) == batch
            by_epoch[k // steps_per_epoch].extend(b[key])
    complete = 0
    for epoch, ids in by_epoch.items():
        assert len(set(ids)) == len(ids), f"{key} epoch {epoch}: an image repeated in {sorted(ids)}"
        if len(ids) == steps_per_epoch * len(lines) * batch:
            assert len(ids) == num_items, (
                f"{key} epoch {epoch}: {len(ids)} images seen, {num_items} in the set"
            )
            complete += 1
    return complete


@pytest.mark.slow
def test_ddp_streams_sharded_detector_frozen_and_ranks_agree(pipeline):
    _, run_dir, out = pipeline
    assert "Starting with 2 processes" in out.stdout + out.stderr
    for stage, vg_epochs in (("detector", 1), ("scene_graph", 2)):
        lines = _probe(run_dir / ("detector" if stage == "detector" else ""), stage)
        start = {r: next(x for x in v if x["event"] == "start") for r, v in lines.items()}
        end = {r: next(x for x in v if x["event"] == "end") for r, v in lines.items()}
        assert start[0]["world_size"] == 2
        assert len(_batches(lines[0])) == len(_batches(lines[1])) == VG_STEPS_PER_EPOCH * vg_epochs
        assert (start[0]["num_vg"], start[0]["num_coco"]) == (12, 8)
        assert _assert_sharded(lines, "vg", start[0]["num_vg"]) == vg_epochs
        # COCO cycles on its own: 2 steps an epoch, so 3 (6) VG steps hold 1 (3) complete COCO epochs
        assert _assert_sharded(lines, "coco", start[0]["num_coco"]) == 3 * vg_epochs // 2
        for a, b in zip(_batches(lines[0]), _batches(lines[1])):  # one step: the ranks' batches differ
            assert a["step"] == b["step"] and not set(a["vg"]) & set(b["vg"])
        # DDP keeps the replicas equal: same weights at the start and after the last step, and they trained
        assert start[0]["trainable"] == start[1]["trainable"] != end[0]["trainable"] == end[1]["trainable"]
        if stage == "scene_graph":
            exported = torch.load(run_dir / "detector" / "detector.pt", weights_only=False)["state_dict"]
            for rec in (*start.values(), *end.values()):
                assert rec["detector"] == state_hash(exported)  # the file stage 1 wrote, unchanged
                assert rec["detector_requires_grad"] == 0 and rec["detector_training"] is False


@pytest.mark.slow
def test_ddp_test_metrics_equal_one_process_scoring_the_same_predictions(pipeline):
    _, run_dir, _ = pipeline
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shards = [torch.load(run_dir / "probe" / f"test_rank{r}.pt", weights_only=False) for r in (0, 1)]
    mode = shards[0]["mode"]
    one = SceneGraphMetric(mode=mode, num_predicates=shards[0]["num_predicates"],
                           num_object_classes=shards[0]["num_object_classes"])  # fmt: skip
    one.protocol = shards[0]["protocol"]  # same zero-shot triplets and Ks as the run
    ids = []
    for shard in shards:
        for gt, pred, image_id in shard["records"]:
            one.update(gt, pred, image_id=image_id)
            ids.append(int(image_id))
    assert len(ids) == 6 and len(set(ids)) == 5  # 5 test images, one repeated by DistributedSampler
    assert sorted(len(s["records"]) for s in shards) == [3, 3]
    expected = one.compute()
    compared = 0
    for key, value in expected.items():
        if isinstance(value, (int, float)) and f"{mode}/{key}" in metrics:
            got = metrics[f"{mode}/{key}"]
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value, abs=1e-12), key
            compared += 1
        elif isinstance(value, (list, tuple)):
            assert metrics[f"{mode}/{key}"] == pytest.approx([float(v) for v in value], nan_ok=True), key
    assert compared >= 18 and f"{mode}/mR@50" in metrics

    # COCO mask AP of the refinement head: every rank's detections, each val image once, in one process
    dets: dict[str, dict[int, dict]] = defaultdict(dict)
    for shard in shards:
        for name, items in shard["coco_dets"].items():
            for d in items:
                dets[name].setdefault(d["image_id"], d)
    assert {len(v) for v in dets.values()} == {4}  # all 4 COCO val images, from both ranks
    for name, by_image in dets.items():
        ap = coco_mask_ap(shards[0]["coco_gt"], list(by_image.values()), image_ids=sorted(by_image))
        setting, kind = name.split("_")
        for k, v in ap.items():
            assert metrics[f"{mode}/mask_{setting}_{k}_{kind}"] == pytest.approx(float(v), abs=1e-12)


@pytest.mark.slow
def test_ddp_killed_mid_epoch_resumes_with_the_same_batches(pipeline):
    """Stage 2 alone as 2 processes, SIGKILLed after its first checkpoint (mid-epoch), resumed with
    ``ckpt_path=last``: the batches of both ranks are those of the uninterrupted run (the pipeline's), and —
    with keyed augmentation draws and the RNG states in the checkpoint — so are the trained weights."""
    tmp, run_dir, _ = pipeline
    reference = {r: _batches(v) for r, v in _probe(run_dir, "scene_graph").items()}
    logs = tmp / "resume_logs"
    stage2 = [
        f"paths.log_dir={logs}" if arg.startswith("paths.log_dir=") else arg
        for arg in _cmd(
            tmp, *DDP, "stage=scene_graph", f"detector.checkpoint={run_dir / 'detector' / 'detector.pt'}"
        )
    ]
    err_file = open(tmp / "killed_stderr.txt", "w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(stage2, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err_file,
                            start_new_session=True)  # fmt: skip
    deadline, last = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None and last is None:
        last = next(iter(logs.rglob("checkpoints/last.ckpt")), None)
        time.sleep(0.2)
    assert last is not None, f"no checkpoints/last.ckpt: {(tmp / 'killed_stderr.txt').read_text()[-3000:]}"
    probe = last.parent.parent / "probe" / "scene_graph_rank0.jsonl"
    while time.time() < deadline and proc.poll() is None:  # the step after the checkpoint has begun, so
        complete_lines = probe.read_text().split("\n")[:-1]  # not a line still being written
        if any(b["step"] >= 2 for b in _batches([json.loads(x) for x in complete_lines])):
            break  # the checkpoint file is complete
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks at once, no teardown, no final checkpoint
    proc.wait()
    err_file.close()
    killed_dir = last.parent.parent
    assert not (killed_dir / "metrics.json").exists()
    killed = {r: _batches(v) for r, v in _probe(killed_dir, "scene_graph").items()}

    resumed_out = subprocess.run(
        stage2 + ["ckpt_path=last"], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900
    )
    assert resumed_out.returncode == 0, resumed_out.stderr[-4000:]
    assert f"resuming from {last}" in resumed_out.stdout
    resumed_dir = next(p.parent for p in logs.rglob("metrics.json"))
    resumed = {r: _batches(v) for r, v in _probe(resumed_dir, "scene_graph").items()}
    for rank in (0, 1):
        at = resumed[rank][0]["step"]
        assert 0 < at % VG_STEPS_PER_EPOCH and at == resumed[1 - rank][0]["step"]  # resumed mid-epoch
        before = [b for b in killed[rank] if b["step"] < at]
        assert len(before) == at
        assert before + resumed[rank] == reference[rank]
    # the weights: an uninterrupted stage-2-only run (the pipeline's stage 2 starts from the RNG state stage 1
    # left, so its initial weights differ) and the resumed one end bit for bit equal, on both ranks
    whole_logs = tmp / "whole_logs"
    whole = [f"paths.log_dir={whole_logs}" if a.startswith("paths.log_dir=") else a for a in stage2]
    whole_out = subprocess.run(whole, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900)
    assert whole_out.returncode == 0, whole_out.stderr[-4000:]
    whole_dir = next(p.parent for p in whole_logs.rglob("metrics.json"))
    ends = {
        (name, rank): next(x for x in lines if x["event"] == "end")["trainable"]
        for name, d in (("whole", whole_dir), ("resumed", resumed_dir))
        for rank, lines in _probe(d, "scene_graph").items()
    }
    assert len(set(ends.values())) == 1, ends
    # the fit's wall time continues across the kill: the killed process's segment (its last update), then the
    # resumed one from the checkpoint's step (sgseg.lit.clock.RunClock)
    from sgseg.lit.clock import read_timing

    first, second = read_timing(resumed_dir / "timing.json")
    assert (first["first_step"], first["finished"], second["finished"]) == (0, False, True)
    assert second["first_step"] == resumed[0][0]["step"] and second["last_step"] > second["first_step"]


@pytest.mark.slow
def test_ddp_ablation_base_row_trains_without_unused_parameter_error(tmp_path):
    """Table 4's first row switches off everything the reference code's DDP users tripped over: the VG-only
    detector (its COCO heads get no gradient in stage 1), no grounding, no refinement, no COCO stream."""
    out = _run(tmp_path, "+row=base", "model.trainer.max_epochs=1", "task=sgdet")
    run_dir = next((tmp_path / "logs").rglob("metrics.json")).parent
    lines = _probe(run_dir, "scene_graph")
    assert len(_batches(lines[0])) == VG_STEPS_PER_EPOCH
    assert all("coco" not in b for b in _batches(lines[0]) + _batches(lines[1]))  # COCO stream off
    assert all("coco" not in b for b in _batches(_probe(run_dir / "detector", "detector")[0]))
    assert (
        "sgdet/mR@50" in json.loads((run_dir / "metrics.json").read_text()) and "Traceback" not in out.stderr
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from sgseg.data.synthetic import generate

    from .test_scene_graph_module import TINY

    root = tmp_path_factory.mktemp("sgdata")
    generate(root / "synthetic", TINY, num_workers=1)
    return root


@pytest.mark.parametrize("joint", [True, False])
def test_stage1_unused_parameters_are_what_ddp_auto_assumes(tiny_data, joint):
    """``find_unused_parameters: auto`` gives stage 1 ``not joint``: the joint detector's step reaches every
    trainable weight (so DDP can skip the search), the VG-only one leaves its COCO heads without gradient."""
    from sgseg.lit.build import build_datamodule, build_detector
    from sgseg.lit.detector_module import DetectorPretrainModule

    from .test_scene_graph_module import _cfg

    cfg = _cfg(tiny_data)
    dm = build_datamodule(cfg, with_coco=joint)
    dm.setup("fit")
    detector = build_detector(cfg, len(dm.dataset("vg", "train").object_classes), 8)
    module = DetectorPretrainModule(detector)
    module.train()
    batch = next(iter(dm.train_dataloader()))
    assert ("coco" in batch) is joint
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(module.training_step(batch, 0), [p for _, p in params], allow_unused=True)
    unused = [n for (n, _), g in zip(params, grads) if g is None]
    if joint:
        assert unused == []
    else:
        # the COCO box head and the mask head (trained on COCO only)
        assert unused and all(n.startswith(("detector.coco_", "detector.mask_")) for n in unused), unused
