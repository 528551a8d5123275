"""``python -m sgseg.evaluate``: a trained run re-tested without training gives its test stage's numbers again,
and the same weights can be re-tested in another task."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import REPO

ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sgseg.evaluate", "num_threads=1", *args],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600,
    )  # fmt: skip


def test_evaluate_reproduces_the_test_stage_and_switches_task(tiny_sweep, tmp_path):
    job = tiny_sweep.jobs["refine"]
    done = _evaluate(f"run_dir={job}", f"out={tmp_path / 'again'}")
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((job / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    scalars = {k: v for k, v in trained.items() if isinstance(v, float)}
    assert "predcls/mR@50" in scalars and "predcls/mask_AP_refined" in scalars
    for key, value in scalars.items():  # the best checkpoint, tested again: the same numbers
        assert (math.isnan(value) and math.isnan(again[key])) or abs(again[key] - value) < 1e-6, key
    assert (tmp_path / "again" / "predcls_per_predicate_recall.png").stat().st_size > 1000
    assert "mR" in done.stdout
    # with out=, Hydra's log goes there too, not into the run directory
    assert (tmp_path / "again" / "evaluate.log").is_file()

    sgdet = _evaluate(
        f"run_dir={job}", "task=sgdet", "ckpt=last"
    )  # default out: <run>/evaluate/<task>-<ckpt>
    assert sgdet.returncode == 0, sgdet.stderr[-3000:]
    metrics = json.loads((job / "evaluate" / "sgdet-last" / "metrics.json").read_text())
    assert 0.0 <= metrics["sgdet/R@50"] <= 1.0 and not any(k.startswith("predcls/") for k in metrics)
    # ... on every ordered pair of detections instead of the reference's overlapping ones (this run's default;
    # the synthetic experiments score all pairs): a folder of its own, recorded in evaluation.json
    every = _evaluate(f"run_dir={job}", "task=sgdet", "ckpt=last", "require_overlap=false")
    assert every.returncode == 0, every.stderr[-3000:]
    folder = job / "evaluate" / "sgdet-last-all-pairs"
    assert json.loads((folder / "evaluation.json").read_text())["require_overlap"] is False
    assert (
        json.loads((job / "evaluate" / "sgdet-last" / "evaluation.json").read_text())["require_overlap"]
        is None
    )
    assert 0.0 <= json.loads((folder / "metrics.json").read_text())["sgdet/ngR@100"] <= 1.0
    assert "all ordered pairs of detections" in every.stdout
    wrong = _evaluate(f"run_dir={job}", "require_overlap=true", f"out={tmp_path / 'w'}")
    assert wrong.returncode == 1 and "only for an SGDet test" in wrong.stderr


def test_evaluate_without_a_run_is_one_clear_line(tmp_path):
    out = _evaluate(f"run_dir={tmp_path}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "config.yaml not found" in out.stderr
    # the check comes before Hydra makes its run dir: a mistyped run_dir leaves no <run_dir>/evaluate behind
    assert not (tmp_path / "evaluate").exists()
    missing = _evaluate(f"run_dir={tmp_path / 'typo'}")
    assert missing.returncode == 1 and "config.yaml not found" in missing.stderr
    assert not (tmp_path / "typo").exists()
    none = _evaluate()
    assert none.returncode == 1 and "Traceback" not in none.stderr and "run_dir is required" in none.stderr


def test_evaluate_swaps_grounding_masks_at_test_time(tiny_sweep, tmp_path):
    """``mask_source=oracle`` re-tests the grounded run's weights on the true masks (the VG items then carry
    them); a run without grounding refuses a swap in one line, since its predictions never read the masks."""
    job = tiny_sweep.jobs["refine"]
    done = _evaluate(f"run_dir={job}", "mask_source=oracle", f"out={tmp_path / 'oracle'}")
    assert done.returncode == 0, done.stderr[-3000:]
    what = json.loads((tmp_path / "oracle" / "evaluation.json").read_text())
    assert what["mask_source"] == "oracle" and what["trained_mask_source"] == "transfer"
    assert what["checkpoint"].endswith(".ckpt") and what["task"] == "predcls"
    metrics = json.loads((tmp_path / "oracle" / "metrics.json").read_text())
    # a scored test set: recall without the graph constraint is positive (the tiny model's graph-constrained R@50
    # can be 0: a few steps of training may put one predicate first for every pair)
    assert 0.0 <= metrics["predcls/R@50"] <= 1.0 and 0.0 < metrics["predcls/ngR@50"] <= 1.0
    assert "grounded on oracle masks (trained on transfer)" in done.stdout
    # ... on the objects' amodal masks instead of the visible ones: its own folder, recorded in evaluation.json
    amodal = _evaluate(
        f"run_dir={job}", "mask_source=oracle", 'true_masks="vg_{split}_amodal_masks.json"', "ckpt=last"
    )
    assert amodal.returncode == 0, amodal.stderr[-3000:]
    what = json.loads(
        (job / "evaluate" / "predcls-last-oracle-masks-vg_split_amodal_masks" / "evaluation.json").read_text()
    )
    assert what["true_masks"] == "vg_{split}_amodal_masks.json" and what["mask_source"] == "oracle"
    wrong = _evaluate(f"run_dir={job}", 'true_masks="vg_{split}_amodal_masks.json"', f"out={tmp_path / 'w'}")
    assert wrong.returncode == 1 and "only with mask_source=oracle" in wrong.stderr
    # ... blurred (a soft oracle, oracle_blur=σ): a folder of its own, σ in evaluation.json
    soft = _evaluate(f"run_dir={job}", "mask_source=oracle", 'true_masks="vg_{split}_amodal_masks.json"',
                     "oracle_blur=2", "ckpt=last")  # fmt: skip
    assert soft.returncode == 0, soft.stderr[-3000:]
    folder = job / "evaluate" / "predcls-last-oracle-masks-vg_split_amodal_masks-blur2"
    what = json.loads((folder / "evaluation.json").read_text())
    assert what["oracle_blur"] == 2.0 and what["true_masks"] == "vg_{split}_amodal_masks.json"
    assert "true masks blurred by σ=2" in soft.stdout and (folder / "metrics.json").is_file()
    wrong = _evaluate(f"run_dir={job}", "oracle_blur=2", f"out={tmp_path / 'w2'}")
    assert wrong.returncode == 1 and "oracle_blur=2: only with mask_source=oracle" in wrong.stderr

    base = _evaluate(f"run_dir={tiny_sweep.jobs['base']}", "mask_source=oracle", f"out={tmp_path / 'base'}")
    assert base.returncode == 1 and "Traceback" not in base.stderr
    assert "neither node nor edge grounding" in base.stderr


def test_evaluate_without_refined_masks_on_the_vg_stream(tiny_sweep, tmp_path):
    """``refine_passes=0`` re-tests the same weights with grounding on the unrefined transferred masks (the
    refinement passes switched off on the VG stream), in its own folder; a value other than 0/1/2 is one line."""
    job = tiny_sweep.jobs["refine"]
    done = _evaluate(f"run_dir={job}", "refine_passes=0", "ckpt=last")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = job / "evaluate" / "predcls-last-passes0"
    what = json.loads((folder / "evaluation.json").read_text())
    assert what["refine_passes"] == 0 and what["mask_source"] == what["trained_mask_source"] == "transfer"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 0.0 <= metrics["predcls/R@50"] <= 1.0 and 0.0 < metrics["predcls/ngR@50"] <= 1.0
    assert "refine_passes=0 (trained with 2)" in done.stdout
    bad = _evaluate(f"run_dir={job}", "refine_passes=3", f"out={tmp_path / 'bad'}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "use 0, 1 or 2" in bad.stderr


def test_evaluate_on_validation_images_and_on_seen_or_zero_shot_relations(tiny_sweep, tmp_path):
    """``split=val`` re-tests the weights on the validation images training's curves read: the last checkpoint
    gives the last logged validation numbers again. ``relations=zeroshot`` scores only the zero-shot GT triplets —
    its R@K is the full test's zsR@K (the evaluator's own zero-shot route); ``relations=seen`` the others — the two
    partition every image's relations and hits."""
    import csv

    import numpy as np

    job = tiny_sweep.jobs["refine"]
    runs = {}
    for name, args in {"all": [], "val": ["split=val"], "seen": ["relations=seen"],
                       "zeroshot": ["relations=zeroshot"]}.items():  # fmt: skip
        done = _evaluate(f"run_dir={job}", "ckpt=last", f"out={tmp_path / name}", *args)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (json.loads((tmp_path / name / "metrics.json").read_text()),
                      np.load(tmp_path / name / "predcls_per_image.npz"), done.stdout)  # fmt: skip
    what = json.loads((tmp_path / "val" / "evaluation.json").read_text())
    assert (what["split"], what["relations"]) == ("val", "all")
    assert "on the val split" in runs["val"][2] and "zeroshot GT relations only" in runs["zeroshot"][2]

    # the last validation of training (epoch end, the weights of last.ckpt), from the run's CSV log
    rows = [r for r in csv.DictReader(open(next(job.glob("csv/version_*/metrics.csv")))) if r.get("val/R@50")]
    logged = rows[-1]
    val = runs["val"][0]
    for k in ("R@20", "R@50", "ngR@100", "mR@50", "num_images"):
        assert val[f"predcls/{k}"] == pytest.approx(float(logged[f"val/{k}"]), abs=1e-6), k
    assert not set(runs["val"][1]["image_id"]) & set(runs["all"][1]["image_id"])

    full, zs, seen = runs["all"][0], runs["zeroshot"][0], runs["seen"][0]
    assert full["predcls/num_images_zeroshot"] > 0  # the tiny test split has zero-shot triplets
    for k in (20, 50, 100):
        assert zs[f"predcls/R@{k}"] == pytest.approx(full[f"predcls/zsR@{k}"], abs=1e-9)
        assert zs[f"predcls/ngR@{k}"] == pytest.approx(full[f"predcls/ng-zsR@{k}"], abs=1e-9)
    assert (
        seen["predcls/num_images_zeroshot"] == 0 and seen["predcls/zsR@50"] != seen["predcls/zsR@50"]
    )  # NaN
    npz = {name: runs[name][1] for name in ("all", "seen", "zeroshot")}
    assert all(np.array_equal(npz["all"]["image_id"], npz[n]["image_id"]) for n in ("seen", "zeroshot"))
    for field in ("num_rel", "hits", "pred_count", "pred_hits"):
        assert np.array_equal(npz["all"][field], npz["seen"][field] + npz["zeroshot"][field]), field
    # with 16 training images every tiny test relation is zero-shot: `seen` scores none here (NaN recall, no
    # crash); the split of a mixed image is hand-worked in test_keep_relations_splits_seen_and_zero_shot
    assert npz["all"]["num_rel"].sum() == npz["zeroshot"]["num_rel"].sum() > 0

    wrong = _evaluate(f"run_dir={job}", "relations=unseen", f"out={tmp_path / 'w'}")
    assert wrong.returncode == 1 and "relations='unseen': all | seen" in wrong.stderr
    wrong = _evaluate(f"run_dir={job}", "split=train", f"out={tmp_path / 'w2'}")
    assert wrong.returncode == 1 and "split='train'" in wrong.stderr


