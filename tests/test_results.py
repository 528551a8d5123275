"""sgseg.results on hand-written run directories: the tables hold the numbers worked out by hand; the study's
t-intervals, per-image counts and paired bootstrap against independent routes."""

from __future__ import annotations

import csv
import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgseg import results as cr
from sgseg.evaluation import SceneGraphEvaluator
from sgseg.evaluation.scene_graph import recall_from_per_image


def _config(
    model, node, edge, refine, joint, seed=0, task="sgcls", row=None, backbone="resnext101_32x8d_fpn"
):
    cfg = {
        "stage": "scene_graph",
        "seed": seed,
        "tags": ["${task.name}"],
        "task": {"name": task},
        "detector": {"checkpoint": "???", "joint": joint, "backbone": {"name": backbone}},
        "model": {"name": model, "grounding": {"node": node, "edge": edge}, "refine": refine},
        "experiment_name": f"{model}_x",
    }
    if row is not None:
        cfg["ablation_row"] = row
    return cfg


def _job(
    path: Path, config: dict, overrides: list[str], metrics: dict | None = None, failed: str | None = None
):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics, allow_nan=True))
    if failed is not None:
        (path / "FAILED.txt").write_text(f"Traceback (most recent call last):\n  ...\n{failed}\n")


ROW_SETTINGS = {
    "base": ("none", "none", False, False),
    "joint": ("none", "none", False, True),
    "node": ("masks", "none", False, True),
    "refine": ("masks", "gaussian", True, True),
}


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    """A VCTree SGCls ablation sweep (2 seeds of base and refine, a failed and a partial job) + 3 single runs."""
    sweep = tmp_path / "multiruns" / "2026-11-25_10-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    jobs = [
        # (job, row, seed, mR@20, mR@50, mR@100, extra)
        ("0_base_seed0", "base", 0, 0.081, 0.099, 0.106, {}),
        ("1_base_seed1", "base", 1, 0.083, 0.101, 0.110, {}),
        ("4_refine_seed0", "refine", 0, 0.093, 0.115, 0.122,
         {"sgcls/mask_AP_unrefined": 0.516, "sgcls/mask_AP_refined": 0.540}),
        ("5_refine_seed1", "refine", 1, 0.095, 0.117, 0.124,
         {"sgcls/mask_AP_unrefined": 0.516, "sgcls/mask_AP_refined": 0.552}),
    ]  # fmt: skip
    for name, row, seed, m20, m50, m100, extra in jobs:
        node, edge, refine, joint = ROW_SETTINGS[row]
        metrics = {"sgcls/mR@20": m20, "sgcls/mR@50": m50, "sgcls/mR@100": m100, "sgcls/zsR@20": math.nan}
        metrics.update(extra)
        _job(
            sweep / name,
            _config("vctree", node, edge, refine, joint, seed=seed, row=row),
            [f"row={row}", f"seed={seed}", "sweep=ablation", "experiment=vctree_resnext", "task=sgcls"],
            metrics,
        )
    node, edge, refine, joint = ROW_SETTINGS["joint"]
    _job(
        sweep / "2_joint_seed0",
        _config("vctree", node, edge, refine, joint, row="joint"),
        ["row=joint", "seed=0"],
        failed="RuntimeError: CUDA out of memory",
    )
    node, edge, refine, joint = ROW_SETTINGS["node"]
    # a job whose metrics.json lacks mR@100 and has NaN mR@50: both print as "—"
    _job(
        sweep / "3_node_seed0",
        _config("vctree", node, edge, refine, joint, row="node"),
        ["row=node", "seed=0"],
        {"sgcls/mR@20": 0.090, "sgcls/mR@50": math.nan},
    )
    singles = tmp_path / "runs"
    _job(
        singles / "motif_grounded",
        _config("motif", "masks", "gaussian", True, True, task="predcls"),
        ["experiment=motif_resnext", "task=predcls"],
        {
            "predcls/mR@20": 0.145, "predcls/mR@50": 0.185, "predcls/mR@100": 0.202,
            "predcls/zsR@20": 0.041, "predcls/zsR@100": 0.105,
            "predcls/mask_AP_unrefined": 0.548, "predcls/mask_AP_refined": 0.593,
            "predcls/mR_per_predicate@100": [0.1, 0.2],
        },
    )  # fmt: skip
    _job(
        singles / "motif_baseline",
        _config("motif", "none", "none", False, False, task="predcls"),
        ["experiment=motif_resnext_baseline", "task=predcls"],
        {
            "predcls/mR@20": 0.141, "predcls/mR@50": 0.180, "predcls/mR@100": 0.194,
            "predcls/zsR@20": math.nan, "predcls/zsR@100": 0.072,
        },
    )  # fmt: skip
    # a stage-1 run: only the detector's metrics
    det = singles / "detector_resnext"
    cfg = {"stage": "detector", "detector": {"joint": True, "backbone": {"name": "resnext101_32x8d_fpn"}}}
    _job(det, cfg, ["experiment=detector_resnext"])
    (det / "detector").mkdir()
    (det / "detector" / "detector_metrics.json").write_text(
        json.dumps({"val/vg_map50": 0.283, "val/coco_box_ap": 0.371, "val/coco_mask_ap": 0.335})
    )
    return tmp_path


def test_finds_job_dirs_of_a_sweep_root(runs_root: Path) -> None:
    sweep = runs_root / "multiruns" / "2026-11-25_10-00-00"
    retest = sweep / "4_refine_seed0" / "evaluate" / "predcls-best-oracle-masks"  # sgseg.evaluate's output
    retest.mkdir(parents=True)
    (retest / "metrics.json").write_text("{}")
    (retest / "evaluation.json").write_text("{}")
    jobs = cr.find_job_dirs([sweep])  # a re-test inside a run is not a run
    assert [j.name for j in jobs] == [
        "0_base_seed0", "1_base_seed1", "2_joint_seed0", "3_node_seed0", "4_refine_seed0", "5_refine_seed1",
    ]  # fmt: skip
    # a job dir passed directly is taken as it is, and duplicates collapse
    assert cr.find_job_dirs([sweep / "0_base_seed0", sweep / "0_base_seed0"]) == [sweep / "0_base_seed0"]


def test_an_old_retest_without_evaluation_json_is_not_a_run(runs_root: Path, capsys) -> None:
    sweep = runs_root / "multiruns" / "2026-11-25_10-00-00"
    old = sweep / "4_refine_seed0" / "evaluate" / "predcls-best-step=9-empty-masks"  # older sgseg.evaluate
    old.mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    jobs = cr.find_job_dirs([sweep])
    assert len(jobs) == 6 and old not in jobs
    err = capsys.readouterr().err
    assert str(old) in err and "evaluation.json" in err and "run_dir=" in err
    # an `evaluate` folder of something that is not a run stays what it looks like
    other = runs_root / "loose" / "evaluate" / "x"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    assert cr.find_job_dirs([runs_root / "loose"]) == [other]


def test_run_settings_from_config_and_overrides(runs_root: Path) -> None:
    run = cr.load_run(runs_root / "multiruns" / "2026-11-25_10-00-00" / "1_base_seed1")
    assert (run.model, run.detector, run.row, run.seed, run.tasks) == (
        "vctree",
        "resnext101_32x8d_fpn",
        "base",
        1,
        ["sgcls"],
    )
    assert (run.node, run.edge, run.refine, run.joint, run.variant) == (
        "none",
        "none",
        False,
        False,
        "baseline",
    )
    assert run.value("sgcls", "zsR@20") is None  # NaN
    assert run.value("sgcls", "mR@20") == pytest.approx(0.083)
    # a command-line override wins over config.yaml; `+key=` and `~key` are understood
    assert cr._parse_overrides(["+seed=3", "model.refine=false", "~logger.wandb", "row=base"]) == {
        "seed": 3,
        "model.refine": False,
        "row": "base",
    }


def test_tables_hold_hand_computed_values(runs_root: Path) -> None:
    runs, tables, failed = cr.collect([runs_root])
    text = cr.render(runs, tables, failed)
    # Table 4: base mR@20 mean(8.1, 8.3) = 8.2, sample std 0.141; mR@100 mean(10.6, 11.0) = 10.8, std 0.283
    assert "### Table 4: ablation, VCTree SGCls (resnext101_32x8d_fpn)" in text
    assert "| base | 8.2 ± 0.1 | 10.0 ± 0.1 | 10.8 ± 0.3 | 2 |" in text
    assert "| joint detector | — | — | — | 0 |" in text  # its only job failed
    assert "| + node grounding | 9.0 | — | — | 1 |" in text  # one seed: no std; NaN and absent keys: —
    assert "| + edge avg | — | — | — | 0 |" in text  # never run
    assert "| + refinement (final) | 9.4 ± 0.1 | 11.6 ± 0.1 | 12.3 ± 0.1 | 2 |" in text
    # paper order of the rows
    order = [text.index(f"| {label} |") for label in cr.ROW_LABELS.values()]
    assert order == sorted(order)
    # Table 1: both variants of MOTIF on PredCls; no run for SGCls/SGDet
    assert "| MOTIF | resnext101_32x8d_fpn | baseline | 14.1 | 18.0 | 19.4 | — | — | — | — | — | — |" in text
    assert (
        "| MOTIF | resnext101_32x8d_fpn | seg-grounded | 14.5 | 18.5 | 20.2 | — | — | — | — | — | — |" in text
    )
    # the ablation's base / refine jobs are the VCTree baseline / seg-grounded on SGCls
    assert (
        "| VCTree | resnext101_32x8d_fpn | baseline | — | — | — | 8.2 ± 0.1 | 10.0 ± 0.1 | 10.8 ± 0.3 | — | — | — |"
        in text
    )
    # Table 3: zsR@20 NaN → —
    assert "| MOTIF | resnext101_32x8d_fpn | baseline | — | 7.2 | — | — | — | — |" in text
    assert "| MOTIF | resnext101_32x8d_fpn | seg-grounded | 4.1 | 10.5 | — | — | — | — |" in text
    # Table 2: unrefined AP from the refine=true runs (PredCls: MOTIF 54.8; SGCls: 51.6 twice),
    # refined SGCls mean(54.0, 55.2) = 54.6, std 0.849
    assert "| resnext101_32x8d_fpn | no refinement | 54.8 | — | — | 51.6 ± 0.0 | — | — | — | — | — |" in text
    assert "| resnext101_32x8d_fpn | MOTIF + refinement | 59.3 | — | — | — | — | — | — | — | — |" in text
    assert (
        "| resnext101_32x8d_fpn | VCTree + refinement | — | — | — | 54.6 ± 0.8 | — | — | — | — | — |" in text
    )
    # stage 1
    assert "| resnext101_32x8d_fpn | VG + COCO | detector_resnext | — | — | 28.3 | 37.1 | 33.5 |" in text
    # the failed job is listed with the last line of its traceback
    assert any("2_joint_seed0: FAILED (RuntimeError: CUDA out of memory)" in line for line in failed)


def test_detector_table_flags_a_config_that_disagrees_with_the_metrics(tmp_path: Path) -> None:
    """A VG-only config (detector.joint=false) whose detector was nevertheless validated on COCO."""
    for name, joint, metrics in (
        ("a", False, {"val/vg_map50": 0.10, "val/coco_mask_ap": 0.05}),
        ("b", False, {"val/vg_map50": 0.30}),
        ("c", False, {"val/vg_map50": 0.20}),
    ):
        cfg = {"stage": "pipeline", "detector": {"joint": joint, "backbone": {"name": "tiny"}}}
        _job(tmp_path / name, cfg, [], {"sgcls/mR@20": 0.1})
        (tmp_path / name / "detector").mkdir()
        (tmp_path / name / "detector" / "detector_metrics.json").write_text(json.dumps(metrics))
    text = cr.render(*cr.collect([tmp_path]))
    assert "| tiny | VG + COCO (config: detector.joint=false) | a | — | — | 10.0 | — | 5.0 |" in text
    assert "| tiny | VG only | b | — | — | 30.0 | — | — |" in text
    assert "| tiny | VG only | mean of 2 |  |  | 25.0 ± 7.1 | — | — |" in text