def test_keep_relations_splits_seen_and_zero_shot():
    from types import SimpleNamespace

    import torch

    from sgseg.evaluation.scene_graph import make_protocol
    from sgseg.lit.scene_graph_module import SceneGraphModule

    # 5 object classes, 4 predicates (with background); zero-shot triplets (1, 2, 3) and (4, 4, 1)
    def module_with(zeroshot):
        protocol = make_protocol("predcls", 4, (20, 50, 100), 0.5, zeroshot, 5)
        return SimpleNamespace(gt_relations="zeroshot", metric=SimpleNamespace(protocol=protocol))

    module = module_with(torch.tensor([[1, 2, 3], [4, 4, 1]]))
    subj, obj, pred = (
        torch.tensor([1, 2, 4, 4, 1]),
        torch.tensor([2, 1, 4, 4, 2]),
        torch.tensor([3, 3, 1, 2, 1]),
    )
    keep = SceneGraphModule._keep_relations(module, subj, obj, pred)
    assert keep.tolist() == [True, False, True, False, False]
    module.gt_relations = "seen"
    assert SceneGraphModule._keep_relations(module, subj, obj, pred).tolist() == [
        False,
        True,
        False,
        True,
        True,
    ]
    module = module_with(None)
    module.gt_relations = "seen"
    with pytest.raises(ValueError, match="no zero-shot triplets"):
        SceneGraphModule._keep_relations(module, subj, obj, pred)


@pytest.mark.parametrize(
    ("node", "edge", "grounded"),
    [
        ("NodeGrounding", "NoEdgeGrounding", True),  # Table 4's "+ node grounding" row
        ("NoNodeGrounding", "GaussianEdgeGrounding", True),
        ("NodeGrounding", "GaussianEdgeGrounding", True),
        ("NoNodeGrounding", "NoEdgeGrounding", False),
    ],
)
def test_a_mask_swap_needs_node_or_edge_grounding(node, edge, grounded, tmp_path):
    from omegaconf import OmegaConf

    from sgseg.lit.build import ConfigError
    from sgseg.lit.run import _check_mask_swap

    cfg = OmegaConf.create({"model": {"grounding": {
        "node": {"_target_": f"sgseg.models.grounding.{node}"},
        "edge": {"_target_": f"sgseg.models.grounding.{edge}"},
    }}})  # fmt: skip
    if grounded:
        _check_mask_swap(cfg, tmp_path, "empty")
    else:
        with pytest.raises(ConfigError, match="neither node nor edge grounding"):
            _check_mask_swap(cfg, tmp_path, "empty")