def test_cli_writes_markdown_and_csv(runs_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert cr.main([str(runs_root / "multiruns" / "2026-11-25_10-00-00"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| base | 8.2 ± 0.1 | 10.0 ± 0.1 | 10.8 ± 0.3 | 2 |" in printed
    assert (out / "results.md").read_text() in printed
    with open(out / "table4_ablation_vctree_sgcls_resnext101_32x8d_fpn.csv") as f:
        rows = list(csv.DictReader(f))
    base = rows[0]
    assert base["Row"] == "base" and base["seeds"] == "2"
    assert float(base["mR@20"]) == pytest.approx(8.2, abs=1e-4)
    assert float(base["mR@20 std"]) == pytest.approx(100 * math.sqrt(2) * 0.001, abs=1e-4)
    assert rows[1]["mR@20"] == "" and rows[1]["mR@20 std"] == ""
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [r["status"] for r in runs].count("failed") == 1 and len(runs) == 6
    # nothing to collect: a message and exit status 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cr.main([str(empty)]) == 1


def test_cli_default_out_is_only_a_single_sweep_folder(runs_root: Path, capsys) -> None:
    """Without --out the tables go into the one sweep folder given; with several folders, or one run's own folder
    (e.g. an archived run), the CLI refuses before writing anything instead of filling the first of them."""
    sweep = runs_root / "multiruns" / "2026-11-25_10-00-00"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    before = {p: sorted(q.name for q in p.iterdir()) for p in [sweep, *jobs]}
    for argv in ([str(jobs[0]), str(jobs[1])], [str(jobs[0])]):
        with pytest.raises(SystemExit) as exc:
            cr.main(argv)
        assert exc.value.code == 2
        assert "--out DIR is needed" in capsys.readouterr().err
    assert {p: sorted(q.name for q in p.iterdir()) for p in [sweep, *jobs]} == before
    assert cr.main([str(sweep), "--bootstrap", "0"]) == 0
    assert (sweep / "results.md").is_file() and (sweep / "runs.csv").is_file()


# ------------------------------------------------------------------------------------------------ the study
PREDICATES = ("left of", "on", "touching", "above")  # 2 box-decided, 2 mask-decided (cr.MASK_PREDICATES)


def _random_images(rng: np.random.Generator, num: int, skill: float) -> list[tuple[dict, dict]]:
    """PredCls images: 3-5 GT objects, 1-4 relations, all ordered pairs scored; ``skill`` raises the GT
    predicate's score, so better runs hit more."""
    images = []
    for _ in range(num):
        n = int(rng.integers(3, 6))
        xy = rng.uniform(0, 80, size=(n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 20, size=(n, 2))], 1)
        labels = rng.integers(1, 4, size=n)
        pairs = np.array([(s, o) for s in range(n) for o in range(n) if s != o])
        chosen = rng.choice(len(pairs), size=int(rng.integers(1, 5)), replace=False)
        rels = np.column_stack([pairs[chosen], rng.integers(1, len(PREDICATES) + 1, size=len(chosen))])
        scores = rng.uniform(size=(len(pairs), len(PREDICATES) + 1))
        for s, o, p in rels:
            row = int(np.flatnonzero((pairs[:, 0] == s) & (pairs[:, 1] == o))[0])
            scores[row, p] += skill * rng.uniform()
        images.append(({"boxes": boxes, "labels": labels, "relations": rels},
                       {"rel_pairs": pairs, "rel_scores": scores}))  # fmt: skip
    return images


def _evaluate(images, ids, ks=(20, 50, 100)) -> SceneGraphEvaluator:
    ev = SceneGraphEvaluator("predcls", num_predicates=len(PREDICATES) + 1, ks=ks, num_object_classes=4)
    for (gt, pred), i in zip(images, ids):
        ev.update(gt, pred, image_id=i)
    return ev


def test_t_interval_half_width_by_hand() -> None:
    # 40, 44, 48 %: s = 4, t_{0.975, 2} = 4.302653 → 4.302653 * 4 / sqrt(3) = 9.9366
    assert cr.t_half_width([0.40, 0.44, 0.48]) == pytest.approx(9.93655, abs=1e-4)
    assert cr.t_half_width([0.5]) is None
    cell = cr.IntervalCell([0.40, 0.44, 0.48])
    assert str(cell) == "44.0 ± 9.9"


def test_p_values_print_three_decimals_or_below_one_in_a_thousand() -> None:
    """The tables' p cells: three decimals, ``< 0.001`` where three decimals would read 0.000 (four MOTIF SGDet
    seed pairs: p = 2.0e-5), "—" where no test ran."""
    assert cr.format_p(0.0166) == "0.017"
    assert cr.format_p(0.00051) == "0.001"
    assert cr.format_p(0.00049) == "< 0.001"
    assert cr.format_p(1.98e-5) == "< 0.001"
    assert cr.format_p(math.nan) == cr.MISSING
    # paired t-test over seeds of +9.56, +9.16, +10.03, +9.24 points: t = 9.50 / (0.395 / 2) = 48.1, p ≈ 2e-5
    _, _, p = cr.seed_t_test([0.0956, 0.0916, 0.1003, 0.0924])
    assert p == pytest.approx(1.98e-5, rel=0.05) and cr.format_p(p) == "< 0.001"


def test_per_image_counts_give_the_evaluators_numbers_on_any_resample() -> None:
    """mR@K / R@K from the per-image counts equal the evaluator's, on all images (exactly) and on a resample
    with repeats (= a fresh evaluator fed those images under distinct ids)."""
    rng = np.random.default_rng(0)
    images = _random_images(rng, 30, skill=0.8)
    ev = _evaluate(images, range(100, 130))
    data = ev.protocol.per_image(ev.records)
    full = ev.compute()
    for k in (20, 50, 100):
        got = recall_from_per_image(data, k)
        assert got[f"mR@{k}"] == full[f"mR@{k}"] and got[f"R@{k}"] == full[f"R@{k}"]
        assert got[f"mR_per_predicate@{k}"] == full[f"mR_per_predicate@{k}"]
    rows = np.array([3, 3, 7, 0, 29, 29, 29, 12])
    other = _evaluate([images[i] for i in rows], range(len(rows))).compute()
    got = recall_from_per_image(data, 50, rows)
    assert got["mR@50"] == pytest.approx(other["mR@50"], abs=1e-15)
    assert got["R@50"] == pytest.approx(other["R@50"], abs=1e-15)
    with pytest.raises(ValueError, match="K = 7 is not among"):
        recall_from_per_image(data, 7)


def test_paired_bootstrap_pairs_images_by_id() -> None:
    rng = np.random.default_rng(1)
    images = _random_images(rng, 40, skill=0.3)
    better = [(gt, {**pred, "rel_scores": pred["rel_scores"] + 0}) for gt, pred in images]
    for (gt, pred), (_, bp) in zip(images, better):  # the better run hits every GT relation at rank 1..R
        for s, o, p in gt["relations"]:
            row = int(np.flatnonzero((pred["rel_pairs"][:, 0] == s) & (pred["rel_pairs"][:, 1] == o))[0])
            bp["rel_scores"][row, p] = 10.0
    ids = np.arange(500, 540)
    base = _evaluate(images, ids)
    good = _evaluate(better[::-1], ids[::-1])  # other image order: pairing must go by image id
    a, b = base.protocol.per_image(base.records), good.protocol.per_image(good.records)
    res = cr.paired_bootstrap([(a, b), (a, a)], 50, num=200)
    assert res["images"] == 40
    expected = good.compute()["mR@50"] - base.compute()["mR@50"]
    assert res["mR@50"][0] == pytest.approx(expected, abs=1e-12) and expected > 0
    assert res["R@50"][0] == pytest.approx(good.compute()["R@50"] - base.compute()["R@50"], abs=1e-12)
    assert res["mR@50_low"][0] <= res["mR@50"][0] <= res["mR@50_high"][0]
    assert res["mR@50_low"][1] == res["mR@50_high"][1] == res["mR@50"][1] == 0.0  # a run against itself
    assert res["mR@50_mean"] == pytest.approx(expected / 2, abs=1e-12)
    # an image only one run holds is left out of both
    drop = good.protocol.per_image(good.records)
    drop = {k: (v[1:] if v.ndim and len(v) == 40 else v) for k, v in drop.items()}
    assert cr.paired_bootstrap([(a, drop)], 50, num=10)["images"] == 39
    assert res["R@50_undefined"] == res["mR@50_undefined"] == 0


def test_paired_bootstrap_leaves_out_resamples_without_relations() -> None:
    """In a two-image test set with one scored image, a quarter of the resamples draw only the unscored one (R@K
    undefined there): counted, left out of R@K's percentiles; a set with no scored image is a clear error."""
    rng = np.random.default_rng(2)
    images = _random_images(rng, 2, skill=0.5)
    ev = _evaluate(images, [7, 8])
    a = ev.protocol.per_image(ev.records)
    a = {**a, "counted": np.array([True, False])}
    b = {**a, "hits": a["hits"] * 0, "pred_hits": a["pred_hits"] * 0}  # a run that finds nothing
    res = cr.paired_bootstrap([(a, b)], 50, num=400)
    assert 60 < res["R@50_undefined"] < 140  # binomial(400, 1/4): 100 ± 8.7
    assert res["mR@50_undefined"] == 0  # mR@K is 0 there (absent predicates score 0), not undefined
    full = recall_from_per_image(a, 50)
    assert full["R@50"] > 0
    # every defined resample holds only image 7: the difference is its own, so the interval is a point
    assert res["R@50_low"][0] == res["R@50_high"][0] == pytest.approx(-full["R@50"])
    with pytest.raises(ValueError, match="too small to bootstrap"):
        cr.paired_bootstrap([({**a, "counted": np.array([False, False])}, b)], 50, num=20)


def _study_job(path: Path, variant: str, seed: int, images, ids, overrides: tuple[str, ...] = ()) -> dict:
    settings = {
        "baseline": ("none", "none", False, "transfer"),
        "grounded": ("masks", "gaussian", True, "transfer"),
        "oracle": ("masks", "gaussian", True, "oracle"),
        "shuffled": ("masks", "gaussian", True, "shuffled"),
        "oracle_amodal": ("masks", "gaussian", True, "oracle"),
        "empty": ("masks", "gaussian", True, "empty"),
        "node": ("masks", "none", False, "transfer"),
        "edge_avg": ("masks", "avg", False, "transfer"),
        "edge_gaussian": ("masks", "gaussian", False, "transfer"),
        "edge_gaussian_oracle": ("masks", "gaussian", False, "oracle"),
    }
    node, edge, refine, source = settings[variant]
    cfg = _config("motif", node, edge, refine, True, seed=seed, task="predcls", backbone="tiny")
    cfg["model"]["mask_source"] = source
    cfg["data"] = {"true_masks": f"vg_{{split}}_{'amodal_' if variant == 'oracle_amodal' else ''}masks.json"}
    ev = _evaluate(images, ids)
    result = ev.compute()
    metrics = {f"predcls/{k}": v for k, v in result.items()}
    cfg["model"]["trainer"] = {"max_epochs": 12}
    cfg["model"]["optim"] = {"milestones": [4000], "gamma": 0.1}
    _job(path, cfg, [f"seed={seed}", *overrides], metrics)
    np.savez(path / "predcls_per_image.npz", **ev.protocol.per_image(ev.records), mode=np.array("predcls"),
             predicate_names=np.array(PREDICATES))  # fmt: skip
    return metrics


def test_study_tables_and_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ids = np.arange(1000, 1025)
    metrics = {}
    for v, skill in (("baseline", 0.2), ("grounded", 0.5), ("oracle", 2.0)):
        for seed in (0, 1, 2):
            images = _random_images(np.random.default_rng([seed, 7]), 25, 0.0)  # one test set per seed
            images = [(gt, {**p, "rel_scores": p["rel_scores"] + 0}) for gt, p in images]
            for gt, p in images:
                for s, o, c in gt["relations"]:
                    row = int(np.flatnonzero((p["rel_pairs"][:, 0] == s) & (p["rel_pairs"][:, 1] == o))[0])
                    p["rel_scores"][row, c] += skill * rng.uniform()
            metrics[(v, seed)] = _study_job(tmp_path / f"{v}_{seed}", v, seed, images, ids)
    out = tmp_path / "tables"
    assert cr.main([str(tmp_path), "--out", str(out), "--bootstrap", "100"]) == 0
    text = (out / "results.md").read_text()
    assert "### Study: MOTIF PredCls (tiny)" in text
    # the study table: mean ± t half-width over the 3 seeds, worked out here from the metrics
    grounded = [metrics[("grounded", s)]["predcls/mR@50"] for s in range(3)]
    cell = f"{100 * np.mean(grounded):.1f} ± {cr.t_half_width(grounded):.1f}"
    assert "| grounded | " in text and cell in text.split("| grounded | ")[1].split("\n")[0].split(" | ")[1]
    assert "| shuffled | — | — | — | — | — | 0 |" in text  # no run: a row of —
    assert "| oracle_amodal |" not in text and "| empty |" not in text  # the optional rows: only when run
    # per-predicate lines: mask-decided vs box-decided, their means per run, the paired Δ columns
    assert "| on | mask |" in text and "| left of | box |" in text
    # mask-decided first, each kind in the dataset's order, then the two means
    at = [text.index(f"| {n} | ") for n in ("on", "touching", "left of", "above", "mean, mask-decided")]
    assert at == sorted(at)
    assert "| Predicate | decided by | baseline | grounded | oracle | Δ grounded | Δ oracle |" in text
    per_pred = {k: np.array(m["predcls/mR_per_predicate@50"], dtype=float) for k, m in metrics.items()}
    mask_cols = [c for c, n in enumerate(PREDICATES) if n in cr.MASK_PREDICATES]
    assert mask_cols and len(mask_cols) < len(PREDICATES)

    def group(k):
        vals = per_pred[k][mask_cols]
        return np.mean(vals[~np.isnan(vals)])

    d = [group(("oracle", s)) - group(("baseline", s)) for s in range(3)]
    line = text.split("| mean, mask-decided |")[1].split("\n")[0].split(" | ")
    assert line[-1].rstrip(" |") == f"{100 * np.mean(d):.1f} ± {cr.t_half_width(d):.1f}"
    assert line[1].startswith(f"{100 * np.mean([group(('baseline', s)) for s in range(3)]):.1f} ± ")
    # bootstrap: the per-seed point estimate is the difference of the two metrics.json values
    d0 = metrics[("oracle", 0)]["predcls/mR@50"] - metrics[("baseline", 0)]["predcls/mR@50"]
    assert f"| oracle − baseline | 0 | {100 * d0:+.1f} |" in text
    assert "| grounded − baseline | mean of 3 |" in text
    # over seeds: the per-seed differences' mean, its t-interval and the paired t-test's p, worked out by hand
    from scipy.stats import t as student_t

    diffs = np.array([metrics[("grounded", s)]["predcls/mR@50"] - metrics[("baseline", s)]["predcls/mR@50"]
                      for s in range(3)])  # fmt: skip
    mean, sd = diffs.mean(), diffs.std(ddof=1)
    half = student_t.ppf(0.975, 2) * sd / math.sqrt(3)
    p = 2 * student_t.sf(abs(mean / (sd / math.sqrt(3))), 2)
    line = text.split("| grounded − baseline | over 3 seeds (t) | ")[1].split("\n")[0].split(" | ")
    assert line[:3] == [f"{100 * mean:+.1f}", f"{100 * (mean - half):+.1f}", f"{100 * (mean + half):+.1f}"]
    assert line[-1].rstrip(" |") == f"{p:.3f}"
    with open(out / "study_motif_predcls_tiny.csv") as f:
        rows = {r["Row"]: r for r in csv.DictReader(f)}
    assert float(rows["grounded"]["mR@50 ci95"]) == pytest.approx(cr.t_half_width(grounded), abs=1e-4)
    # the summary (one line per row, ahead of the detailed tables) repeats their numbers, worked out here again
    summary = text.split("### Study summary: MOTIF PredCls (tiny)")[1].split("### ")[0]
    assert text.index("### Study summary: MOTIF") < text.index("### Study: MOTIF PredCls (tiny)")
    cells = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in summary.splitlines()
             if line.startswith("| ") and not line.startswith(("| Row", "| ---"))}  # fmt: skip
    assert set(cells) == {"baseline", "grounded", "oracle"}  # no shuffled run: no line
    g = cells["grounded"]
    assert g[1] == "3" and g[2] == cell
    assert g[5].startswith(f"0: {100 * diffs[0]:+.1f} [") and f" / 2: {100 * diffs[2]:+.1f} [" in g[5]
    assert g[6] == f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    assert g[7] == f"{p:.3f}"
    assert cells["oracle"][8] == f"{100 * np.mean(d):+.1f} ± {cr.t_half_width(d):.1f}"  # Δ mask-decided
    assert cells["baseline"][5:] == ["—"] * 6 and cells["oracle"][10] == "—"  # no swap re-tests here
    png = out / "study_per_predicate_motif_predcls_tiny.png"
    assert png.stat().st_size > 5000


def test_the_amodal_oracle_is_a_row_of_its_own(tmp_path: Path) -> None:
    """An oracle run on an amodal true-mask file (row oracle_amodal) is not pooled with the visible-mask oracle."""
    ids = np.arange(10)
    for variant in ("baseline", "oracle", "oracle_amodal"):
        images = _random_images(np.random.default_rng([0, 9]), 10, 0.0)
        _study_job(tmp_path / variant, variant, 0, images, ids)
    runs = [cr.load_run(tmp_path / v) for v in ("baseline", "oracle", "oracle_amodal")]
    assert [r.study_variant for r in runs] == ["baseline", "oracle", "oracle_amodal"]
    (table,) = [t for t in cr.tables_study(runs, 20) if t.name.startswith("study_motif")]
    assert [row[0] for row in table.rows][:4] == ["baseline", "grounded", "oracle", "oracle_amodal"]
    assert table.rows[3][-1] == 1 and table.rows[2][-1] == 1
    bootstrap = [t for t in cr.tables_study(runs, 20) if t.name.startswith("study_bootstrap")][0]
    assert {row[0] for row in bootstrap.rows} == {"oracle − baseline", "oracle_amodal − baseline"}
    # a re-test on the amodal file (sgseg.evaluate mask_source=oracle true_masks=...) is that source, not the oracle's
    amodal = {"mask_source": "oracle", "true_masks": "vg_{split}_amodal_masks.json", "refine_passes": None}
    assert cr._retest_key(amodal) == "oracle_amodal"
    assert cr._retest_key({**amodal, "true_masks": "vg_{split}_masks.json"}) == "oracle"


def _skilled_study_jobs(root: Path, skills: dict[str, float], stream: int) -> dict[tuple[str, int], dict]:
    """Seeds 0 and 1 of each study row, ten random images each; a row's GT predicates get ``skill`` added to
    their scores (more for later seeds and subjects), so rows differ by design. Returns the metrics by (row,
    seed)."""
    metrics = {}
    for seed in (0, 1):
        for variant, skill in skills.items():
            images = _random_images(np.random.default_rng([seed, stream]), 10, 0.0)
            for gt, pred in images:
                for s, o, c in gt["relations"]:
                    row = int(
                        np.flatnonzero((pred["rel_pairs"][:, 0] == s) & (pred["rel_pairs"][:, 1] == o))[0]
                    )
                    pred["rel_scores"][row, c] += skill * (1 + seed + s)
            metrics[(variant, seed)] = _study_job(
                root / f"{variant}_{seed}", variant, seed, images, np.arange(10)
            )
    return metrics


def test_the_all_zero_mask_control_is_a_row_of_its_own(tmp_path: Path) -> None:
    """A seg-grounded run trained on all-zero masks (row=empty, model.mask_source=empty) is the study's control
    row: listed after the others, paired with the baseline (bootstrap, summary) and with the grounded run of the
    same seed (over seeds), and drawn in the per-predicate figure."""
    metrics = _skilled_study_jobs(tmp_path, {"baseline": 0.2, "grounded": 1.0, "empty": 0.4}, 9)
    # the control re-tested on the transferred masks (sgseg.evaluate mask_source=transfer): a swap of its own
    swapped = {"predcls/mR@50": metrics[("empty", 0)]["predcls/mR@50"] - 0.05}
    _retest(tmp_path / "empty_0", "transfer", swapped)
    info_path = next((tmp_path / "empty_0" / "evaluate").glob("*/evaluation.json"))
    info_path.write_text(json.dumps(json.loads(info_path.read_text()) | {"trained_mask_source": "empty"}))
    runs = [cr.load_run(path) for path in sorted(tmp_path.iterdir())]
    assert {r.study_variant for r in runs} == {"baseline", "grounded", "empty"}
    tables = {t.name: t for t in cr.tables_study(runs, 20)}
    study = tables["study_motif_predcls_tiny"]
    assert [row[0] for row in study.rows] == ["baseline", "grounded", "oracle", "shuffled", "empty"]
    assert study.rows[-1][-1] == 2  # two seeds
    bootstrap = tables["study_bootstrap_motif_predcls_tiny"]
    d0 = metrics[("empty", 0)]["predcls/mR@50"] - metrics[("baseline", 0)]["predcls/mR@50"]
    line = next(r for r in bootstrap.rows if r[0] == "empty − baseline" and r[1] == 0)
    assert line[2] == f"{100 * d0:+.1f}"
    g0 = metrics[("empty", 0)]["predcls/mR@50"] - metrics[("grounded", 0)]["predcls/mR@50"]
    line = next(r for r in bootstrap.rows if r[0] == "empty − grounded" and r[1] == 0)
    assert line[2] == f"{100 * g0:+.1f}" and float(line[3]) <= 100 * g0 <= float(line[4])
    assert {r[0] for r in bootstrap.rows} == {"grounded − baseline", "empty − baseline", "empty − grounded"}
    summary = tables["summary_study_motif_predcls_tiny"]
    assert [row[0] for row in summary.rows] == ["baseline", "grounded", "empty"]
    swaps = tables["study_swaps_motif_predcls_tiny"]
    line = next(r for r in swaps.rows if r[1] == "mR@50")
    assert line[0] == "empty (all-zero)" and line[-1] == 1
    assert line[swaps.header.index("→ transferred")].values == [pytest.approx(-0.05)]
    # over seeds, against the grounded run of the same seed: what the masks add over the architecture
    (over, *_) = cr.table_study_over_seeds(
        ("motif", "tiny", "predcls", ""), cr.study_groups(runs)[("motif", "tiny", "predcls", "")], {}, "last"
    )
    empty = next(row for row in over.rows if row[0] == "empty")
    gap = [metrics[("empty", s)]["predcls/mR@50"] - metrics[("grounded", s)]["predcls/mR@50"] for s in (0, 1)]
    assert empty[7].startswith(f"{100 * np.mean(gap):+.1f} [")
    out = tmp_path / "figs"
    out.mkdir()
    key = ("motif", "tiny", "predcls", "")
    assert cr.plot_study_predicates(key, cr.study_groups(runs)[key], out / "p.png").stat().st_size > 5000


def test_table4_partial_rows_at_the_study_schedule_are_study_rows(tmp_path: Path) -> None:
    """Table 4's partial rows trained like the study's (row=node / edge_avg / edge_gaussian: node grounding on the
    transferred masks, no refinement) are study rows of their own, between the baseline and the grounded row,
    paired with the baseline and with the grounded run of the same seed; on true masks such a run is no study
    row (no oracle ablation exists to pair it with)."""
    skills = {"baseline": 0.2, "node": 0.5, "edge_avg": 0.6, "edge_gaussian": 0.7, "grounded": 1.0}
    metrics = _skilled_study_jobs(tmp_path, skills, 5)
    images = _random_images(np.random.default_rng([0, 5]), 10, 0.0)
    _study_job(tmp_path / "oracle_ablation_0", "edge_gaussian_oracle", 0, images, np.arange(10))
    runs = {path.name: cr.load_run(path) for path in sorted(tmp_path.iterdir())}
    assert runs["node_0"].study_variant == "node" and runs["edge_avg_1"].study_variant == "edge_avg"
    assert (
        runs["edge_gaussian_0"].study_variant == "edge_gaussian"
        and runs["grounded_0"].study_variant == "grounded"
    )
    assert runs["oracle_ablation_0"].study_variant is None
    runs = list(runs.values())
    tables = {t.name: t for t in cr.tables_study(runs, 20)}
    study = tables["study_motif_predcls_tiny"]
    assert [row[0] for row in study.rows] == [
        "baseline", "node", "edge_avg", "edge_gaussian", "grounded", "oracle", "shuffled"
    ]  # fmt: skip
    node = next(row for row in study.rows if row[0] == "node")
    assert node[-1] == 2 and node[2].values == [
        pytest.approx(metrics[("node", s)]["predcls/mR@50"]) for s in (0, 1)
    ]
    bootstrap = tables["study_bootstrap_motif_predcls_tiny"]
    assert {r[0] for r in bootstrap.rows} == {
        f"{v} − {ref}" for v in ("node", "edge_avg", "edge_gaussian") for ref in ("baseline", "grounded")
    } | {"grounded − baseline"}
    # the refinement's share: edge_gaussian (node + Gaussian edges) − grounded (the same + refinement), per seed
    d1 = metrics[("edge_gaussian", 1)]["predcls/mR@50"] - metrics[("grounded", 1)]["predcls/mR@50"]
    line = next(r for r in bootstrap.rows if r[0] == "edge_gaussian − grounded" and r[1] == 1)
    assert line[2] == f"{100 * d1:+.1f}" and float(line[3]) <= 100 * d1 <= float(line[4])
    key = ("motif", "tiny", "predcls", "")
    (over, *_) = cr.table_study_over_seeds(key, cr.study_groups(runs)[key], {}, "last")
    node = next(row for row in over.rows if row[0] == "node")
    gain = [metrics[("node", s)]["predcls/mR@50"] - metrics[("baseline", s)]["predcls/mR@50"] for s in (0, 1)]
    gap = [metrics[("node", s)]["predcls/mR@50"] - metrics[("grounded", s)]["predcls/mR@50"] for s in (0, 1)]
    assert node[5].startswith(f"{100 * np.mean(gain):+.1f} [") and node[7].startswith(
        f"{100 * np.mean(gap):+.1f} ["
    )
    out = tmp_path / "figs"
    out.mkdir()
    assert cr.plot_study_predicates(key, cr.study_groups(runs)[key], out / "p.png").stat().st_size > 5000
    assert cr.plot_study_curves(key, cr.study_groups(runs)[key], out / "c.png") is None  # no CSV logs here


def test_object_label_table_by_hand(tmp_path: Path) -> None:
    """SGCls object accuracy per study row, over the runs whose test reports it (older tests lack obj_acc), with
    the same runs' mR@50 and the per-seed differences from the baseline / grounded run of the same seed."""
    from scipy.stats import t as student_t

    settings = {"baseline": ("none", "none", False, "transfer"), "grounded": ("masks", "gaussian", True, "transfer"),
                "empty": ("masks", "gaussian", True, "empty")}  # fmt: skip
    # (obj_acc, mR@50) per (row, seed); None: an older test without obj_acc
    values = {
        ("baseline", 0): (0.90, 0.52), ("baseline", 1): (0.88, 0.50), ("baseline", 2): (None, 0.51),
        ("grounded", 0): (0.95, 0.57), ("grounded", 1): (0.94, 0.56), ("grounded", 2): (0.96, 0.60),
        ("empty", 0): (0.94, 0.59),
    }  # fmt: skip
    for (variant, seed), (acc, mr) in values.items():
        node, edge, refine, source = settings[variant]
        cfg = _config("motif", node, edge, refine, True, seed=seed, task="sgcls", backbone="tiny")
        cfg["model"]["mask_source"] = source
        metrics = {"sgcls/mR@50": mr, "sgcls/R@50": mr + 0.1} | (
            {} if acc is None else {"sgcls/obj_acc": acc}
        )
        _job(tmp_path / f"{variant}_{seed}", cfg, [f"seed={seed}"], metrics)
    runs = [cr.load_run(path) for path in sorted(tmp_path.iterdir())]
    key = ("motif", "tiny", "sgcls", "")
    table = cr.table_study_objects(key, cr.study_groups(runs)[key])
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == ["baseline", "grounded", "empty"]
    base, grounded, empty = rows["baseline"], rows["grounded"], rows["empty"]
    assert base[1] == "0 1" and grounded[1] == "0 1 2" and empty[1] == "0"
    half = 100 * student_t.ppf(0.975, 1) * np.std([0.90, 0.88], ddof=1) / math.sqrt(2)
    assert str(base[2]) == f"89.0 ± {half:.1f}"
    assert str(base[3]).startswith("51.0 ± ")  # the mR@50 of seeds 0 and 1 only
    assert str(grounded[2]).startswith("95.0 ± ") and str(empty[2]) == "94.0"
    # grounded − baseline over seeds 0, 1 (seed 2's baseline has no obj_acc): +5, +6 points → +5.5
    d = np.array([0.05, 0.06])
    h = student_t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
    assert grounded[4] == f"+{100 * d.mean():.1f} [{100 * (d.mean() - h):+.1f}, {100 * (d.mean() + h):+.1f}]"
    assert empty[4] == "+4.0" and empty[6] == "-1.0"  # one seed: no interval
    assert base[6] == grounded[6] == "—" and base[4] == "—"
    # the recall split: mR@50 over the relations with both objects matched, reported by seeds 0 and 1 of the
    # baseline and grounded rows only -> its own table (after the object accuracy), Δ +7, +9 -> +8.0
    for run in runs:
        given = {("baseline", 0): 0.55, ("baseline", 1): 0.53, ("grounded", 0): 0.62, ("grounded", 1): 0.62}
        v = given.get((run.path.name.split("_")[0], int(run.seed)))
        if v is not None:
            run.metrics["sgcls/mR@50_given_objects"] = v
    tables = cr.tables_study_objects(key, cr.study_groups(runs)[key])
    assert [t.name for t in tables] == [
        table.name,
        table.name.replace("objects_", "objects_mR50_given_objects_"),
    ]
    rows = {row[0]: row for row in tables[1].rows}
    assert list(rows) == ["baseline", "grounded"] and rows["grounded"][1] == "0 1"
    assert str(rows["baseline"][2]).startswith("54.0 ± ") and str(rows["grounded"][2]) == "62.0 ± 0.0"
    assert str(rows["grounded"][3]).startswith("56.5 ± ")  # the row's own mR@50 over the same seeds
    assert rows["grounded"][4].startswith("+8.0 [")
    with pytest.raises(ValueError, match="no object measure 'obj_recall' in sgcls"):
        cr.table_study_objects(key, cr.study_groups(runs)[key], "obj_recall")
    # PredCls has no object measure; nor has a study whose tests all predate it
    assert cr.table_study_objects(("motif", "tiny", "predcls", ""), {}) is None
    assert cr.tables_study_objects(("motif", "tiny", "predcls", ""), {}) == []
    for run in runs:
        run.metrics.pop("sgcls/obj_acc", None)
    assert cr.table_study_objects(key, cr.study_groups(runs)[key]) is None


def test_table4_step_by_step_by_hand(tmp_path: Path) -> None:
    """Table 4 read step by step: each partial row minus the row it adds to (node − baseline, each edge variant −
    node, grounded − edge_gaussian), paired over the seeds with both, in mR@50 and in the object measures some run
    reports (an object measure that an older test lacks names the seeds it paired); absent rows, absent steps."""
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    settings = {"baseline": ("none", "none", False), "node": ("masks", "none", False),
                "edge_avg": ("masks", "avg", False), "edge_gaussian": ("masks", "gaussian", False),
                "grounded": ("masks", "gaussian", True)}  # fmt: skip
    # (mR@50, obj_acc) per (row, seed); None: an older test without obj_acc
    values = {
        ("baseline", 0): (0.50, None), ("baseline", 1): (0.52, 0.90), ("baseline", 2): (0.51, 0.88),
        ("node", 0): (0.54, 0.93), ("node", 1): (0.55, 0.92), ("node", 2): (0.56, 0.91),
        ("edge_avg", 0): (0.55, 0.93),
        ("edge_gaussian", 0): (0.56, 0.93), ("edge_gaussian", 1): (0.56, 0.93), ("edge_gaussian", 2): (0.58, 0.92),
        ("grounded", 0): (0.57, 0.94), ("grounded", 1): (0.58, 0.93),
    }  # fmt: skip
    for (variant, seed), (mr, acc) in values.items():
        node, edge, refine = settings[variant]
        cfg = _config("vctree", node, edge, refine, True, seed=seed, task="sgcls", backbone="tiny")
        cfg["model"]["mask_source"] = "transfer"
        metrics = {"sgcls/mR@50": mr, "sgcls/R@50": mr + 0.1} | (
            {} if acc is None else {"sgcls/obj_acc": acc}
        )
        _job(tmp_path / f"{variant}_{seed}", cfg, [f"seed={seed}"], metrics)
    runs = [cr.load_run(path) for path in sorted(tmp_path.iterdir())]
    key = ("vctree", "tiny", "sgcls", "")
    groups = cr.study_groups(runs)[key]
    table = cr.table_study_steps(key, groups)
    assert table.header == ["Step", "adds", "seeds (mR@50)", "Δ mR@50 (t)", "p (mR@50)",
                            "Δ object accuracy (t)", "p (obj_acc)"]  # fmt: skip
    rows = {row[0]: row for row in table.rows}
    # no edge_union runs: no such step
    assert list(rows) == [
        "node − baseline",
        "edge_avg − node",
        "edge_gaussian − node",
        "grounded − edge_gaussian",
    ]

    def over(d: list[float]) -> str:
        d = np.array(d)
        h = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        return f"{d.mean():+.1f} [{d.mean() - h:+.1f}, {d.mean() + h:+.1f}]"

    node = rows["node − baseline"]
    assert node[1] == "node grounding f_N" and node[2] == "0 1 2"
    assert node[3] == over([4.0, 3.0, 5.0]) == "+4.0 [+1.5, +6.5]"
    assert node[4] == f"{ttest_1samp([4.0, 3.0, 5.0], 0).pvalue:.3f}"
    # obj_acc: seed 0's baseline predates it, so seeds 1 and 2 pair: +2, +3
    assert node[5] == over([2.0, 3.0]) + " (seeds 1 2)"
    gauss = rows["edge_gaussian − node"]
    assert gauss[2] == "0 1 2" and gauss[3] == over([2.0, 1.0, 2.0]) and gauss[5] == over([0.0, 1.0, 1.0])
    avg = rows["edge_avg − node"]
    assert avg[2] == "0" and avg[3] == "+1.0" and avg[4] == "—" and avg[5] == "+0.0"  # one seed: no interval
    refine = rows["grounded − edge_gaussian"]
    assert refine[1] == "the mask refinement head" and refine[2] == "0 1"
    assert refine[3] == over([1.0, 2.0]) and refine[5] == over([1.0, 0.0])
    # the table is among the study's tables; a study without a partial row has none
    assert table.name in {t.name for t in cr.tables_study(runs, 0)}
    assert cr.table_study_steps(key, {v: groups[v] for v in ("baseline", "grounded")}) is None


def _write_csv_log(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["epoch", "step", "train/loss", "val/R@50", "val/mR@50"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def test_study_validation_curves(tmp_path: Path) -> None:
    """val/mR@50 and val/R@50 are read from the CSV logger (a resumed run's versions joined, the later one
    replacing the earlier from its first step on; training rows without a val value skipped) and drawn per row."""
    images = _random_images(np.random.default_rng(5), 10, 0.0)
    ids = np.arange(10)
    for v in ("baseline", "grounded"):
        for seed in (0, 1):
            job = tmp_path / f"{v}_{seed}"
            _study_job(job, v, seed, images, ids)
            # version_0: an interrupted first attempt (validated at 3, 9 and 12, killed after its step-5
            # checkpoint); version_1: the resumed run, from step 5 on (redoes 9, no longer validates at 12)
            _write_csv_log(job / "csv" / "version_0" / "metrics.csv",
                           [{"step": s, "val/mR@50": 0.99} for s in (3, 9, 12)])  # fmt: skip
            rows = [{"step": 4, "train/loss": 1.0}]
            rows += [{"step": s, "val/mR@50": 0.1 * s + seed, "val/R@50": 0.2 * s} for s in (9, 19)]
            _write_csv_log(job / "csv" / "version_1" / "metrics.csv", rows)
    run = cr.load_run(tmp_path / "grounded_1")
    assert run.val_curve("mR@50") == [(3, 0.99), (9, pytest.approx(1.9)), (19, pytest.approx(2.9))]
    assert run.val_curve("R@50") == [(9, pytest.approx(1.8)), (19, pytest.approx(3.8))]
    assert run.val_curve("zsR@50") == []
    assert cr.main([str(tmp_path), "--out", str(tmp_path / "t"), "--bootstrap", "0"]) == 0
    assert (tmp_path / "t" / "study_curves_motif_predcls_tiny.png").stat().st_size > 5000
    # no CSV log at all: no figure, no error
    key = ("motif", "tiny", "predcls", "")
    bare = cr.load_run(tmp_path / "baseline_0")
    bare.path = tmp_path / "nowhere"
    assert cr.plot_study_curves(key, {"baseline": [bare]}, tmp_path / "none.png") is None
    # the thick line's legend: the mean of several seeds, or the one run it is
    assert cr._curve_legend("grounded", "", [0, 1]) == "grounded (mean of 2)"
    assert cr._curve_legend("empty", "12 epochs", [4]) == "empty (all-zero masks), 12 epochs (1 run, seed 4)"


def test_mean_curve_meets_seeds_validated_at_other_intervals() -> None:
    """The archived SGDet baselines: seed 0 validated every half epoch (steps 211, 423, 636, 848: Lightning logs a
    mid-epoch validation one step early), seed 2 once per epoch (424, 849). The mean is drawn at seed 2's steps
    from each seed's nearest validation; a step no seed matches within the tolerance is left out."""
    half = {211: 0.30, 423: 0.34, 636: 0.36, 848: 0.40}
    whole = {424: 0.38, 849: 0.46, 1274: 0.50}
    steps, means = cr.mean_curve([half, whole])
    assert steps == [424, 849]  # 1274: seed 0 has nothing within 2 steps
    assert means == [pytest.approx(36.0), pytest.approx(43.0)]
    assert cr.mean_curve([half, {430: 0.5}]) == ([], [])  # 7 steps from 423: another validation
    assert cr.mean_curve([half, {}]) == ([], [])
    same = cr.mean_curve([half, {k: 2 * v for k, v in half.items()}])
    assert same[0] == sorted(half) and same[1] == [pytest.approx(150 * v) for v in half.values()]


def _retest(
    job: Path,
    source: str,
    metrics: dict,
    checkpoint: str = "best-step=9.ckpt",
    passes: int | None = None,
    require_overlap: bool | None = None,
) -> None:
    suffix = ("" if source == "transfer" else f"-{source}-masks") + (
        "" if passes is None else f"-passes{passes}"
    )
    if require_overlap is not None:
        suffix += "-overlapping-pairs" if require_overlap else "-all-pairs"
    out = job / "evaluate" / f"predcls-{Path(checkpoint).stem}{suffix}"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(metrics))
    info = {"task": "predcls", "mask_source": source, "trained_mask_source": "transfer", "refine_passes": passes,
            "checkpoint": str(job / "checkpoints" / checkpoint), "run_dir": str(job),
            "require_overlap": require_overlap}  # fmt: skip
    (out / "evaluation.json").write_text(json.dumps(info))


def test_study_mask_swap_table(tmp_path: Path) -> None:
    """The swap table pairs each re-test with its own run: own mean over the runs, then swap − own per run."""
    ids = np.arange(20)
    own, swapped, unrefined = {}, {}, {}
    for seed in (0, 1, 2):
        images = _random_images(np.random.default_rng([seed, 3]), 20, 0.0)
        own[seed] = _study_job(tmp_path / f"grounded_{seed}", "grounded", seed, images, ids)
        other = _random_images(np.random.default_rng([seed, 4]), 20, 0.0)
        swapped[seed] = _study_job(tmp_path / f"scratch_{seed}", "baseline", seed, other, ids)
        _retest(tmp_path / f"grounded_{seed}", "oracle", swapped[seed])
        # a re-test of the last checkpoint is not the one the run's own test used: ignored
        _retest(tmp_path / f"grounded_{seed}", "empty", own[seed], checkpoint="last.ckpt")
        if seed < 2:  # the own masks without refinement passes (sgseg.evaluate refine_passes=0), two runs
            unrefined[seed] = _study_job(tmp_path / f"scratch2_{seed}", "baseline", seed,
                                         _random_images(np.random.default_rng([seed, 5]), 20, 0.0), ids)  # fmt: skip
            _retest(tmp_path / f"grounded_{seed}", "transfer", unrefined[seed], passes=0)
            # ... also of the last checkpoint: not the run's final-weights test, which is on its own setting
            _retest(
                tmp_path / f"grounded_{seed}", "transfer", unrefined[seed], checkpoint="last.ckpt", passes=0
            )
            assert cr._final_weights_test(cr.load_run(tmp_path / f"grounded_{seed}")) is None
        if seed == 0:  # another set of test pairs (sgseg.evaluate require_overlap=...): a re-test, not a swap
            _retest(tmp_path / "grounded_0", "transfer", swapped[seed], require_overlap=False)
            _retest(
                tmp_path / "grounded_0",
                "transfer",
                swapped[seed],
                checkpoint="last.ckpt",
                require_overlap=True,
            )
            assert cr._final_weights_test(cr.load_run(tmp_path / "grounded_0")) is None
    runs = [cr.load_run(tmp_path / f"grounded_{s}") for s in (0, 1, 2)]
    assert set(runs[0].retests("predcls")) == {"oracle", "transfer|passes0", "transfer|all-pairs"}
    assert runs[0].retests("sgcls") == {} and set(runs[2].retests("predcls")) == {"oracle"}
    table = cr.table_study_swaps(("motif", "tiny", "predcls", ""), {"grounded": runs})
    assert table is not None and table.header[-1] == "runs"
    by_measure = {row[1]: row for row in table.rows}
    row = by_measure["mR@50"]
    assert row[0] == "grounded (transferred)" and row[-1] == 3
    assert row[2].mean == pytest.approx(100 * np.mean([own[s]["predcls/mR@50"] for s in own]))
    d = [swapped[s]["predcls/mR@50"] - own[s]["predcls/mR@50"] for s in own]
    assert row[4].mean == pytest.approx(100 * np.mean(d)) and row[4].spread == pytest.approx(
        cr.t_half_width(d)
    )
    # own source; none; none; only a last.ckpt
    assert not row[3].values and not row[5].values and not row[6].values and not row[7].values
    assert table.header[5] == "→ true amodal" and table.header[8] == "→ own, unrefined"
    d = [unrefined[s]["predcls/mR@50"] - own[s]["predcls/mR@50"] for s in unrefined]
    assert len(row[8].values) == 2 and row[8].mean == pytest.approx(100 * np.mean(d))
    mask_cols = [c for c, n in enumerate(PREDICATES) if n in cr.MASK_PREDICATES]

    def mask_mean(m):
        vals = np.array(m["predcls/mR_per_predicate@50"], dtype=float)[mask_cols]
        return np.mean(vals[~np.isnan(vals)])

    d = [mask_mean(swapped[s]) - mask_mean(own[s]) for s in own]
    assert by_measure["R@50, mask-decided"][4].mean == pytest.approx(100 * np.mean(d))
    # no re-tests anywhere: no table; the re-test folders are not runs of their own
    assert cr.table_study_swaps(("motif", "tiny", "predcls", ""), {"grounded": runs[:0]}) is None
    assert all("evaluate" not in str(j) for j in cr.find_job_dirs([tmp_path]))


def test_blurred_true_masks_are_a_swap_of_their_own(tmp_path: Path) -> None:
    """A re-test on blurred true masks (``sgseg.evaluate mask_source=oracle oracle_blur=2``) gets a swap column of
    its own, is never taken for the run's final-weights test, and a run trained on blurred true masks is no
    oracle study row."""
    ids = np.arange(20)
    own, blurred = {}, {}
    for seed in (0, 1):
        own[seed] = _study_job(tmp_path / f"grounded_{seed}", "grounded", seed,
                               _random_images(np.random.default_rng([seed, 3]), 20, 0.0), ids)  # fmt: skip
        blurred[seed] = _study_job(tmp_path / f"scratch_{seed}", "baseline", seed,
                                   _random_images(np.random.default_rng([seed, 6]), 20, 0.0), ids)  # fmt: skip
        out = (
            tmp_path
            / f"grounded_{seed}"
            / "evaluate"
            / "predcls-last-oracle-masks-vg_split_amodal_masks-blur2"
        )
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(blurred[seed]))
        info = {"task": "predcls", "mask_source": "oracle", "trained_mask_source": "transfer",
                "true_masks": "vg_{split}_amodal_masks.json", "oracle_blur": 2.0, "refine_passes": None,
                "checkpoint": str(tmp_path / f"grounded_{seed}" / "checkpoints" / "last.ckpt")}  # fmt: skip
        (out / "evaluation.json").write_text(json.dumps(info))
        # on an oracle-trained run (the own source), the blurred re-test is a swap, not its final-weights test
        info_own = {**info, "trained_mask_source": "oracle"}
        assert cr._retest_key(info_own) == "oracle_amodal|blur2"
        assert cr._retest_key({**info_own, "oracle_blur": None}) == "oracle_amodal"
        (out / "evaluation.json").write_text(json.dumps(info_own))
        assert cr._final_weights_test(cr.load_run(tmp_path / f"grounded_{seed}")) is None
        (out / "evaluation.json").write_text(json.dumps(info))
    runs = [cr.load_run(tmp_path / f"grounded_{s}", "best") for s in (0, 1)]
    runs[0].checkpoint = runs[1].checkpoint = (
        "last"  # read the ckpt=last re-tests, keep the runs' own metrics
    )
    assert set(runs[0].retests("predcls")) == {"oracle_amodal|blur2"}
    table = cr.table_study_swaps(("motif", "tiny", "predcls", ""), {"grounded": runs})
    assert table is not None
    column = table.header.index("→ true amodal, blurred σ=2")
    assert column == table.header.index("→ empty") + 1  # after the sharp sources
    row = {r[1]: r for r in table.rows}["mR@50"]
    d = [blurred[s]["predcls/mR@50"] - own[s]["predcls/mR@50"] for s in (0, 1)]
    assert row[column].mean == pytest.approx(100 * np.mean(d)) and len(row[column].values) == 2
    assert not row[table.header.index("→ true amodal")].values
    # a run trained on blurred true masks is not pooled with the sharp oracle rows
    cfg = yaml.safe_load((tmp_path / "grounded_0" / ".hydra" / "config.yaml").read_text())
    cfg["model"]["mask_source"], cfg["model"]["oracle_blur"] = "oracle", 2.0
    (tmp_path / "grounded_0" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cr.load_run(tmp_path / "grounded_0").study_variant is None
    cfg["model"]["oracle_blur"] = 0.0
    (tmp_path / "grounded_0" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cr.load_run(tmp_path / "grounded_0").study_variant == "oracle"
    # ... and its final-weights test (sgseg.evaluate ckpt=last: the run's own blur, recorded as oracle_blur) is
    # found as such, while a sharp re-test of the same run is a swap, not its final-weights test
    cfg["model"]["oracle_blur"] = 2.0
    cfg["data"]["true_masks"] = "vg_{split}_amodal_masks.json"
    (tmp_path / "grounded_0" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "grounded_0" / "evaluate" / "predcls-last-oracle-masks-vg_split_amodal_masks-blur2"
    sharp = out.parent / "predcls-last"  # sorts first: the sharp re-test must not be taken for the own one
    sharp.mkdir()
    (sharp / "metrics.json").write_text(json.dumps(own[0]))
    (sharp / "evaluation.json").write_text(
        json.dumps(
            {
                **info,
                "checkpoint": str(tmp_path / "grounded_0" / "checkpoints" / "last.ckpt"),
                "trained_mask_source": "oracle",
                "oracle_blur": None,
            }
        )  # fmt: skip
    )
    info_blur = json.loads((out / "evaluation.json").read_text()) | {"trained_mask_source": "oracle"}
    (out / "evaluation.json").write_text(json.dumps(info_blur))
    run = cr.load_run(tmp_path / "grounded_0", "last")
    assert run.test_dir == out and run.failure is None
    assert run.metrics["predcls/mR@50"] == blurred[0]["predcls/mR@50"] != own[0]["predcls/mR@50"]
    assert set(run.retests("predcls")) == {"oracle_amodal"}
    # another true-mask file than the run's: a swap as well
    (out / "evaluation.json").write_text(json.dumps(info_blur | {"true_masks": "vg_{split}_masks.json"}))
    assert cr._final_weights_test(cr.load_run(tmp_path / "grounded_0")) is None


def _final_weights_retest(job: Path, scratch: Path, source: str = "transfer") -> None:
    """Move a scratch job's metrics and per-image counts into ``job/evaluate/predcls-last`` as
    ``sgseg.evaluate ckpt=last`` writes them (the run's own mask source)."""
    out = job / "evaluate" / "predcls-last"
    out.mkdir(parents=True)
    for name in ("metrics.json", "predcls_per_image.npz"):
        (scratch / name).rename(out / name)
    info = {"task": "predcls", "mask_source": source, "trained_mask_source": source,
            "checkpoint": str(job / "checkpoints" / "last.ckpt"), "run_dir": str(job)}  # fmt: skip
    (out / "evaluation.json").write_text(json.dumps(info))


def test_tables_on_final_weights(tmp_path: Path) -> None:
    """--checkpoint last: metrics, per-image counts and swaps come from the ckpt=last re-tests; a run without one
    is listed as failed with the command that makes it, and its best-checkpoint numbers are not used."""
    ids = np.arange(30)
    own, last = {}, {}
    for v in ("baseline", "grounded"):
        own[v] = _study_job(
            tmp_path / f"{v}_0", v, 0, _random_images(np.random.default_rng([1, len(v)]), 30, 0.0), ids
        )
        last[v] = _study_job(tmp_path / f"scratch_{v}", v, 0, _random_images(np.random.default_rng([2, len(v)]), 30, 0.0), ids)  # fmt: skip
        _final_weights_retest(tmp_path / f"{v}_0", tmp_path / f"scratch_{v}")
        shutil.rmtree(tmp_path / f"scratch_{v}")
    _study_job(tmp_path / "grounded_1", "grounded", 1, _random_images(np.random.default_rng(3), 30, 0.0), ids)
    _retest(tmp_path / "grounded_0", "empty", own["baseline"], checkpoint="last.ckpt")
    _retest(tmp_path / "grounded_0", "oracle", own["baseline"])  # a swap of the best checkpoint: not read

    best = cr.load_run(tmp_path / "grounded_0")
    run = cr.load_run(tmp_path / "grounded_0", "last")
    assert best.metrics["predcls/mR@50"] == own["grounded"]["predcls/mR@50"] and best.test_dir is None
    assert (
        run.metrics["predcls/mR@50"] == last["grounded"]["predcls/mR@50"] != own["grounded"]["predcls/mR@50"]
    )
    assert run.test_dir == tmp_path / "grounded_0" / "evaluate" / "predcls-last" and run.failure is None
    # the final-weights test on the own masks is not a swap
    assert set(run.retests("predcls")) == {"empty"} and set(best.retests("predcls")) == {"oracle"}
    # the bootstrap reads the re-test's per-image counts: its full-set difference is the metrics' difference
    base = cr.load_run(tmp_path / "baseline_0", "last")
    boot = cr.paired_bootstrap([(base.per_image("predcls"), run.per_image("predcls"))], 50, 20)
    want = last["grounded"]["predcls/mR@50"] - last["baseline"]["predcls/mR@50"]
    assert boot["mR@50"][0] == pytest.approx(want)
    # a final-weights re-test in another task (sgseg.evaluate task=sgdet ckpt=last) is not this run's test
    other = tmp_path / "grounded_1" / "evaluate" / "sgdet-last"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text(json.dumps({"sgdet/mR@50": 0.5}))
    (other / "evaluation.json").write_text(json.dumps({"task": "sgdet", "mask_source": "transfer",
        "trained_mask_source": "transfer", "checkpoint": "last.ckpt"}))  # fmt: skip
    missing = cr.load_run(tmp_path / "grounded_1", "last")
    assert (
        not missing.metrics
        and "sgseg.evaluate run_dir=" in missing.failure
        and "ckpt=last" in missing.failure
    )
    with pytest.raises(ValueError, match="best' or 'last'"):
        cr.load_run(tmp_path / "grounded_0", "final")

    out = tmp_path / "tables"
    assert cr.main([str(tmp_path), "--out", str(out), "--bootstrap", "50", "--checkpoint", "last"]) == 0
    text = (out / "results.md").read_text()
    assert f"{tmp_path / 'grounded_1'}: FAILED (no final-weights re-test" in text
    row = text.split("### Study: MOTIF PredCls (tiny)")[1].split("| grounded | ")[1].split("\n")[0]
    assert row.split(" | ")[1].startswith(f"{100 * last['grounded']['predcls/mR@50']:.1f}")
    assert row.split(" | ")[-1].strip(" |") == "1"  # grounded_1 has no final-weights numbers
    # the swap table: the final weights' swap (empty) against the final weights' own test
    swaps = text.split("### Study: test-time mask swap")[1]
    assert "(final checkpoint)" in swaps
    empty = swaps.split("| grounded (transferred) | mR@50 | ")[1].split("\n")[0].split(" | ")[5]
    d = own["baseline"]["predcls/mR@50"] - last["grounded"]["predcls/mR@50"]
    assert empty.startswith(f"{100 * d:.1f}")


def test_archive_keeps_what_the_tables_need_and_nothing_else(tmp_path: Path) -> None:
    """--archive copies configs, metrics, per-image counts, re-tests, CSV logs and timings (not checkpoints or
    pictures); the study's tables computed from the archive are the ones computed from the runs."""
    root = tmp_path / "study12"
    ids = np.arange(25)
    for v in ("baseline", "grounded"):
        for seed in (0, 1):
            job = root / f"{v}_s{seed}"
            rng = np.random.default_rng([seed, len(v)])
            _study_job(job, v, seed, _random_images(rng, 25, 0.0), ids)
            _study_job(tmp_path / "scratch", v, seed, _random_images(rng, 25, 0.0), ids)
            _final_weights_retest(job, tmp_path / "scratch")
            shutil.rmtree(tmp_path / "scratch")
            if v == "grounded":
                _retest(job, "empty", {"predcls/mR@50": 0.1 + seed}, checkpoint="last.ckpt")
            _write_csv_log(job / "csv" / "version_0" / "metrics.csv",
                           [{"step": s, "val/mR@50": 0.1 * s + seed} for s in (3, 9)])  # fmt: skip
            (job / "timing.json").write_text(json.dumps({"segments": [{"start": "2026-12-01T10:00:00",
                "updated": "2026-12-01T11:00:00", "seconds": 3600.0 + seed, "finished": True}]}))  # fmt: skip
            (job / "checkpoints").mkdir()
            (job / "checkpoints" / "last.ckpt").write_bytes(b"weights")
            (job / "val_predictions").mkdir()
            (job / "val_predictions" / "epoch0_0.png").write_bytes(b"png")
    dest = tmp_path / "archive"
    assert cr.main([str(root), "--archive", str(dest)]) == 0
    copied = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    job = "study12/grounded_s1"
    assert {f"{job}/.hydra/config.yaml", f"{job}/metrics.json", f"{job}/predcls_per_image.npz",
            f"{job}/evaluate/predcls-last/predcls_per_image.npz", f"{job}/evaluate/predcls-last/evaluation.json",
            f"{job}/evaluate/predcls-last-empty-masks/metrics.json", f"{job}/csv/version_0/metrics.csv",
            f"{job}/timing.json"} <= copied  # fmt: skip
    assert not any(p.endswith((".ckpt", ".png")) for p in copied)
    assert len([p for p in copied if p.endswith("/.hydra/config.yaml")]) == 4

    def tables(path: Path) -> list[str]:
        runs, tabs, failed = cr.collect([path], bootstrap=200, checkpoint="last")
        assert not failed and len(runs) == 4
        return [t.markdown() for t in tabs]

    original = tables(root)
    assert tables(dest / "study12") == original
    assert any("Study" in t or "study" in t for t in original)
    # again, after a new re-test in one run: the archive is updated in place, nothing duplicated
    _retest(root / "grounded_s0", "oracle", {"predcls/mR@50": 0.5}, checkpoint="last.ckpt")
    assert cr.archive_runs([root], dest) == [dest / "study12" / f"{v}_s{s}" for v in ("baseline", "grounded")
                                             for s in (0, 1)]  # fmt: skip
    assert (dest / "study12/grounded_s0/evaluate/predcls-last-oracle-masks/metrics.json").is_file()
    assert tables(dest / "study12") == tables(root)
    # an archived run given again, into its own archive (source = destination): left as it is, not an error
    archived = dest / "study12" / "grounded_s0"
    before = {f: f.read_bytes() for f in archived.rglob("*") if f.is_file()}
    assert cr.archive_runs([archived], dest / "study12") == [archived]
    assert {f: f.read_bytes() for f in archived.rglob("*") if f.is_file()} == before
    # two folders of the same name would mix in the archive
    (tmp_path / "other" / "study12").mkdir(parents=True)
    with pytest.raises(ValueError, match="same folder name"):
        cr.archive_runs([root, tmp_path / "other" / "study12"], dest)


def test_per_predicate_figure_and_table_share_the_mask_first_order(tmp_path: Path, monkeypatch) -> None:
    """The figure's bars come in the table's order: mask-decided predicates first, each group in dataset order."""
    from matplotlib.axes import Axes

    names = ["on", "has", "near", "wearing", "around"]
    assert cr.mask_decided_first(names) == [0, 2, 4, 1, 3]
    ids = np.arange(12)
    for v in ("baseline", "grounded"):
        _study_job(tmp_path / v, v, 0, _random_images(np.random.default_rng([7, len(v)]), 12, 0.0), ids)
    runs = {v: [cr.load_run(tmp_path / v)] for v in ("baseline", "grounded")}
    key = ("motif", "tiny", "predcls", "")
    table = cr.table_study_predicates(key, runs)
    seen, bars = {}, {}
    set_labels, bar = Axes.set_xticklabels, Axes.bar

    def record_labels(ax, labels, **kw):
        seen["labels"] = list(labels)
        return set_labels(ax, labels, **kw)

    def record_bar(ax, x, heights, *args, **kw):
        bars[kw["label"].split()[0]] = list(heights)
        return bar(ax, x, heights, *args, **kw)

    monkeypatch.setattr(Axes, "set_xticklabels", record_labels)
    monkeypatch.setattr(Axes, "bar", record_bar)
    assert cr.plot_study_predicates(key, runs, tmp_path / "f.png") is not None
    in_table = [row[0] for row in table.rows if row[1] in ("mask", "box")]
    assert seen["labels"] == in_table
    kinds = [row[1] for row in table.rows if row[1] in ("mask", "box")]
    assert kinds == sorted(kinds, key=lambda k: k != "mask") and "box" in kinds and "mask" in kinds
    baseline_column = [row[2].mean for row in table.rows if row[1] in ("mask", "box")]
    assert bars["baseline"] == pytest.approx([0.0 if m is None else m for m in baseline_column])


def _write_recorded(path: Path, lines: list[str]) -> Path:
    path.write_text("model,detector,task,row,seed,mR@50,note\n" + "".join(f"{x}\n" for x in lines))
    return path


def test_recorded_values_of_lost_runs_merge_into_the_over_seeds_table(tmp_path: Path) -> None:
    """Two runs on disk (baseline and grounded seed 2) + recorded values of seeds 0 and 1 (one recorded baseline
    also re-run on disk): the over-seeds table uses the recorded value where both exist, and its means, paired
    differences, t-interval and p are the ones worked out here by hand."""
    ids = np.arange(10)
    runs_dir = tmp_path / "runs"
    disk = {}
    for variant, seed in (("baseline", 1), ("baseline", 2), ("grounded", 2)):
        images = _random_images(np.random.default_rng([seed, 3 + len(variant)]), 10, 0.0)
        disk[(variant, seed)] = _study_job(runs_dir / f"{variant}_{seed}", variant, seed, images, ids)[
            "predcls/mR@50"
        ]
    csv_path = _write_recorded(tmp_path / "earlier.csv", [
        "motif,tiny,predcls,baseline,0,70.0,lost", "motif,tiny,predcls,baseline,1,71.0,lost",
        "motif,tiny,predcls,grounded,0,74.0,lost", "motif,tiny,predcls,grounded,1,72.5,lost",
        "motif,tiny,predcls,shuffled,0,75.0,lost",
    ])  # fmt: skip
    out = tmp_path / "tables"
    assert cr.main([str(runs_dir), "--out", str(out), "--bootstrap", "0", "--recorded", str(csv_path)]) == 0
    text = (out / "results.md").read_text()
    base = [0.700, 0.710, disk[("baseline", 2)]]  # seed 1: the recorded 71.0, not the re-run on disk
    grounded = [0.740, 0.725, disk[("grounded", 2)]]
    line = text.split("| baseline | 0* 1* 2 | 3 | ")[1].split("\n")[0].split(" | ")
    assert line[0] == f"{100 * np.mean(base):.1f} ± {cr.t_half_width(base):.1f}"
    diffs = np.array(grounded) - np.array(base)
    from scipy.stats import t as student_t

    mean, sd = diffs.mean(), diffs.std(ddof=1)
    half = student_t.ppf(0.975, 2) * sd / math.sqrt(3)
    p = 2 * student_t.sf(abs(mean / (sd / math.sqrt(3))), 2)
    line = text.split("| grounded | 0* 1* 2 | 3 | ")[1].split("\n")[0].split(" | ")
    assert line[1] == " / ".join(f"{s}: {100 * d:+.1f}" for s, d in enumerate(diffs))
    assert line[2] == f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    assert line[3] == f"{p:.3f}"
    assert line[4:] == ["—", "— |"]  # the grounded row has no 'vs grounded' comparison
    # one seed: its difference, no interval, no p; against grounded seed 0 (74.0): +1.0
    assert "| shuffled | 0* | 1 | 75.0 | 0: +5.0 | +5.0 | — | +1.0 | — |" in text
    # the re-run beside its recorded value
    rerun = 100 * disk[("baseline", 1)]
    assert f"| baseline | 1 | 71.00 | {rerun:.2f} | {rerun - 71.0:+.2f} |" in text
    # the run tables themselves still come from the runs alone
    assert "### Study: MOTIF PredCls (tiny)" in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("motif,tiny,predcls,groundd,0,74.0,x", "row 'groundd' is not a study row"),
        ("motif,tiny,predcls,grounded,zero,74.0,x", "seed must be an integer"),
        (
            "motif,tiny,predcls,grounded,0,0.74,x\nmotif,tiny,predcls,grounded,0,74.0,x",
            "seed 0 is listed twice",
        ),
        ("motif,tiny,predcls,grounded,0,740,x", "is not a percentage"),
    ],
)
def test_recorded_values_reject_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    path = _write_recorded(tmp_path / "bad.csv", [line])
    with pytest.raises(ValueError, match=message) as err:
        cr.load_recorded(path)
    assert "bad.csv, line" in str(err.value)
    (tmp_path / "nocol.csv").write_text("model,task,row,seed,mR@50\nmotif,predcls,baseline,0,70\n")
    with pytest.raises(ValueError, match="missing detector, note"):
        cr.load_recorded(tmp_path / "nocol.csv")


def test_study_keeps_runs_of_different_lengths_apart(tmp_path: Path) -> None:
    """Runs of one model, detector and task trained for 12 and for 24 epochs are two study groups (a seed's longer
    run is no extra seed, nor a partner of the shorter run), each named with its schedule; recorded values must
    then say which schedule they belong to."""
    ids = np.arange(100, 120)
    mr: dict = {}
    long = ("model.trainer.max_epochs=24", "model.optim.milestones=[8000]")
    for variant, seed, extra, skill in (
        ("baseline", 0, (), 0.1), ("grounded", 0, (), 0.4), ("baseline", 1, (), 0.2), ("grounded", 1, (), 0.6),
        ("baseline", 0, long, 0.3), ("grounded", 0, long, 1.5),
    ):  # fmt: skip
        images = _random_images(np.random.default_rng([seed, 3]), 20, 0.0)
        rng = np.random.default_rng([seed, len(extra), int(10 * skill)])
        for gt, p in images:
            for s, o, c in gt["relations"]:
                row = int(np.flatnonzero((p["rel_pairs"][:, 0] == s) & (p["rel_pairs"][:, 1] == o))[0])
                p["rel_scores"][row, c] += skill * rng.uniform()
        name = f"{variant}_{seed}{'_long' if extra else ''}"
        mr[name] = _study_job(tmp_path / name, variant, seed, images, ids, extra)["predcls/mR@50"]
    runs = [cr.load_run(p) for p in cr.find_job_dirs([tmp_path])]
    short, longer = "12 epochs; LR x0.1 at 4000", "24 epochs; LR x0.1 at 8000"
    assert {r.path.name: r.schedule for r in runs}["grounded_0_long"] == longer
    groups = cr.study_groups(runs)
    assert list(groups) == [("motif", "tiny", "predcls", short), ("motif", "tiny", "predcls", longer)]
    assert sorted(r.path.name for r in groups[("motif", "tiny", "predcls", short)]["grounded"]) == [
        "grounded_0",
        "grounded_1",
    ]
    # one length alone: the key carries no schedule, the names are the plain ones — also beside a detector run,
    # whose config holds a (never trained) stage-2 schedule of its own
    det = {"stage": "detector", "detector": {"backbone": {"name": "tiny"}}, "model": {"name": "motif"}}
    det["model"]["trainer"] = {"max_epochs": 2}
    _job(tmp_path / "det", det, [])
    (tmp_path / "det" / "detector").mkdir()
    (tmp_path / "det" / "detector" / "detector_metrics.json").write_text(json.dumps({"val/vg_map50": 0.5}))
    short_runs = [cr.load_run(p) for p in cr.find_job_dirs([tmp_path]) if not p.name.endswith("_long")]
    assert len(short_runs) == 5 and cr.load_run(tmp_path / "det").schedule == "2 epochs"
    assert list(cr.study_groups(short_runs)) == [("motif", "tiny", "predcls", "")]
    assert set(cr.detector_labels(short_runs).values()) == {"tiny"}
    tables = {t.name: t for t in cr.tables_study(runs, 0)}
    table = tables["study_motif_predcls_tiny_12ep_lrx0.1_at4000"]
    assert table.title == f"Study: MOTIF PredCls (tiny, {short})"
    grounded = next(row for row in table.rows if row[0] == "grounded")
    assert str(grounded[2]) == str(cr.IntervalCell([mr["grounded_0"], mr["grounded_1"]]))
    assert grounded[-1] == 2
    longest = next(
        row for row in tables["study_motif_predcls_tiny_24ep_lrx0.1_at8000"].rows if row[0] == "grounded"
    )
    assert str(longest[2]) == f"{100 * mr['grounded_0_long']:.1f}" and longest[-1] == 1
    # recorded values without a schedule are ambiguous here; with the column they join their group
    plain = _write_recorded(tmp_path / "rec.csv", ["motif,tiny,predcls,baseline,2,70.0,x"])
    with pytest.raises(ValueError, match="name no schedule.*add a 'schedule' column"):
        cr.tables_study(runs, 0, cr.load_recorded(plain))
    named = tmp_path / "named.csv"
    named.write_text(
        f"model,detector,task,row,seed,mR@50,note,schedule\nmotif,tiny,predcls,baseline,2,70.0,x,{short}\n"
    )
    typo = tmp_path / "typo.csv"
    typo.write_text(
        "model,detector,task,row,seed,mR@50,note,schedule\nmotif,tiny,predcls,baseline,2,70.0,x,12 epochs\n"
    )
    with pytest.raises(ValueError, match="name the schedule '12 epochs', which none of the runs"):
        cr.tables_study(runs, 0, cr.load_recorded(typo))
    over = {t.name: t for t in cr.tables_study(runs, 0, cr.load_recorded(named))}
    baseline = next(
        row
        for row in over["study_over_seeds_motif_predcls_tiny_12ep_lrx0.1_at4000"].rows
        if row[0] == "baseline"
    )
    assert baseline[1] == "0 1 2*" and baseline[2] == 3
    assert "study_over_seeds_motif_predcls_tiny_24ep_lrx0.1_at8000" not in over
    # one figure overlays the two schedules' validation curves (a line style per schedule)
    for name, last in (("grounded_0", 5100), ("grounded_0_long", 10200)):
        (tmp_path / name / "csv" / "version_0").mkdir(parents=True)
        lines = [f"{step},{0.3 + step / 40000}" for step in range(425, last + 1, 425)]
        (tmp_path / name / "csv" / "version_0" / "metrics.csv").write_text(
            "step,val/mR@50\n" + "\n".join(lines)
        )
    figures = {p.name for p in cr.study_figures(runs, tmp_path / "figs")}
    assert figures == {
        "study_curves_motif_predcls_tiny_12ep_lrx0.1_at4000.png",
        "study_curves_motif_predcls_tiny_24ep_lrx0.1_at8000.png",
        "study_curves_schedules_motif_predcls_tiny.png",
        "study_per_predicate_motif_predcls_tiny_12ep_lrx0.1_at4000.png",
        "study_per_predicate_motif_predcls_tiny_24ep_lrx0.1_at8000.png",
    }
    assert (tmp_path / "figs" / "study_curves_schedules_motif_predcls_tiny.png").stat().st_size > 5000
    # nor does the job-time table: one line per schedule and row
    for name, seconds in (("grounded_0", 3600.0), ("grounded_1", 3000.0), ("grounded_0_long", 7200.0)):
        seg = {"start": "2026-12-04T10:00:00", "updated": "2026-12-04T11:00:00", "seconds": seconds}
        (tmp_path / name / "timing.json").write_text(json.dumps({"segments": [{**seg, "finished": True}]}))
    times = {row[0]: row[1:4] for row in cr.table_job_time(runs).rows}
    assert times[f"study MOTIF PredCls ({short}): grounded"] == [2, "0:55", "1:50"]
    assert times[f"study MOTIF PredCls ({longer}): grounded"] == [1, "2:00", "2:00"]
    # Table 1 does not average the two lengths either: the detector cell names the schedule
    table1 = cr.table_recall(runs, "mR", (50,), "t", "t")
    cells = {(row[1], row[2]): str(row[3]) for row in table1.rows}
    long_cell = cells[(f"tiny, {longer}", "seg-grounded")]
    assert long_cell == f"{100 * mr['grounded_0_long']:.1f}"
    assert cells[(f"tiny, {short}", "seg-grounded")] == str(cr.Cell([mr["grounded_0"], mr["grounded_1"]]))


def test_study_keeps_bf16_runs_apart(tmp_path: Path) -> None:
    """A run trained with ``cpu_bf16_convs=true`` (or a mixed-precision trainer) is another arithmetic: its own
    study group, named so in titles and file names, not one more seed of the float32 rows."""
    ids = np.arange(100, 110)
    for name, variant, extra in (
        ("b0", "baseline", ()), ("g0", "grounded", ()), ("b0_bf16", "baseline", ("cpu_bf16_convs=true",)),
        ("g0_bf16", "grounded", ("cpu_bf16_convs=true",)), ("g0_mixed", "grounded", ("trainer.precision=bf16-mixed",)),
    ):  # fmt: skip
        _study_job(tmp_path / name, variant, 0, _random_images(np.random.default_rng(5), 10, 0.0), ids, extra)
    runs = {r.path.name: r for r in (cr.load_run(p) for p in cr.find_job_dirs([tmp_path]))}
    short = "12 epochs; LR x0.1 at 4000"
    assert runs["g0"].schedule == short and runs["g0_bf16"].schedule == f"{short}; bf16 convs"
    assert runs["g0_mixed"].schedule == f"{short}; bf16-mixed"
    groups = cr.study_groups(list(runs.values()))
    key = ("motif", "tiny", "predcls", f"{short}; bf16 convs")
    assert len(groups) == 3 and [r.path.name for r in groups[key]["grounded"]] == ["g0_bf16"]
    assert [r.path.name for r in groups[key]["baseline"]] == ["b0_bf16"]
    names = {t.name for t in cr.tables_study(list(runs.values()), 0)}
    assert "study_motif_predcls_tiny_12ep_lrx0.1_at4000_bf16convs" in names
    assert "study_motif_predcls_tiny_12ep_lrx0.1_at4000_bf16-mixed" in names


def test_over_seeds_table_compares_the_mask_rows_with_grounded_by_hand(tmp_path: Path) -> None:
    """'Δ vs grounded (t)' and its p: the oracle row's per-seed differences from the grounded row of the same seed
    (seeds 0 and 1 only; seed 2 has no grounded partner), worked out by hand."""
    from scipy.stats import t as student_t

    csv_path = _write_recorded(tmp_path / "earlier.csv", [
        "motif,tiny,predcls,baseline,0,70.0,x", "motif,tiny,predcls,baseline,1,71.0,x",
        "motif,tiny,predcls,baseline,2,72.0,x",
        "motif,tiny,predcls,grounded,0,74.0,x", "motif,tiny,predcls,grounded,1,72.5,x",
        "motif,tiny,predcls,oracle,0,73.0,x", "motif,tiny,predcls,oracle,1,73.5,x",
        "motif,tiny,predcls,oracle,2,71.0,x",
    ])  # fmt: skip
    key = ("motif", "tiny", "predcls", "")
    table = cr.table_study_over_seeds(key, {}, cr.load_recorded(csv_path)[key], "last")[0]
    oracle = next(row for row in table.rows if row[0] == "oracle")
    diffs = np.array([0.730 - 0.740, 0.735 - 0.725])  # -1.0, +1.0 points
    mean, sd = diffs.mean(), diffs.std(ddof=1)
    half = student_t.ppf(0.975, 1) * sd / math.sqrt(2)
    assert oracle[7] == f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    assert oracle[7] == "+0.0 [-12.7, +12.7]"
    assert oracle[8] == "1.000"  # mean difference 0 → p = 1
    assert oracle[5].startswith("+1.5 [")  # vs baseline: 3.0, 2.5, -1.0 over all three seeds


ARCHIVE = Path(__file__).resolve().parents[1] / "docs" / "runs"


def _readme_cells(line: str) -> list[str]:
    """The cells of a markdown table line, as the README writes them and the tables print them (bold and the
    typographic minus aside)."""
    return [c.strip().replace("**", "").replace("−", "-") for c in line.strip().strip("|").split("|")]


def _row_cells(table) -> dict[str, list[str]]:
    """Row name → the other cells of a :class:`sgseg.results.Table`, as :func:`_readme_cells` reads them."""
    return {row[0]: _readme_cells("| " + " | ".join(str(c) for c in row[1:]) + " |") for row in table.rows}


@functools.cache
def _archived_runs(pattern: str) -> tuple:
    """The archived runs of ``docs/runs/<pattern>`` (one or more globs), read with ``--checkpoint last`` — once per
    pattern for the README tests that share it."""
    paths = sorted(p for one in pattern.split() for p in ARCHIVE.glob(one))
    runs = tuple(cr.load_run(path, "last") for path in cr.find_job_dirs(paths))
    assert runs, pattern
    return runs


@functools.cache
def _archived_summary(pattern: str, table: str):
    """The study summary table named ``table*`` that ``sgseg.results docs/runs/<pattern> --checkpoint last``
    computes (bootstrap 1000; computed once per pattern for the README tests that repeat it)."""
    runs = list(_archived_runs(pattern))
    (summary,) = [t for t in cr.tables_study(runs, 1000, None, "last") if t.name.startswith(table)]
    return summary


def _readme_table_lines(marker: str, block: int = 1) -> list[str]:
    """The table lines (header first, the ``| ---`` line left out) of the ``block``-th paragraph after ``marker`` in
    the README."""
    part = (ARCHIVE.parents[1] / "README.md").read_text().split(marker)[1].split("\n\n")[block]
    return [line for line in part.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def test_readme_over_seeds_table_is_what_the_archive_gives() -> None:
    """The README's headline study table (*Where the study stands*) is what ``sgseg.results docs/runs/study12
    --recorded docs/runs/study12/earlier_seeds.csv --checkpoint last`` computes from the files in this repository:
    every cell from the seeds column on, row by row (the README's labels and bold aside)."""
    root = Path(__file__).resolve().parents[1]
    archive = root / "docs" / "runs" / "study12"
    runs = [cr.load_run(path, "last") for path in cr.find_job_dirs([archive])]
    key = ("motif", "tiny", "predcls", "")  # one schedule among the runs: the key names none
    recorded = cr.load_recorded(archive / "earlier_seeds.csv")[(*key[:3], "12 epochs; LR x0.1 at 4000")]
    table = cr.table_study_over_seeds(key, cr.study_groups(runs)[key], recorded, "last")[0]
    (same,) = [t for t in cr.tables_study(runs, 0, cr.load_recorded(archive / "earlier_seeds.csv"), "last")
               if t.name == "study_over_seeds_motif_predcls_tiny"]  # fmt: skip
    assert same.rows == table.rows
    cells = _readme_cells
    rows = [line for line in table.markdown().splitlines() if line.startswith("| ")][1:]  # no header
    generated = {cells(line)[0]: cells(line)[1:] for line in rows if not line.startswith("| ---")}
    readme = (root / "README.md").read_text()
    section = readme.split("**Where the study stands**")[1].split("| Row | seed | recorded")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and "(t)" not in line]
    found = {cells(line)[0].split(" (")[0]: cells(line)[1:] for line in lines if not line.startswith("| ---")}
    assert set(found) == set(generated) == {"baseline", "grounded", "oracle", "oracle_amodal", "shuffled"}
    for variant, row in generated.items():
        assert found[variant] == row, variant


@pytest.mark.parametrize(
    "section, pattern, table, rows",
    [
        (
            "**VCTree PredCls at the study's schedule",
            "study12/vctree_*",
            "summary_study_vctree_predcls",
            ("empty",),
        ),
        (
            "**MOTIF SGCls at the study's schedule",
            "study12/sgcls_motif_*",
            "summary_study_motif_sgcls",
            ("empty",),
        ),
        ("**MOTIF SGCls on a doubled schedule", "study24/sgcls_motif_*", "summary_study_motif_sgcls", ()),
        (
            "**VCTree SGCls at the study's schedule",
            "study12/sgcls_vctree_*",
            "summary_study_vctree_sgcls",
            ("empty",),
        ),
        (
            "**MOTIF SGCls with bf16 convolutions",
            "study12_bf16/sgcls_motif_*",
            "summary_study_motif_sgcls",
            (),
        ),
        (
            "**MOTIF SGDet at the study's schedule",
            "study12/sgdet_motif_*",
            "summary_study_motif_sgdet",
            (),
        ),
        (
            "**Transformer PredCls at the study's schedule",
            "study12/predcls_transformer_*",
            "summary_study_transformer_predcls",
            (),
        ),
        (
            "**Table 4 analogue at the study's schedule",
            "study12/sgcls_vctree_* table4_12ep/sgcls_vctree_*",
            "summary_study_vctree_sgcls",
            ("node", "edge_avg", "edge_union", "edge_gaussian", "empty"),
        ),
    ],
)
def test_readme_summary_tables_are_what_the_archive_gives(
    section: str, pattern: str, table: str, rows: tuple[str, ...]
) -> None:
    """The README's VCTree PredCls and MOTIF SGCls study tables are the summary tables
    (:func:`sgseg.results.table_study_summary`) that ``sgseg.results docs/runs/<pattern> --checkpoint last``
    computes from the archived runs, cell for cell from the seeds column on (the README's labels, bold and minus
    signs aside)."""
    summary = _archived_summary(pattern, table)
    cells = _readme_cells
    generated = _row_cells(summary)
    lines = _readme_table_lines(section)
    assert cells(lines[0])[1:] == summary.header[1:-1] + ["all-zero masks at test"]
    found = {cells(line)[0].split(" (")[0]: cells(line)[1:] for line in lines[1:]}
    assert set(found) == set(generated) == {"baseline", "grounded", *rows}
    for variant, row in generated.items():
        assert found[variant] == row, variant


def test_readme_table4_steps_are_what_the_archive_gives() -> None:
    """The README's *Table 4 step by step* table (VCTree SGCls at the study's schedule) is
    :func:`sgseg.results.table_study_steps` of the archived study and Table-4 runs, cell for cell (the typographic
    minus aside), with the node, Gaussian-edge and refinement steps at least."""
    runs = list(_archived_runs("study12/sgcls_vctree_* table4_12ep/sgcls_vctree_*"))
    key = ("vctree", "tiny", "sgcls", "")
    table = cr.table_study_steps(key, cr.study_groups(runs)[key])
    lines = _readme_table_lines("Step by step (the *Table 4 step by step* table")
    assert _readme_cells(lines[0]) == table.header
    found = {
        line.split("|")[1].strip(): _readme_cells(line)[1:] for line in lines[1:]
    }  # names keep their "−"
    assert found == _row_cells(table)
    assert {"node − baseline", "edge_gaussian − node", "grounded − edge_gaussian"} <= set(found)


def test_readme_object_accuracy_table_is_what_the_archive_gives() -> None:
    """The README's VCTree SGCls object-accuracy table is the object table (:func:`sgseg.results.table_study_objects`)
    of ``sgseg.results docs/runs/study12/sgcls_vctree_* --checkpoint last``, cell for cell from the seeds column to
    the last column, with the control row (``row=empty``) paired with the grounded runs of its seeds."""
    runs = list(_archived_runs("study12/sgcls_vctree_*"))
    key = ("vctree", "tiny", "sgcls", "")
    table = cr.table_study_objects(key, cr.study_groups(runs)[key])
    lines = _readme_table_lines("**Object labels in SGCls (VCTree")
    assert _readme_cells(lines[0])[1:] == table.header[1:]
    found = {_readme_cells(line)[0].split(" (")[0]: _readme_cells(line)[1:] for line in lines[1:]}
    assert found == _row_cells(table) and set(found) == {"baseline", "grounded", "empty"}
    # the recall split: the relations-with-both-objects table and the mR@50-given-them table side by side
    # (each: its measure, Δ vs baseline, p, Δ vs grounded)
    split = cr.tables_study_objects(key, cr.study_groups(runs)[key])[1:]
    assert [t.header[2] for t in split] == [
        "relations with both objects labelled (rel_objects_ok)",
        "mR@50 given both objects (mR@50_given_objects)",
    ]
    lines = _readme_table_lines("**Object labels in SGCls (VCTree", 2)
    assert _readme_cells(lines[0])[1:] == [
        split[0].header[1],
        *(t.header[i] for t in split for i in (2, 4, 5, 6)),
    ]
    found = {_readme_cells(line)[0].split(" (")[0]: _readme_cells(line)[1:] for line in lines[1:]}
    cells = [_row_cells(t) for t in split]
    generated = {v: [cells[0][v][0], *(t[v][i] for t in cells for i in (1, 3, 4, 5))] for v in cells[0]}
    assert found == generated and set(found) == {"baseline", "grounded", "empty"}


def test_study_notes_which_detector_each_seed_used(tmp_path: Path) -> None:
    """detector_source.json (written by stage 2) names each run's frozen detector: the study tables say which
    seeds ran on which file, flag a seed whose rows ran on different files, and runs.csv carries the id."""
    ids = np.arange(20)
    sources = {  # (variant, seed) → detector file content hash, None: not recorded (runs from before the file)
        ("baseline", 3): "a" * 64, ("grounded", 3): "b" * 64,
        ("baseline", 2): "a" * 64, ("grounded", 2): "a" * 64,
    }  # fmt: skip
    for v in ("baseline", "grounded"):
        for seed in (0, 1, 2, 3):
            job = tmp_path / "runs" / f"{v}_s{seed}"
            _study_job(job, v, seed, _random_images(np.random.default_rng([seed, len(v)]), 20, 0.5), ids)
            if (v, seed) in sources:
                metrics = {"val/vg_map50": 0.8261} if sources[(v, seed)][0] == "a" else None
                (job / "detector_source.json").write_text(json.dumps(
                    {"checkpoint": "/x/detector.pt", "sha256": sources[(v, seed)], "metrics": metrics}))  # fmt: skip
    runs, tables, _ = cr.collect([tmp_path / "runs"], bootstrap=50)
    by_name = {t.name: t for t in tables}
    study = by_name["study_motif_predcls_tiny"]
    expected = ("Frozen detectors (first digits of detector.pt's SHA-256, detector_source.json): detector aaaaaaaa "
                "(VG mAP@50 82.6): seeds 2, 3; detector bbbbbbbb: seed 3; not recorded: seeds 0, 1. Seed 3 has rows "
                "on different detectors: its differences are not paired on one detector.")  # fmt: skip
    assert study.note.endswith(expected)
    assert by_name["summary_study_motif_predcls_tiny"].note.endswith(expected)
    seeds = [row[1] for row in by_name["study_bootstrap_motif_predcls_tiny"].rows]
    assert seeds[:4] == [0, 1, 2, "3 (detectors differ)"]  # seed 2: one detector for both rows, no flag
    assert {r.path.name: r.detector_id for r in runs}["grounded_s3"] == "bbbbbbbb"
    table = cr.runs_table(runs)
    col = table.header.index("detector file")
    assert sorted(str(row[col]) for row in table.rows) == [""] * 4 + ["aaaaaaaa"] * 3 + ["bbbbbbbb"]
    # runs without the file: no note at all (the archived studies from before it read as they did)
    for job in (tmp_path / "runs").iterdir():
        (job / "detector_source.json").unlink(missing_ok=True)
    _, tables, _ = cr.collect([tmp_path / "runs"], bootstrap=50)
    assert "Frozen detectors" not in next(t for t in tables if t.name == "study_motif_predcls_tiny").note


def test_detector_table_lists_each_stage1_run_and_which_runs_froze_it(tmp_path: Path) -> None:
    """Two stage-1 runs of one backbone are two files: each gets its own row (its weights' id, how many given
    stage-2 runs froze it, its own metrics), then their mean ± std; a run without kept weights shows "—"."""
    import hashlib

    for name, vg, weights in (("det_a", 0.8436, None), ("det_b", 0.8261, b"weights b" * 1000)):
        job = tmp_path / "runs" / name
        _job(
            job,
            {"stage": "detector", "seed": 0, "detector": {"backbone": {"name": "tiny"}, "joint": True}},
            [],
        )
        (job / "detector").mkdir()
        metrics = {"val/vg_map50": vg, "val/coco_box_ap": 0.60, "val/coco_mask_ap": 0.50}
        (job / "detector" / "detector_metrics.json").write_text(json.dumps(metrics))
        if weights is not None:
            (job / "detector" / "detector.pt").write_bytes(weights)
    digest = hashlib.sha256(b"weights b" * 1000).hexdigest()
    for i, sha in enumerate((digest, digest, "c" * 64)):  # two stage-2 runs froze det_b, one another file
        job = tmp_path / "runs" / f"sg_{i}"
        _job(job, _config("motif", "none", "none", False, True, seed=i, backbone="tiny"), [])
        (job / "detector_source.json").write_text(json.dumps({"sha256": sha}))
    runs = [cr.load_run(p) for p in sorted((tmp_path / "runs").iterdir())]
    table = cr.table_detectors(runs)
    rows = [[str(c) for c in row] for row in table.rows]
    assert rows == [
        ["tiny", "VG + COCO", "det_a", "—", "—", "84.4", "60.0", "50.0"],
        ["tiny", "VG + COCO", "det_b", digest[:8], "2 runs", "82.6", "60.0", "50.0"],
        ["tiny", "VG + COCO", "mean of 2", "", "", f"{100 * (0.8436 + 0.8261) / 2:.1f} ± 1.2", "60.0 ± 0.0",
         "50.0 ± 0.0"],
    ]  # fmt: skip
    assert math.isclose(table.rows[2][5].std, 100 * abs(0.8436 - 0.8261) / math.sqrt(2))


def test_readme_at_a_glance_table_is_what_the_archive_gives() -> None:
    """The README's *At a glance* table (top of *Results*) repeats the study tables: per model and task the seeds,
    both rows' mR@50, the paired Δ over seeds with its interval and p — from the archived runs (MOTIF PredCls with
    the recorded values of its lost runs), or for a single seed pair the bootstrap interval over test images."""
    cells = _readme_cells
    found = {cells(line)[0]: cells(line)[1:] for line in _readme_table_lines("**At a glance")[1:]}
    # MOTIF PredCls: 5 seeds only with the lost runs' recorded values
    key = ("motif", "tiny", "predcls", "")
    runs = list(_archived_runs("study12/[jr]*_s[0-9]"))
    recorded = cr.load_recorded(ARCHIVE / "study12" / "earlier_seeds.csv")[
        (*key[:3], "12 epochs; LR x0.1 at 4000")
    ]
    (table, *_) = cr.table_study_over_seeds(key, cr.study_groups(runs)[key], recorded, "last")
    b, g = _row_cells(table)["baseline"], _row_cells(table)["grounded"]
    expected = {"MOTIF PredCls": [g[1], b[2], g[2], g[4], g[5]]}
    for label, pattern, name in (
        ("VCTree PredCls", "study12/vctree_*", "summary_study_vctree_predcls"),
        ("MOTIF SGCls", "study12/sgcls_motif_*", "summary_study_motif_sgcls"),
        ("VCTree SGCls", "study12/sgcls_vctree_*", "summary_study_vctree_sgcls"),
        ("MOTIF SGDet", "study12/sgdet_motif_*", "summary_study_motif_sgdet"),
        ("Transformer PredCls", "study12/predcls_transformer_*", "summary_study_transformer_predcls"),
    ):
        rows = _row_cells(_archived_summary(pattern, name))
        b, g = rows["baseline"], rows["grounded"]
        seeds = g[0] if b[0] == g[0] else f"{g[0]} (baseline {b[0]})"
        if g[0] == "1":  # one seed pair: the bootstrap interval of its difference
            delta = g[4].split(": ", 1)[1] + " (bootstrap over test images)"
            expected[label] = [seeds, b[1], g[1], delta, "—"]
        else:  # the paired difference over the seeds both rows have
            expected[label] = [seeds, b[1], g[1], g[5], g[6]]
    assert found == expected


def test_val_and_partial_relation_retests_are_not_study_tests(tmp_path: Path) -> None:
    """``sgseg.evaluate split=val`` / ``relations=seen|zeroshot`` re-tests of the final weights run on the run's own
    masks and settings, and their folders sort before or after the plain one — neither may stand in for the
    final-weights test nor show up as a swap."""
    ids = np.arange(20)
    job = tmp_path / "grounded_0"
    _study_job(job, "grounded", 0, _random_images(np.random.default_rng([0, 3]), 20, 0.0), ids)
    info = {"task": "predcls", "mask_source": "transfer", "trained_mask_source": "transfer", "refine_passes": None,
            "checkpoint": str(job / "checkpoints" / "last.ckpt"), "run_dir": str(job), "require_overlap": None}  # fmt: skip
    for name, extra in {"predcls-last-seen-relations": {"split": "test", "relations": "seen"},
                        "predcls-last-val": {"split": "val", "relations": "all"}}.items():  # fmt: skip
        out = job / "evaluate" / name
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"predcls/mR@50": 0.99}))
        (out / "evaluation.json").write_text(json.dumps(info | extra))
    run = cr.load_run(job, "best")
    assert cr._final_weights_test(run) is None and run.retests("predcls") == {}
    plain = job / "evaluate" / "predcls-last"
    plain.mkdir()
    (plain / "metrics.json").write_text(json.dumps({"predcls/mR@50": 0.5}))
    (plain / "evaluation.json").write_text(json.dumps(info | {"split": "test", "relations": "all"}))
    assert cr._final_weights_test(cr.load_run(job, "best")) == plain
    assert cr.load_run(job, "last").value("predcls", "mR@50") == 0.5
