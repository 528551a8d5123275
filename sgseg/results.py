"""Result tables in the paper's layout, and the synthetic lab study's statistics, from sgseg run directories.

    python -m sgseg.results RUN_OR_SWEEP_DIR... [--out DIR] [--bootstrap 1000]
    python -m sgseg.results RUN_OR_SWEEP_DIR... --archive DEST   # keep the runs' small files, e.g. in git
    python -m sgseg.results RUN_OR_SWEEP_DIR... --recorded CSV  # + per-seed values of study runs that are gone

Where this sits: after training. Each argument is a run directory (``python -m sgseg.train``), a Hydra
multirun directory (its job subdirectories are found here) or any folder above them. A run is read from
``metrics.json`` (flat keys ``<task>/mR@50`` …, fractions), ``<task>_per_image.npz`` (per test image, the GT
and hit counts behind R@K / mR@K), ``.hydra/config.yaml`` and ``.hydra/overrides.yaml`` (model, task,
grounding, mask source, detector, ablation row, seed) and ``detector/detector_metrics.json`` (stage 1);
``FAILED.txt`` marks a sweep job that failed. Printed and written to ``DIR/results.md`` plus one CSV per table:

- Table 1: mR@20/50/100 per task, baseline vs. seg-grounded, per model and detector,
- Table 2: COCO val mask AP of the transferred masks without and with refinement,
- Table 3: zsR@20/100 per task, baseline vs. seg-grounded,
- Table 4: the ablation rows (``row=``/``ablation_row``) as mean ± std over seeds of mR@20/50/100,
- the study (``sweep=study``): per (model, task) the rows baseline / grounded / oracle / oracle_amodal / shuffled /
  empty (mask source ``model.mask_source``; oracle_amodal: the oracle on an amodal ``data.true_masks`` file; empty:
  the control, trained and tested on all-zero masks, ``row=empty``) and Table 4's partial rows trained at the
  study's schedule (``row=node|edge_avg|edge_union|edge_gaussian``: node grounding on the transferred masks without
  refinement) as mean ± 95 % t-interval over seeds, their per-predicate R@50, and the paired
  bootstrap over test images of each grounded row − baseline (same model, task, seed; and of every other row but
  the baseline − grounded) for mR@50 and R@50;
  in SGCls / SGDet also how well each row labels the objects (``obj_acc`` / ``obj_recall``, where its test reports
  it) and the recall split (``rel_objects_ok``, ``mR@50_given_objects``), a table per measure; with
  ``--recorded``, an over-seeds table that merges recorded per-seed mR@50 of lost runs with the runs;
  a per-predicate R@50 figure (``study_per_predicate_*.png``) and the rows' validation curves
  (``study_curves_*.png``, from the CSV logger's ``csv/version_*/metrics.csv``),
- the stage-1 detectors (VG mAP@50, COCO box / mask AP),
- the training wall time per study row / experiment and in all (``timing.json`` of each stage, written by
  :class:`sgseg.lit.clock.RunClock`; Hydra's ``train.log`` for older runs), and the failed or unfinished runs.

Numbers are percentages; a cell of Tables 1-4 averages the runs (seeds) that share its row, "a ± s" with the
sample standard deviation (n - 1) when there are several; "—" when no run has the value (missing, NaN, or never
run). "Baseline" = no node/edge grounding, no refinement, not on the joint detector; "seg-grounded" = node
grounding, Gaussian edge grounding and refinement. Other configurations show up in Table 4 and in runs.csv only.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import re
import shutil
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sgseg.evaluation.scene_graph import recall_from_per_image

TASKS = ("predcls", "sgcls", "sgdet")
TASK_NAMES = {"predcls": "PredCls", "sgcls": "SGCls", "sgdet": "SGDet"}
MODEL_NAMES = {
    "motif": "MOTIF",
    "vctree": "VCTree",
    "transformer": "Transformer",
}  # display names; others as named
KS = (20, 50, 100)
ROWS = ("base", "joint", "node", "edge_avg", "edge_union", "edge_gaussian", "refine")
ROW_LABELS = {
    "base": "base",
    "joint": "joint detector",
    "node": "+ node grounding",
    "edge_avg": "+ edge avg",
    "edge_union": "+ edge union",
    "edge_gaussian": "+ edge Gaussian",
    "refine": "+ refinement (final)",
}
VARIANTS = ("baseline", "seg-grounded")
MISSING = "—"
# the lab study's rows (model.mask_source of the seg-grounded model → row name), baseline first
STUDY_SOURCES = {
    "transfer": "grounded",
    "oracle": "oracle",
    "oracle_amodal": "oracle_amodal",
    "shuffled": "shuffled",
    "empty": "empty",
}
# Table 4's partial rows trained at the study's schedule (``row=node|edge_avg|edge_union|edge_gaussian``): node
# grounding on the transferred masks, without refinement, and no / one edge grounding (model.grounding.edge → row)
ABLATION_STUDY_ROWS = {"none": "node", "avg": "edge_avg", "union": "edge_union", "gaussian": "edge_gaussian"}
STUDY_ROWS = (
    "baseline",
    *ABLATION_STUDY_ROWS.values(),
    "grounded",
    "oracle",
    "oracle_amodal",
    "shuffled",
    "empty",
)
# the rows also set against the grounded one (Δ vs grounded): every row but the baseline and grounded itself
VS_GROUNDED = tuple(v for v in STUDY_ROWS if v not in ("baseline", "grounded"))
# the oracle on the objects' amodal masks (data.true_masks names an *amodal* file, e.g. the synthetic benchmark's
# vg_{split}_amodal_masks.json) rather than the visible ones
AMODAL_ORACLE = "oracle_amodal"
# the control (``row=empty``): the seg-grounded model trained and tested on all-zero masks, the grounded
# architecture without any shape information
CONTROL = "empty"
# rows listed in the study table only when run (the four main rows show "—" when missing)
OPTIONAL_ROWS = (*ABLATION_STUDY_ROWS.values(), AMODAL_ORACLE, CONTROL)
# the figures' legend names of rows whose table name says too little
LEGEND_NAMES = {
    CONTROL: "empty (all-zero masks)",
    "node": "node grounding only",
    "edge_avg": "node + avg edges",
    "edge_union": "node + union edges",
    "edge_gaussian": "node + Gaussian edges, no refinement",
}
# the figures' colour of each study row
ROW_COLORS = {"baseline": "#8C8C8C", "node": "#CCB974", "edge_avg": "#64B5CD", "edge_union": "#937860",
              "edge_gaussian": "#DA8BC3", "grounded": "#4C72B0", "oracle": "#55A868", AMODAL_ORACLE: "#8172B2",
              "shuffled": "#C44E52", CONTROL: "#DD8452"}  # fmt: skip
STUDY_K = 50
# the test-time mask swaps of sgseg.evaluate (mask_source=...), and the masks each study row trained on
SWAP_SOURCES = ("transfer", "oracle", "oracle_amodal", "shuffled", "empty")
SWAP_NAMES = {"transfer": "transferred", "oracle": "true", "oracle_amodal": "true amodal", "shuffled": "shuffled",
              "empty": "empty",
              "unrefined": "own, unrefined"}  # fmt: skip
UNREFINED = "unrefined"  # the swap-table column of the re-tests with refine_passes=0 on the run's own masks
TRAINED_SOURCE = {
    **{row: "transfer" for row in ABLATION_STUDY_ROWS.values()},
    "grounded": "transfer",
    "oracle": "oracle",
    AMODAL_ORACLE: AMODAL_ORACLE,
    "shuffled": "shuffled",
    CONTROL: "empty",
}
# synthetic predicates decided by the pixels (holes, contact, partial cover, surrounding) rather than the boxes
MASK_PREDICATES = frozenset({"in hole of", "on", "touching", "near", "partly covering", "around"})


# ------------------------------------------------------------------------------------------------ reading
def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())  # Python's json reads NaN / Infinity as written by json.dumps
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parse_overrides(lines: Any) -> dict[str, Any]:
    """``['row=base', '+seed=1', 'model.refine=false']`` → ``{'row': 'base', 'seed': 1, 'model.refine': False}``."""
    out: dict[str, Any] = {}
    for line in lines if isinstance(lines, list) else []:
        line = str(line)
        if line.startswith("~") or "=" not in line:
            continue
        key, value = line.lstrip("+").split("=", 1)
        try:
            out[key] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def _select(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, str) and ("${" in node or node == "???"):
        return None  # an unresolved interpolation or a missing value says nothing here
    return node


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@dataclass
class Run:
    """One job directory and what the tables need from it."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    detector_metrics: dict[str, Any] = field(default_factory=dict)
    # the frozen detector a stage-2 run trained on (``detector_source.json``: path, SHA-256, its metrics)
    detector_source: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    # the config-group options the job was composed with (.hydra/hydra.yaml hydra.runtime.choices)
    choices: dict[str, Any] = field(default_factory=dict)
    # which weights the tables read: "best" (the run's own test) or "last" (its ``sgseg.evaluate ckpt=last``
    # re-test, whose folder is ``test_dir``)
    checkpoint: str = "best"
    test_dir: Path | None = None

    def get(self, dotted: str, override_key: str | None = None) -> Any:
        """A config value: the job's command-line override first, then ``.hydra/config.yaml``."""
        for key in (dotted, override_key):
            if key is not None and key in self.overrides:
                return self.overrides[key]
        return _select(self.config, dotted)

    @property
    def model(self) -> str | None:
        value = self.get("model.name", "model")
        return str(value) if value is not None else None

    @property
    def detector(self) -> str | None:
        value = self.get("detector.backbone.name")
        return str(value) if value is not None else None

    @property
    def detector_id(self) -> str | None:
        """The first 8 hex digits of the frozen detector file's SHA-256 (None: not recorded — runs from before
        ``detector_source.json``)."""
        digest = self.detector_source.get("sha256")
        return str(digest)[:8] if digest else None

    @property
    def node(self) -> str | None:
        return self.choice("model/grounding/node", "model.grounding.node")

    @property
    def edge(self) -> str | None:
        return self.choice("model/grounding/edge", "model.grounding.edge")

    @property
    def refine(self) -> bool | None:
        value = self.choice("model/refine", "model.refine")
        return {"on": True, "off": False}.get(str(value), _as_bool(value))

    def choice(self, group: str, dotted: str) -> str | None:
        """A config-group option (``model/grounding/edge=none``): the job's override, else the option it was
        composed with; runs from before the config groups: the string value at ``dotted``."""
        for source in (self.overrides, self.choices):
            if source.get(group) is not None:
                return str(source[group])
        value = self.get(dotted)
        return None if value is None or isinstance(value, dict) else str(value)

    @property
    def joint(self) -> bool | None:
        """Whether the detector saw COCO (None when the config does not say)."""
        value = _as_bool(self.get("detector.joint"))
        data = self.config.get("data") or {}
        if value is None and self.get("stage") == "detector" and isinstance(data, dict) and "coco" in data:
            value = data["coco"] is not None  # a stage-1 run without the key: VG-only iff data.coco=null
        return value

    @property
    def row(self) -> str | None:
        value = self.get("ablation_row", "row")
        return str(value) if value is not None else None

    @property
    def seed(self) -> Any:
        return self.get("seed")

    @property
    def tasks(self) -> list[str]:
        """The tasks this run has test metrics for (the ``<task>/`` prefixes of metrics.json)."""
        found = {key.split("/", 1)[0] for key in self.metrics if "/" in key}
        return [t for t in TASKS if t in found]

    @property
    def variant(self) -> str | None:
        if self.node == "none" and self.edge == "none" and self.refine is False and self.joint is not True:
            return "baseline"
        if (
            self.node == "masks"
            and self.edge == "gaussian"
            and self.refine is True
            and self.joint is not False
            and self.mask_source == "transfer"
        ):
            return "seg-grounded"
        return None

    @property
    def mask_source(self) -> str:
        """Where grounding's masks come from: transfer (default) | oracle | shuffled (``model.mask_source``)."""
        value = self.get("model.mask_source")
        return str(value) if value is not None else "transfer"

    @property
    def schedule(self) -> str:
        """Stage 2's training length and LR steps, e.g. ``12 epochs; LR x0.1 at 4000`` ("" when the config does not
        say), and its arithmetic where it is not float32 (``; bf16 convs`` for ``cpu_bf16_convs=true``,
        ``; bf16-mixed`` for a mixed-precision trainer): runs of one study row trained for different lengths or in
        another precision are different rows, not more seeds."""
        length = self._length()
        parts = [length] if length else []
        if self.get("cpu_bf16_convs") is True:
            parts.append("bf16 convs")
        trainer_precision = self.get("trainer.precision")
        if trainer_precision not in (None, "", 32, "32", "32-true"):
            parts.append(str(trainer_precision))
        return "; ".join(parts)

    def _length(self) -> str:
        parts = []
        epochs, steps = self.get("model.trainer.max_epochs"), self.get("model.trainer.max_steps")
        if epochs not in (None, -1, ""):
            parts.append(f"{epochs} epochs")
        if steps not in (None, -1, ""):
            parts.append(f"{steps} steps")
        if not parts:
            return ""
        text = " / ".join(parts)
        milestones = self.get("model.optim.milestones")
        if isinstance(milestones, (list, tuple)) and milestones:
            gamma = self.get("model.optim.gamma")
            factor = f"x{gamma:g}" if isinstance(gamma, (int, float)) else "drop"
            text += f"; LR {factor} at {'+'.join(str(m) for m in milestones)}"
        return text

    @property
    def study_variant(self) -> str | None:
        """The study's row: baseline (no grounding, no refinement, any detector), the full seg-grounded
        model (node + Gaussian edge grounding + refinement) on its mask source: grounded | oracle | oracle_amodal |
        shuffled | empty (the control, all-zero masks), or one of Table 4's partial rows on the transferred masks
        (node grounding without refinement, no / avg / union / Gaussian edges: node | edge_avg | edge_union |
        edge_gaussian)."""
        if self.node == "none" and self.edge == "none" and self.refine is False:
            return "baseline"
        if self.node != "masks":
            return None
        kind = _source_kind(self.mask_source, self.get("data.true_masks"), self.get("model.oracle_blur"))
        if self.refine is False and self.edge in ABLATION_STUDY_ROWS:
            return ABLATION_STUDY_ROWS[self.edge] if kind == "transfer" else None
        if self.edge == "gaussian" and self.refine is True:
            return STUDY_SOURCES.get(kind)  # a blurred oracle (``oracle|blur2``) is no study row yet
        return None

    def val_curve(self, metric: str) -> list[tuple[int, float]]:
        """(step, value) of ``val/<metric>`` at each validation, from the CSV logger's ``csv/version_*/metrics.csv``;
        [] when not logged. A resumed run writes a new version from its checkpoint's step on: the versions are
        joined in order, each later one replacing the earlier ones' points from its first step on (what the
        killed process validated after its last checkpoint is redone by the resumed one)."""
        files = sorted(self.path.glob("csv/version_*/metrics.csv"), key=_natural_key)
        column = f"val/{metric}"
        points: dict[int, float] = {}
        for path in files:
            mine: dict[int, float] = {}
            first: int | None = None  # the first step this version logged anything at (a train row too)
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    value, step = row.get(column), row.get("step")
                    if step in (None, ""):
                        continue
                    first = int(float(step)) if first is None else min(first, int(float(step)))
                    if value not in (None, ""):
                        mine[int(float(step))] = float(value)
            if first is not None:
                points = {k: v for k, v in points.items() if k < first} | mine
        return sorted(points.items())

    def retests(self, task: str) -> dict[str, dict[str, Any]]:
        """The metrics of this run's test-time mask swaps in ``task`` (``sgseg.evaluate mask_source=SRC``
        under ``evaluate/``, of the checkpoint the tables read: ``best`` — the one the run's own test used — or
        ``last``), by mask source."""
        found: dict[str, dict[str, Any]] = {}
        for folder, info in _evaluations(self.path):
            metrics = _load_json(folder / "metrics.json")
            if (
                info.get("task") != task
                or not metrics
                or not Path(str(info.get("checkpoint"))).stem.startswith(self.checkpoint)
            ):
                continue
            if self.own_settings(info):
                continue  # the run's own masks and settings: its final-weights test, not a swap
            found[_retest_key(info)] = metrics
        return found

    def own_settings(self, info: dict[str, Any]) -> bool:
        """Whether a re-test (its ``evaluation.json``) ran on this run's own masks and test settings — its
        final-weights test — rather than a swap or another set of test pairs: the mask source it trained on, the
        true-mask file and blur of its config (an oracle run), its own refinement passes and SGDet pairs."""
        return (
            info.get("mask_source") == info.get("trained_mask_source")
            and info.get("refine_passes") is None
            and info.get("require_overlap") is None
            and info.get("true_masks") in (None, self.get("data.true_masks"))
            and float(info.get("oracle_blur") or 0.0) == float(self.get("model.oracle_blur") or 0.0)
        )

    def per_image(self, task: str) -> dict[str, np.ndarray] | None:
        """``<task>_per_image.npz`` (written at test time), None when absent."""
        path = (self.test_dir or self.path) / f"{task}_per_image.npz"
        if not path.is_file():
            return None
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def value(self, task: str, key: str) -> float | None:
        """``metrics.json[task/key]`` as a float, None when absent, NaN or not a number."""
        v = self.metrics.get(f"{task}/{key}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            return None
        return float(v)


def _is_job_dir(path: Path) -> bool:
    if (path / "evaluation.json").is_file():  # a re-test by sgseg.evaluate inside a run, not a run
        return False
    if _is_old_retest(path):
        return False
    return (
        (path / ".hydra" / "config.yaml").is_file()
        or (path / "metrics.json").is_file()
        or (path / "FAILED.txt").is_file()
    )


def _is_old_retest(path: Path) -> bool:
    """``RUN/evaluate/<name>/`` with test metrics but no ``evaluation.json``: a re-test written by an older
    ``sgseg.evaluate`` (before it recorded its settings) — neither a run nor a re-test this module can read."""
    return (
        path.parent.name == "evaluate"
        and (path.parent.parent / ".hydra" / "config.yaml").is_file()
        and not (path / "evaluation.json").is_file()
        and (path / "metrics.json").is_file()
    )


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_job_dirs(paths: list[Path]) -> list[Path]:
    """The run directories at or below ``paths`` (a Hydra multirun dir yields its job subdirs), in order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            print(f"sgseg.results: {path} is not a directory; skipped", file=sys.stderr)
            continue
        if _is_job_dir(path):
            found.append(path)
            continue
        markers = [*path.rglob(".hydra"), *path.rglob("metrics.json"), *path.rglob("FAILED.txt")]
        jobs = {m.parent for m in markers if _is_job_dir(m.parent)}
        for old in sorted({m.parent for m in markers if _is_old_retest(m.parent)}, key=_natural_key):
            print(
                f"sgseg.results: {old} is a re-test without evaluation.json (written by an older sgseg.evaluate); "
                f"left out — re-run `python -m sgseg.evaluate run_dir={old.parent.parent} ...` to include it",
                file=sys.stderr,
            )
        found += sorted(jobs, key=_natural_key)
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def _evaluations(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, evaluation.json) of every ``python -m sgseg.evaluate`` re-test of the whole test split under
    ``path/evaluate/``. Re-tests on the validation images (``split=val``) or on part of the GT relations
    (``relations=seen|zeroshot``) are left out: they are for ``scripts/split_gap.py``, never a study table's test."""
    for info_path in sorted(path.glob("evaluate/*/evaluation.json"), key=_natural_key):
        info = _load_json(info_path)
        if (info.get("split") or "test") != "test" or (info.get("relations") or "all") != "all":
            continue
        yield info_path.parent, info


def _retest_key(info: dict[str, Any]) -> str:
    """A re-test's kind: its mask source (``transfer``, ``oracle``, ...; ``oracle_amodal|blur2`` for true amodal
    masks blurred by σ = 2), with ``|passes<k>`` when it also set ``refine_passes`` (the same weights with k
    refinement passes on the VG stream), and ``|overlapping-pairs`` / ``|all-pairs`` when it set the SGDet test's
    candidate pairs against the run's own ``require_overlap``."""
    passes = info.get("refine_passes")
    source = _source_kind(str(info.get("mask_source")), info.get("true_masks"), info.get("oracle_blur"))
    overlap = info.get("require_overlap")
    pairs = "" if overlap is None else "|overlapping-pairs" if overlap else "|all-pairs"
    return source + ("" if passes is None else f"|passes{passes}") + pairs


def _source_kind(mask_source: str, true_masks: Any, blur: Any = None) -> str:
    """The mask source as the study counts it: ``oracle`` on an *amodal* true-mask file is a source (and row)
    of its own, :data:`AMODAL_ORACLE`; blurred true masks (``model.oracle_blur`` σ > 0) another,
    ``<oracle kind>|blur<σ>``, which no study row pools with the sharp ones."""
    kind = mask_source
    if mask_source == "oracle" and "amodal" in str(true_masks or ""):
        kind = AMODAL_ORACLE
    if mask_source == "oracle" and blur:
        kind += f"|blur{float(blur):g}"
    return kind


def _swap_name(key: str) -> str:
    """The swap table's name of a re-test kind: ``true amodal, blurred σ=2`` for ``oracle_amodal|blur2``."""
    source, _, blur = key.partition("|blur")
    return SWAP_NAMES[source] + (f", blurred σ={blur}" if blur else "")


def _final_weights_test(run: Run) -> Path | None:
    """The folder of ``python -m sgseg.evaluate run_dir=RUN ckpt=last`` in one of the run's own tasks with its own
    masks and settings (``Run.own_settings``), None when absent."""
    for folder, info in _evaluations(run.path):
        if (
            Path(str(info.get("checkpoint"))).stem == "last"
            and info.get("task") in run.tasks
            and run.own_settings(info)
            and (folder / "metrics.json").is_file()
        ):
            return folder
    return None


def load_run(path: Path, checkpoint: str = "best") -> Run:
    """One job directory. ``checkpoint="last"``: its metrics come from the final-weights re-test under
    ``evaluate/`` instead of its own (best-validated) test; a run without one is reported, not silently kept."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"load_run: checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = Run(path=path, checkpoint=checkpoint)
    config = _load_yaml(path / ".hydra" / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    run.overrides = _parse_overrides(_load_yaml(path / ".hydra" / "overrides.yaml"))
    hydra_cfg = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = _select(hydra_cfg, "hydra.runtime.choices") if isinstance(hydra_cfg, dict) else None
    run.choices = choices if isinstance(choices, dict) else {}
    run.metrics = _load_json(path / "metrics.json")
    run.detector_metrics = _load_json(path / "detector" / "detector_metrics.json")
    run.detector_source = _load_json(path / "detector_source.json")
    if checkpoint == "last" and run.metrics:
        run.test_dir = _final_weights_test(run)
        if run.test_dir is None:
            run.metrics = {}
            run.failure = f"no final-weights re-test; run python -m sgseg.evaluate run_dir={path} ckpt=last"
        else:
            run.metrics = _load_json(run.test_dir / "metrics.json")
    failed = path / "FAILED.txt"
    if failed.is_file():
        lines = [ln for ln in failed.read_text(errors="replace").splitlines() if ln.strip()]
        run.failure = lines[-1].strip() if lines else "failed"
    return run


@dataclass
class JobTime:
    """How long a run trained: the sum of its fit segments (one per process that trained it)."""

    seconds: float = 0.0  # the known training wall time, every segment and stage of the job together
    segments: int = 0
    unknown: int = 0  # segments whose time is not recorded (killed before the end, and no timing.json)
    source: str = ""  # "timing.json", "train.log", or "" (nothing recorded)
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    # (start, end) of every segment whose both ends are known: when the job was training, on the wall clock
    intervals: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)


def busy_seconds(intervals: list[tuple[datetime.datetime, datetime.datetime]]) -> float:
    """Seconds of wall clock during which at least one of ``intervals`` was running: the length of their union
    (overlapping jobs count once, the gaps between them — e.g. between sessions — not at all)."""
    total = 0.0
    end: datetime.datetime | None = None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.]\d+\]\[[^\]]*\]\[\w+\] - (.*)$")


def job_time(path: Path) -> JobTime:
    """The training wall time of the job in ``path``: from the ``timing.json`` files that
    :class:`sgseg.lit.clock.RunClock` writes (the run directory and, for a job that trained stage 1,
    ``detector/``), or, for runs older than that, from Hydra's ``train.log``: each process starts with
    Lightning's "Seed set to" line and its time runs to its last "`Trainer.fit` stopped" line; a process killed
    before one counts as ``unknown``."""
    from sgseg.lit.clock import FILE, read_timing

    files = [f for f in (path / "detector" / FILE, path / FILE) if f.is_file()]
    if files:
        out = JobTime(source=FILE)
        segments = [seg for f in files for seg in read_timing(f)]
        out.seconds = sum(float(seg["seconds"]) for seg in segments)
        out.segments = len(segments)
        times = [(_timestamp(seg.get("start")), _timestamp(seg.get("updated"))) for seg in segments]
        out.start = min((a for a, _ in times if a is not None), default=None)
        out.end = max((b for _, b in times if b is not None), default=None)
        out.intervals = [(a, b) for a, b in times if a is not None and b is not None and b >= a]
        return out
    log = path / "train.log"
    if not log.is_file():
        return JobTime()
    out = JobTime(source="train.log")
    begin: datetime.datetime | None = None
    stop: datetime.datetime | None = None

    def close() -> None:
        if begin is None:
            return
        out.segments += 1
        if stop is None:
            out.unknown += 1
        else:
            out.seconds += (stop - begin).total_seconds()
            out.end = stop if out.end is None else max(out.end, stop)
            out.intervals.append((begin, stop))

    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if m.group(2).startswith("Seed set to"):
            close()
            begin, stop = t, None
            out.start = t if out.start is None else min(out.start, t)
        elif m.group(2).startswith("`Trainer.fit` stopped") and begin is not None:
            stop = t
    close()
    return out


def _timestamp(value: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _hours(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}:{minutes % 60:02d}"


def table_job_time(runs: list[Run]) -> Table:
    """Training wall time of the finished runs per study row (and per other experiment): jobs, the mean and the
    total; in the note, the wall clock during which at least one job trained (the union of all segments: what
    the whole set took with jobs side by side, without the gaps between sessions) and the span from the first
    job's start to the last one's end (gaps included)."""
    groups: dict[str, list[tuple[Run, JobTime]]] = {}
    schedules = shown_schedules(runs)
    for run in _finished(runs):
        jt = job_time(run.path)
        if jt.segments == 0:
            continue
        tasks = "/".join(TASK_NAMES.get(t, t) for t in run.tasks)
        variant = run.study_variant
        if variant is not None:
            schedule = f" ({schedules[run.path]})" if schedules[run.path] else ""
            name = f"study {_label(run.model, MODEL_NAMES)} {tasks}{schedule}: {variant}"
        else:
            name = f"{run.get('experiment_name', 'experiment') or '?'} {tasks}".strip()
        groups.setdefault(name, []).append((run, jt))
    header = ["Runs", "jobs", "mean h:mm per job", "total h:mm", "segments", "not recorded"]
    rows = []
    everything: list[JobTime] = []
    for name in sorted(groups):
        times = [jt for _, jt in groups[name]]
        everything += times
        total = sum(jt.seconds for jt in times)
        known = [jt for jt in times if jt.unknown == 0]
        mean = _hours(statistics.fmean(jt.seconds for jt in known)) if known else MISSING
        rows.append([name, len(times), mean, _hours(total), sum(jt.segments for jt in times),
                     sum(jt.unknown for jt in times)])  # fmt: skip
    note = ""
    if everything:
        total = sum(jt.seconds for jt in everything)
        starts = [jt.start for jt in everything if jt.start is not None]
        ends = [jt.end for jt in everything if jt.end is not None]
        span = (
            f"{_hours((max(ends) - min(starts)).total_seconds())} from {min(starts):%Y-%m-%d %H:%M}"
            if starts and ends
            else MISSING
        )
        unknown = sum(jt.unknown for jt in everything)
        busy = busy_seconds([iv for jt in everything for iv in jt.intervals])
        note = (
            f"Job time of all {len(everything)} runs: {_hours(total)} (h:mm); wall clock with at least one of them "
            f"training: {_hours(busy)} (the union of their segments, gaps between sessions left out); first start "
            f"to last end: {span}."
            + (
                f" {unknown} killed segment(s) without a recorded time are not in the sums."
                if unknown
                else ""
            )
        )
        rows.append(
            ["all", len(everything), MISSING, _hours(total), sum(jt.segments for jt in everything), unknown]
        )
    return Table("Training wall time", header, rows, "job_time", note)


# ------------------------------------------------------------------------------------------------ cells
@dataclass
class Cell:
    """The values (fractions) of the runs that share one table cell."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    @property
    def mean(self) -> float | None:
        return 100 * statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return 100 * statistics.stdev(self.values) if len(self.values) > 1 else None

    spread_name = "std"  # the CSV column of :attr:`spread`

    @property
    def spread(self) -> float | None:
        """What follows "±": the sample standard deviation here."""
        return self.std

    def __str__(self) -> str:
        if not self.values:
            return MISSING
        return f"{self.mean:.1f}" if self.spread is None else f"{self.mean:.1f} ± {self.spread:.1f}"


@dataclass
class IntervalCell(Cell):
    """A cell shown as mean ± the half-width of the 95 % Student-t interval of the mean over its runs."""

    spread_name = "ci95"

    @property
    def spread(self) -> float | None:
        return t_half_width(self.values)


def t_half_width(values: list[float], level: float = 0.95) -> float | None:
    """Half-width (in %) of the two-sided ``level`` t-interval of the mean of fractions ``values``:
    t_{(1 + level) / 2, n - 1} · s / sqrt(n); None for fewer than two values."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    n = len(values)
    return 100 * float(t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]
    name: str  # the CSV file stem
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        if not self.rows:
            return "\n".join([*lines, "(no runs)", ""])
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("| " + " | ".join("---" for _ in self.header) + " |")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join([*lines, ""])

    def write_csv(self, path: Path) -> None:
        """Mean and spread (std, or the 95 % t half-width ``ci95``; in %) as two columns per metric; empty
        where there is no value."""
        header: list[str] = []
        for i, h in enumerate(self.header):
            cells = [row[i] for row in self.rows if isinstance(row[i], Cell)]
            header += [h, f"{h} {cells[0].spread_name}"] if cells else [h]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in self.rows:
                out: list[Any] = []
                for i, c in enumerate(row):
                    if isinstance(c, Cell):
                        out += [_num(c.mean), _num(c.spread)]
                    elif any(isinstance(r[i], Cell) for r in self.rows):
                        out += [c, ""]
                    else:
                        out.append(c)
                writer.writerow(out)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _label(name: str | None, names: dict[str, str]) -> str:
    return names.get(name, name) if name else "?"


def _order(value: str | None, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), str(value))


# ------------------------------------------------------------------------------------------------ tables
def _finished(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.metrics and r.failure is None]


def shown_schedules(runs: list[Run]) -> dict[Path, str]:
    """Run path → its schedule (:attr:`Run.schedule`) where runs of its model and backbone trained for different
    lengths, else "": what the tables add so that such runs are not averaged into one cell."""
    lengths: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        if not run.tasks:  # a detector run: its (default) stage-2 schedule was never trained
            continue
        lengths.setdefault((run.model or "?", run.detector or "?"), set()).add(run.schedule)
    return {
        run.path: run.schedule if len(lengths.get((run.model or "?", run.detector or "?"), ())) > 1 else ""
        for run in runs
    }


def detector_labels(runs: list[Run]) -> dict[Path, str]:
    """Run path → the Detector cell of Tables 1, 3 and 4: the backbone, plus the schedule where
    :func:`shown_schedules` names one."""
    schedules = shown_schedules(runs)
    return {
        r.path: (r.detector or "?") + (f", {schedules[r.path]}" if schedules[r.path] else "") for r in runs
    }


def table_recall(runs: list[Run], metric: str, ks: tuple[int, ...], title: str, name: str) -> Table:
    """Tables 1 and 3: one row per (model, detector, variant), columns task × K (the detector cell names the
    schedule where one model trained for several lengths, :func:`detector_labels`)."""
    groups: dict[tuple[str, str, str], dict[str, Cell]] = {}
    labels = detector_labels(runs)
    for run in _finished(runs):
        if run.variant is None:
            continue
        key = (run.model or "?", labels[run.path], run.variant)
        cells = groups.setdefault(key, {})
        for task in run.tasks:
            for k in ks:
                cells.setdefault(f"{task}/{metric}@{k}", Cell()).add(run.value(task, f"{metric}@{k}"))
    for model, det, _ in list(groups):  # a missing counterpart shows as a row of "—"
        for variant in VARIANTS:
            groups.setdefault((model, det, variant), {})
    header = ["Model", "Detector", "Variant"]
    header += [f"{TASK_NAMES[t]} {metric}@{k}" for t in TASKS for k in ks]
    rows = []
    for key in sorted(groups, key=lambda m: (_order(m[0], tuple(MODEL_NAMES)), m[1], _order(m[2], VARIANTS))):
        cells = groups[key]
        rows.append(
            [_label(key[0], MODEL_NAMES), key[1], key[2]]
            + [cells.get(f"{t}/{metric}@{k}", Cell()) for t in TASKS for k in ks]
        )
    return Table(title, header, rows, name)


def table_mask_ap(runs: list[Run]) -> Table:
    """Table 2: per detector, the unrefined masks, then each model's refined masks (runs with refine=true)."""
    kinds = ("AP", "AP50", "AP75")
    unrefined: dict[str, dict[str, Cell]] = {}
    refined: dict[tuple[str, str], dict[str, Cell]] = {}
    for run in _finished(runs):
        if run.refine is not True:
            continue
        det = run.detector or "?"
        for task in run.tasks:
            for kind in kinds:
                col = f"{task}/{kind}"
                unrefined.setdefault(det, {}).setdefault(col, Cell()).add(
                    run.value(task, f"mask_{kind}_unrefined")
                )
                refined.setdefault((det, run.model or "?"), {}).setdefault(col, Cell()).add(
                    run.value(task, f"mask_{kind}_refined")
                )
    header = ["Detector", "Masks"] + [f"{TASK_NAMES[t]} {k}" for t in TASKS for k in kinds]
    rows = []
    for det in sorted(unrefined):
        rows.append(
            [det, "no refinement"] + [unrefined[det].get(f"{t}/{k}", Cell()) for t in TASKS for k in kinds]
        )
        for d, model in sorted(refined, key=lambda m: _order(m[1], tuple(MODEL_NAMES))):
            if d == det:
                cells = refined[(d, model)]
                rows.append(
                    [det, f"{_label(model, MODEL_NAMES)} + refinement"]
                    + [cells.get(f"{t}/{k}", Cell()) for t in TASKS for k in kinds]
                )
    note = "COCO val mask AP (%) of the transferred masks, from the runs trained with refinement."
    return Table("Table 2: COCO mask AP, unrefined vs. refined", header, rows, "table2_mask_ap", note)


def tables_ablation(runs: list[Run]) -> list[Table]:
    """Table 4: one table per (model, detector, task) swept, rows in the paper's order."""
    groups: dict[tuple[str, str, str], dict[str, dict[str, Cell]]] = {}
    seeds: dict[tuple[str, str, str, str], set] = {}
    labels = detector_labels(runs)
    for run in _finished(runs):
        if run.row is None:
            continue
        for task in run.tasks:
            key = (run.model or "?", labels[run.path], task)
            cells = groups.setdefault(key, {}).setdefault(run.row, {})
            for k in KS:
                cells.setdefault(f"mR@{k}", Cell()).add(run.value(task, f"mR@{k}"))
            seeds.setdefault((*key, run.row), set()).add(
                str(run.seed) if run.seed is not None else str(run.path)
            )
    tables = []
    for key in sorted(groups, key=lambda m: (_order(m[0], tuple(MODEL_NAMES)), m[1], _order(m[2], TASKS))):
        model, det, task = key
        rows = []
        for row in sorted(set(ROWS) | set(groups[key]), key=lambda r: _order(r, ROWS)):
            cells = groups[key].get(row, {})
            n = len(seeds.get((*key, row), ()))
            rows.append([ROW_LABELS.get(row, row)] + [cells.get(f"mR@{k}", Cell()) for k in KS] + [n])
        title = f"Table 4: ablation, {_label(model, MODEL_NAMES)} {TASK_NAMES.get(task, task)} ({det})"
        note = "mR@K (%), mean ± std over seeds (sample std)."
        name = f"table4_ablation_{model}_{task}_{re.sub(r'[^0-9A-Za-z._-]+', '_', det)}"
        tables.append(Table(title, ["Row"] + [f"mR@{k}" for k in KS] + ["seeds"], rows, name, note))
    if not tables:
        tables.append(
            Table("Table 4: ablation", ["Row"] + [f"mR@{k}" for k in KS] + ["seeds"], [], "table4_ablation")
        )
    return tables


def _file_id(path: Path) -> str | None:
    """The first 8 hex digits of a file's SHA-256 (as :attr:`Run.detector_id`); None when there is no file."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:8]


def _cell(values: list[float | None]) -> Cell:
    cell = Cell()
    for v in values:
        cell.add(v)
    return cell


def table_detectors(runs: list[Run]) -> Table:
    """Stage 1: VG box mAP@50 and COCO box/mask AP, one row per stage-1 run (each detector is its own file:
    averaging two of them would hide which one a stage-2 row froze), then the mean of each (backbone, data)
    group with two or more runs.

    "File" is the first digits of the run's ``detector/detector.pt`` SHA-256 ("—" when the weights were not
    kept); "Frozen by" counts the given stage-2 runs whose ``detector_source.json`` names that file.
    "Trained on" comes from the metrics; a config that says otherwise is shown next to it.
    """
    keys = ("vg_map50", "coco_box_ap", "coco_mask_ap")
    used = Counter(run.detector_id for run in runs if run.detector_id is not None)
    entries = []
    for run in runs:
        if not run.detector_metrics:
            continue
        # what the detector saw, from its metrics (COCO is validated whenever it was trained on)
        saw_coco = any(k.startswith("val/coco_") for k in run.detector_metrics)
        trained_on = "VG + COCO" if saw_coco else "VG only"
        if run.joint is not None and run.joint != saw_coco:
            trained_on += f" (config: detector.joint={str(run.joint).lower()})"
        values = []
        for k in keys:
            v = run.detector_metrics.get(f"val/{k}")
            values.append(float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None)
        entries.append(
            (
                run.detector or "?",
                trained_on,
                run.path.name,
                _file_id(run.path / "detector" / "detector.pt"),
                values,
            )
        )
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    header = [
        "Detector",
        "Trained on",
        "Run",
        "File",
        "Frozen by",
        "VG mAP@50",
        "COCO box AP",
        "COCO mask AP",
    ]
    rows: list[list[Any]] = []
    for (det, trained_on), group in groupby(entries, key=lambda e: e[:2]):
        group = list(group)
        for _, _, name, file_id, values in group:
            frozen = f"{used[file_id]} runs" if file_id is not None else "—"
            rows.append([det, trained_on, name, file_id or "—", frozen] + [_cell([v]) for v in values])
        if len(group) > 1:
            means = [_cell([e[4][j] for e in group]) for j in range(len(keys))]
            rows.append([det, trained_on, f"mean of {len(group)}", "", ""] + means)
    note = "One row per stage-1 run; a group of runs also gets its mean ± std." if rows else ""
    return Table("Stage 1: detectors (validation)", header, rows, "detectors", note)


# ------------------------------------------------------------------------------------------------ the study
# (model, detector, task, schedule); the schedule (:attr:`Run.schedule`) is "" when every run of that model,
# detector and task trained for the same length, and names the length where they differ
StudyKey = tuple[str, str, str, str]


def study_groups(runs: list[Run]) -> dict[StudyKey, dict[str, list[Run]]]:
    """The finished runs of the study's rows, by (model, detector, task, schedule) and then row
    (:attr:`Run.study_variant`). Runs of one model, detector and task trained for different lengths (epochs, steps,
    LR milestones) are separate groups — the longer runs of a seed are no extra seeds, and no pair of the
    shorter ones — whose key carries the schedule; with one length, the key's schedule is ""."""
    found = _study_groups_by_schedule(runs)
    shown = _shown_keys(found)
    return {shown[k]: found[k] for k in sorted(found, key=lambda k: _study_order(shown[k]))}


def _study_groups_by_schedule(runs: list[Run]) -> dict[StudyKey, dict[str, list[Run]]]:
    """:func:`study_groups` with every key naming its schedule."""
    found: dict[StudyKey, dict[str, list[Run]]] = {}
    for run in _finished(runs):
        variant = run.study_variant
        if variant is None:
            continue
        for task in run.tasks:
            key = (run.model or "?", run.detector or "?", task, run.schedule)
            found.setdefault(key, {}).setdefault(variant, []).append(run)
    return found


def _shown_keys(keys: Iterable[StudyKey]) -> dict[StudyKey, StudyKey]:
    """Full key → the key the tables show: its schedule dropped where it is the only one of its (model, detector,
    task)."""
    keys = set(keys)
    lengths = Counter(k[:3] for k in keys)
    return {k: (k if lengths[k[:3]] > 1 else (*k[:3], "")) for k in keys}


def _study_order(key: StudyKey) -> tuple:
    return (_order(key[0], tuple(MODEL_NAMES)), key[1], _order(key[2], TASKS), _natural_key(Path(key[3])))


def _study_name(key: StudyKey) -> str:
    model, det, task, schedule = key
    return f"{_label(model, MODEL_NAMES)} {TASK_NAMES.get(task, task)} ({det}{', ' + schedule if schedule else ''})"


def _study_slug(key: StudyKey) -> str:
    """``<model>_<task>_<detector>`` (+ ``_12ep_lrx0.1_at4000`` when the key names a schedule, ``_bf16convs`` after
    it for bf16 convolutions): table and figure file names."""
    model, det, task, schedule = key
    slug = f"{model}_{task}_{det}"
    if schedule:
        for old, new in (
            (" epochs", "ep"),
            (" steps", "steps"),
            ("; LR ", "_lr"),
            (" at ", "_at"),
            (" / ", "_"),
            ("; ", "_"),
        ):
            schedule = schedule.replace(old, new)
        slug += "_" + schedule.replace("+", "-").replace(" ", "")
    return slug


def predicate_names(runs: list[Run], task: str, count: int) -> list[str]:
    """Predicate names from the first ``<task>_per_image.npz`` that has them; "1".."C" otherwise."""
    for run in runs:
        data = run.per_image(task)
        if data is not None and len(data.get("predicate_names", ())) == count:
            return [str(n) for n in data["predicate_names"].tolist()]
    return [str(i + 1) for i in range(count)]


def _seed_text(seeds: set[Any]) -> str:
    return ", ".join(sorted((str(x) for x in seeds), key=lambda x: (len(x), x)))


def detector_note(rows_runs: dict[str, list[Run]]) -> str:
    """Which frozen detector file (:attr:`Run.detector_id`) the runs of a study group used, by seed; "" when
    no run recorded it. A study's paired differences assume one detector per seed; seeds that mix are named."""
    by_id: dict[str | None, set[Any]] = {}
    scores: dict[str, float] = {}
    for runs in rows_runs.values():
        for run in runs:
            by_id.setdefault(run.detector_id, set()).add(run.seed)
            value = (run.detector_source.get("metrics") or {}).get("val/vg_map50")
            if run.detector_id is not None and isinstance(value, (int, float)):
                scores[run.detector_id] = float(value)
    if set(by_id) <= {None}:
        return ""
    parts = []
    for det in sorted(by_id, key=lambda d: (d is None, d or "")):
        name = "not recorded" if det is None else f"detector {det}"
        if det in scores:
            name += f" (VG mAP@50 {100 * scores[det]:.1f})"
        parts.append(f"{name}: seed{'s' if len(by_id[det]) > 1 else ''} {_seed_text(by_id[det])}")
    text = (
        "Frozen detectors (first digits of detector.pt's SHA-256, detector_source.json): "
        + "; ".join(parts)
        + "."
    )
    known = [seeds for det, seeds in by_id.items() if det is not None]
    mixed = {seed for seeds in known for seed in seeds if sum(seed in other for other in known) > 1}
    if mixed:
        one = len(mixed) == 1
        which = f"Seed {_seed_text(mixed)} has" if one else f"Seeds {_seed_text(mixed)} have"
        text += f" {which} rows on different detectors: {'its' if one else 'their'} differences are not paired on one detector."
    return text


def table_study(key: StudyKey, rows_runs: dict[str, list[Run]]) -> Table:
    """The study's headline table: one row per study row, mean ± 95 % t-interval over its runs (seeds)."""
    task = key[2]
    metrics = [f"mR@{k}" for k in KS] + [f"R@{STUDY_K}", f"zsR@{STUDY_K}"]
    rows = []
    for variant in STUDY_ROWS:
        runs = rows_runs.get(variant, [])
        if variant in OPTIONAL_ROWS and not runs:
            continue  # listed only when run (the four main rows show "—" when missing)
        cells = [IntervalCell() for _ in metrics]
        for run in runs:
            for cell, m in zip(cells, metrics):
                cell.add(run.value(task, m))
        rows.append([variant, *cells, len(runs)])
    note = (
        "Recall (%), mean ± half-width of the 95 % Student-t interval over the runs (seeds) of each row. "
        "grounded / oracle / shuffled: the seg-grounded model on transferred, true (visible), or deranged-source "
        "masks; oracle_amodal: on the objects' true amodal masks; empty: trained and tested on all-zero masks "
        "(the control: the grounded architecture without shapes)."
    )
    if detectors := detector_note(rows_runs):
        note += " " + detectors
    name = f"study_{_study_slug(key)}"
    return Table(f"Study: {_study_name(key)}", ["Row", *metrics, "seeds"], rows, name, note)


# the evaluator's object-label measures per task (sgseg.evaluation.scene_graph): (metrics key, name, definition);
# none in predcls (labels given). The first is the object table's default; the other two split the recall into
# "both objects of a GT relation matched" x "mR@50 over those relations" (comparable to PredCls's mR@50).
_MATCHED = "GT relations whose subject and object are both matched by a predicted object (label, IoU ≥ 0.5)"
OBJECT_MEASURES = {
    "sgcls": (
        ("obj_acc", "object accuracy", "GT boxes given the right label / GT boxes"),
        ("rel_objects_ok", "relations with both objects labelled", f"{_MATCHED} / GT relations"),
        (f"mR@{STUDY_K}_given_objects", f"mR@{STUDY_K} given both objects", f"mR@{STUDY_K} over the {_MATCHED}"),
    ),
    "sgdet": (
        ("obj_recall", "object recall",
         "GT boxes matched by a detection of the right label at IoU ≥ 0.5, any score / GT boxes"),
        ("rel_objects_ok", "relations with both objects found", f"{_MATCHED} / GT relations"),
        (f"mR@{STUDY_K}_given_objects", f"mR@{STUDY_K} given both objects", f"mR@{STUDY_K} over the {_MATCHED}"),
    ),
}  # fmt: skip


def tables_study_objects(key: StudyKey, rows_runs: dict[str, list[Run]]) -> list[Table]:
    """:func:`table_study_objects` for each object measure of the task that some run reports."""
    measures = OBJECT_MEASURES.get(key[2], ())
    return [t for m in measures if (t := table_study_objects(key, rows_runs, m[0])) is not None]


def table_study_objects(
    key: StudyKey, rows_runs: dict[str, list[Run]], measure: str | None = None
) -> Table | None:
    """How well each row labels the objects (``measure``, default the task's first of :data:`OBJECT_MEASURES`:
    SGCls GT boxes given the right label, SGDet GT boxes found with the right label; or the share of GT
    relations with both objects matched, or mR@50 over those relations), beside its relations: per row the runs
    whose test reports the measure (re-tests by this version's ``sgseg.evaluate``; older tests lack it), its
    mean ± 95 % t-interval, the same runs' mR@50, and the paired difference from the baseline / grounded run of
    the same seed over the seeds with both. None in PredCls or when no run reports it."""
    task, k = key[2], STUDY_K
    if task not in OBJECT_MEASURES:
        return None
    known = {m[0]: m for m in OBJECT_MEASURES[task]}
    default = OBJECT_MEASURES[task][0][0]
    if measure is not None and measure not in known:
        raise ValueError(
            f"table_study_objects: no object measure {measure!r} in {task}; known: {list(known)}"
        )
    measure, what, definition = known[measure or default]
    per_row: dict[str, dict[int, float]] = {}
    recall: dict[str, IntervalCell] = {}
    for variant in STUDY_ROWS:
        chosen = _runs_reporting_by_seed(rows_runs.get(variant, []), task, measure)
        cell = IntervalCell()
        for run in chosen.values():
            cell.add(run.value(task, f"mR@{k}"))
        if chosen:
            per_row[variant], recall[variant] = _seed_values(chosen, task, measure), cell
    if not per_row:
        return None
    base, grounded = per_row.get("baseline", {}), per_row.get("grounded", {})
    rows = []
    for variant, values in per_row.items():
        cell = IntervalCell()
        for v in values.values():
            cell.add(v)
        _, over_b, p_b = _paired_over_seeds(values, base if variant != "baseline" else {})
        _, over_g, p_g = _paired_over_seeds(values, grounded if variant in VS_GROUNDED else {})
        seeds = " ".join(str(s) for s in values)
        rows.append([variant, seeds, cell, recall[variant], over_b, p_b, over_g, p_g])
    pooled = "" if measure.startswith("mR@") else ", pooled over the test images"
    note = (
        f"{what if what.startswith('mR@') else what.capitalize()} (%) of the runs whose test reports it "
        f"({measure}: {definition}{pooled}; tests by an earlier evaluator lack it — re-test with `python -m "
        "sgseg.evaluate run_dir=RUN ckpt=last`), mean ± 95 % t-interval over those runs, with the same runs' "
        f"mR@{k}; Δ: row − baseline (or grounded) of the same seed over the seeds with both, two-sided paired t-test."
    )  # fmt: skip
    header = ["Row", "seeds", f"{what} ({measure})", f"mR@{k} (same runs)", "Δ vs baseline (t)", "p",
              "Δ vs grounded (t)", "p vs grounded"]  # fmt: skip
    slug = "" if measure == default else "_" + measure.replace("@", "")
    return Table(
        f"Study: {what}, {_study_name(key)}", header, rows, f"study_objects{slug}_{_study_slug(key)}", note
    )


def _runs_reporting_by_seed(runs: list[Run], task: str, measure: str) -> dict[int, Run]:
    """Per seed the first run (in natural path order) whose test reports ``measure``, in that order; runs without a
    seed are left out."""
    out: dict[int, Run] = {}
    for run in sorted(runs, key=lambda r: _natural_key(r.path)):
        if run.seed is not None and int(run.seed) not in out and run.value(task, measure) is not None:
            out[int(run.seed)] = run
    return out


def _seed_values(chosen: dict[int, Run], task: str, measure: str) -> dict[int, float]:
    """``{seed: value}`` in seed order: the form :func:`_paired_over_seeds` pairs."""
    return {s: chosen[s].value(task, measure) for s in sorted(chosen)}


# Table 4 read step by step at the study's schedule: (row, the row it adds to, what it adds). The three edge
# variants are alternatives on top of node grounding; the full model (grounded) adds the refinement head to the
# Gaussian edges.
ABLATION_STEPS = (
    ("node", "baseline", "node grounding f_N"),
    ("edge_avg", "node", "edge grounding f_E on the masks' mean"),
    ("edge_union", "node", "edge grounding f_E on the masks' union"),
    ("edge_gaussian", "node", "edge grounding f_E on the Gaussian-blurred product"),
    ("grounded", "edge_gaussian", "the mask refinement head"),
)


def table_study_steps(key: StudyKey, rows_runs: dict[str, list[Run]]) -> Table | None:
    """Table 4 step by step: each of :data:`ABLATION_STEPS` whose two rows both have runs, as the paired difference
    row − the row it adds to over the seeds with both (mean, 95 % t-interval, two-sided paired t-test), in mR@50
    and in each object measure of the task (:data:`OBJECT_MEASURES`) that some run reports — so what a step adds
    to the object labels and what it adds to the predicates given them are read apart. None without a partial
    row (Table 4's rows trained with ``sweep=study``)."""
    if not any(rows_runs.get(v) for v in ABLATION_STUDY_ROWS.values()):
        return None
    task, k = key[2], STUDY_K
    reported = {m for runs in rows_runs.values() for r in runs for m, *_ in OBJECT_MEASURES.get(task, ())
                if r.value(task, m) is not None}  # fmt: skip
    measures = [(f"mR@{k}", f"mR@{k}")] + [
        (m, w) for m, w, _ in OBJECT_MEASURES.get(task, ()) if m in reported
    ]

    def values(variant: str, measure: str) -> dict[int, float]:
        return _seed_values(_runs_reporting_by_seed(rows_runs.get(variant, []), task, measure), task, measure)

    rows = []
    for variant, ref, adds in ABLATION_STEPS:
        if not rows_runs.get(variant) or not rows_runs.get(ref):
            continue
        cells: list[str] = []
        pairs = [(values(variant, measure), values(ref, measure)) for measure, _ in measures]
        seeds = sorted(set(pairs[0][0]) & set(pairs[0][1]))  # mR@K's: every test reports it
        for a, b in pairs:
            _, over, p = _paired_over_seeds(a, b)
            paired = sorted(set(a) & set(b))
            if paired and paired != seeds:  # an object measure that older tests lack: name its seeds
                over += f" (seeds {' '.join(map(str, paired))})"
            cells += [over, p]
        rows.append([f"{variant} − {ref}", adds, " ".join(map(str, seeds)), *cells])
    if not rows:
        return None
    header = ["Step", "adds", f"seeds (mR@{k})"]
    for measure, what in measures:
        header += [f"Δ {what} (t)", f"p ({measure})"]
    note = (
        "Table 4 step by step: each partial row (trained like the study's rows) minus the row it adds to, per seed, "
        "then the mean with its 95 % t-interval over the seeds with both and the two-sided paired t-test's p; the "
        "object measures pair the seeds whose tests report them (re-test older runs with `python -m sgseg.evaluate "
        "run_dir=RUN ckpt=last`). The edge variants are alternatives on top of node grounding; the full model "
        "(grounded) adds the refinement head to the Gaussian edges."
    )
    return Table(f"Study: Table 4 step by step, {_study_name(key)}", header, rows,
                 f"study_steps_{_study_slug(key)}", note)  # fmt: skip


def _per_predicate_cells(runs: list[Run], task: str, count: int) -> list[IntervalCell]:
    cells = [IntervalCell() for _ in range(count)]
    for run in runs:
        for cell, v in zip(cells, _predicate_values(run, task, count)):
            cell.add(v)
    return cells


def _num_predicates(rows_runs: dict[str, list[Run]], task: str) -> int:
    for runs in rows_runs.values():
        for run in runs:
            values = run.metrics.get(f"{task}/mR_per_predicate@{STUDY_K}")
            if isinstance(values, list):
                return len(values)
    return 0


def _predicate_values(run: Run | dict[str, Any], task: str, count: int) -> list[float | None]:
    """Per-predicate R@50 of a run (or of a metrics dict); None where missing."""
    metrics = run.metrics if isinstance(run, Run) else run
    values = metrics.get(f"{task}/mR_per_predicate@{STUDY_K}")
    if not isinstance(values, list) or len(values) != count:
        return [None] * count
    return [float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None for v in values]


def _group_mean(values: list[float | None], members: list[int]) -> float | None:
    picked = [values[c] for c in members if values[c] is not None]
    return statistics.fmean(picked) if picked else None


def table_study_predicates(key: StudyKey, rows_runs: dict[str, list[Run]]) -> Table:
    """Per-predicate R@50 of every study row (mean ± 95 % t-interval over seeds), one line per predicate, then
    the mean over the mask-decided and over the box-decidable predicates (per run, then over seeds); and for
    every row but the baseline its paired difference from the baseline of the same seed (Δ columns)."""
    task = key[2]
    count = _num_predicates(rows_runs, task)
    names = predicate_names([r for rs in rows_runs.values() for r in rs], task, count)
    present = [v for v in STUDY_ROWS if rows_runs.get(v)]
    values = {v: [_predicate_values(r, task, count) for r in rows_runs[v]] for v in present}
    groups = {
        "mean, mask-decided": [c for c, n in enumerate(names) if n in MASK_PREDICATES],
        "mean, box-decided": [c for c, n in enumerate(names) if n not in MASK_PREDICATES],
    }
    # per run: its per-predicate recalls followed by the two group means
    per_run = {
        v: [[*vals, *(_group_mean(vals, m) for m in groups.values())] for vals in values[v]] for v in present
    }
    base = _by_seed(rows_runs.get("baseline", []))
    deltas = [v for v in present if v != "baseline" and base]
    lines = [*names, *groups]
    columns: dict[str, list[IntervalCell]] = {}
    for v in present:
        columns[v] = [IntervalCell() for _ in lines]
        for vals in per_run[v]:
            for cell, x in zip(columns[v], vals):
                cell.add(x)
    base_values = {seed: per_run["baseline"][rows_runs["baseline"].index(r)] for seed, r in base.items()}
    for v in deltas:
        columns[f"Δ {v}"] = [IntervalCell() for _ in lines]
        for run, vals in zip(rows_runs[v], per_run[v]):
            ref = base_values.get(run.seed)
            if ref is None:
                continue
            for cell, x, b in zip(columns[f"Δ {v}"], vals, ref):
                cell.add(None if x is None or b is None else x - b)
    kinds = ["mask" if n in MASK_PREDICATES else "box" for n in names] + ["", ""]
    shown = [*present, *(f"Δ {v}" for v in deltas)]
    rows = [[line, kind, *(columns[c][i] for c in shown)] for i, (line, kind) in enumerate(zip(lines, kinds))]
    rows = [rows[i] for i in mask_decided_first(names)] + rows[len(names) :]
    note = (
        f"R@{STUDY_K} (%) per predicate (graph constraint), mean ± 95 % t-interval over seeds; 'mask': a "
        "predicate the synthetic benchmark decides from the pixels, 'box': decidable from the boxes. The two "
        "'mean' lines average each run's predicates of that kind first. Δ: the row minus the baseline of the "
        "same seed, mean ± 95 % t-interval over the paired seeds."
    )
    name = f"study_predicates_{_study_slug(key)}"
    return Table(
        f"Study: per-predicate R@{STUDY_K}, {_study_name(key)}", ["Predicate", "decided by", *shown], rows,
        name, note,
    )  # fmt: skip


def table_study_swaps(key: StudyKey, rows_runs: dict[str, list[Run]]) -> Table | None:
    """The test-time mask swap: each grounded row's trained weights re-tested on other masks
    (``sgseg.evaluate mask_source=...``). Per row and measure: its own test (mean ± t-interval over seeds), then
    per swapped-in source the paired change (swap − own, same run), mean ± t-interval over the runs.
    None when no run has a re-test."""
    task = key[2]
    count = _num_predicates(rows_runs, task)
    names = predicate_names([r for rs in rows_runs.values() for r in rs], task, count)
    groups = {
        f"R@{STUDY_K}, mask-decided": [c for c, n in enumerate(names) if n in MASK_PREDICATES],
        f"R@{STUDY_K}, box-decided": [c for c, n in enumerate(names) if n not in MASK_PREDICATES],
    }

    def measures(metrics: dict[str, Any]) -> list[float | None]:
        mr = metrics.get(f"{task}/mR@{STUDY_K}")
        values = _predicate_values(metrics, task, count)
        return [
            float(mr) if isinstance(mr, (int, float)) else None,
            *(_group_mean(values, m) for m in groups.values()),
        ]

    labels = [f"mR@{STUDY_K}", *groups]
    rows = []
    retests = {
        id(r): r.retests(task) for rs in rows_runs.values() for r in rs
    }  # read each run's re-tests once
    # blurred true masks (sgseg.evaluate oracle_blur=σ): a column of their own, after the sharp sources
    blurred = sorted({k for found in retests.values() for k in found if "|blur" in k and "|passes" not in k})
    sources = [*SWAP_SOURCES, *blurred]
    for variant, trained in TRAINED_SOURCE.items():
        # runs with at least one swap (the ckpt=last re-test on the run's own masks is not one)
        unrefined = f"{trained}|passes0"
        columns = [*sources, UNREFINED]
        runs = [
            r
            for r in rows_runs.get(variant, [])
            if set(retests[id(r)]) & (set(sources) - {trained} | {unrefined})
        ]
        if not runs:
            continue
        own = [IntervalCell() for _ in labels]
        swaps = {src: [IntervalCell() for _ in labels] for src in columns}
        for run in runs:
            mine = measures(run.metrics)
            for cell, x in zip(own, mine):
                cell.add(x)
            for src, metrics in retests[id(run)].items():
                column = UNREFINED if src == unrefined else src
                if column in swaps and src != trained:
                    for cell, x, b in zip(swaps[column], measures(metrics), mine):
                        cell.add(None if x is None or b is None else x - b)
        for i, label in enumerate(labels):
            rows.append(
                [
                    f"{variant} ({'all-zero' if trained == CONTROL else SWAP_NAMES[trained]})",
                    label,
                    own[i],
                    *(swaps[s][i] for s in columns),
                    len(runs),
                ]
            )
    if not rows:
        return None
    weights = {r.checkpoint for runs in rows_runs.values() for r in runs}
    weights_name = "best-validated" if weights == {"best"} else "final" if weights == {"last"} else "mixed"
    note = (
        f"Each row's trained weights ({weights_name} checkpoint) re-tested with grounding fed other masks "
        "(`python -m sgseg.evaluate run_dir=RUN mask_source=SRC`): 'own' is the run's test, mean ± 95 % "
        "t-interval over seeds; each '→' column the change swap − own of the same run, mean ± t-interval over the "
        "runs; empty = all-zero masks. A model that reads its masks changes when they do. '→ own, unrefined': "
        "its own masks without the refinement passes on the VG stream (`sgseg.evaluate refine_passes=0`)."
    )
    header = ["Trained on", "measure", "own masks", *(f"→ {_swap_name(s)}" for s in sources),
              f"→ {SWAP_NAMES[UNREFINED]}", "runs"]  # fmt: skip
    name = f"study_swaps_{_study_slug(key)}"
    return Table(f"Study: test-time mask swap, {_study_name(key)}", header, rows, name, note)


def _by_seed(runs: list[Run]) -> dict[Any, Run]:
    out: dict[Any, Run] = {}
    for run in runs:
        if run.seed is not None:
            out.setdefault(run.seed, run)  # a repeated seed: the first run found
    return out


def paired_bootstrap(
    pairs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], k: int, num: int, seed: int = 0
) -> dict[str, Any]:
    """Bootstrap over test images of the difference (other − baseline) of mR@K and R@K.

    pairs: (baseline, other) per-image arrays (``<task>_per_image.npz``) of runs that differ only in what is
    compared (e.g. one per training seed). Images are matched by ``image_id``; only the ids every run holds
    are used. Each of the ``num`` replicates draws the images with replacement once and applies the same draw
    to every run, so the differences are paired and, over several pairs, their mean is bootstrapped too.
    Returns ``images`` and, per metric, ``<metric>`` Float[P] (the difference on all common images, in
    fractions), ``<metric>_low`` / ``<metric>_high`` (the 2.5 / 97.5 percentiles) per pair, and
    ``<metric>_mean`` / ``_mean_low`` / ``_mean_high`` for the mean over the pairs, and ``<metric>_undefined``: how
    many resamples left the metric undefined (R@K where a resample draws no image with a GT relation — only in
    tiny test sets; mR@K is then 0, as absent predicates score); its percentiles are taken over the other
    resamples, and a ValueError is raised when none is left.
    """
    arrays = [d for pair in pairs for d in pair]
    for d in arrays:
        if (np.asarray(d["image_id"]) < 0).any():
            raise ValueError("paired_bootstrap: per-image counts without image ids cannot be paired")
    common = arrays[0]["image_id"]
    for d in arrays[1:]:
        common = np.intersect1d(common, d["image_id"])
    if common.size == 0:
        raise ValueError("paired_bootstrap: the runs share no test image id")
    positions = [np.searchsorted(np.sort(d["image_id"]), common) for d in arrays]
    positions = [np.argsort(d["image_id"], kind="stable")[p] for d, p in zip(arrays, positions)]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, common.size, size=(num, common.size))
    metrics = (f"mR@{k}", f"R@{k}")

    def values(d: dict[str, np.ndarray], rows: np.ndarray) -> tuple[float, float]:
        r = recall_from_per_image(d, k, rows)
        return r[metrics[0]], r[metrics[1]]

    full = np.array([values(d, p) for d, p in zip(arrays, positions)])  # (2P, 2)
    boot = np.array([[values(d, p[draw]) for d, p in zip(arrays, positions)] for draw in draws])  # (B, 2P, 2)
    diff_full = full[1::2] - full[0::2]  # (P, 2)
    diff_boot = boot[:, 1::2] - boot[:, 0::2]  # (B, P, 2)
    out: dict[str, Any] = {"images": int(common.size)}
    for j, m in enumerate(metrics):
        undefined = np.isnan(diff_boot[:, :, j]).any(axis=1)
        if undefined.all():
            raise ValueError(
                f"paired_bootstrap: none of the {num} resamples of the {common.size} common test images holds "
                f"an image with a GT relation, so {m} is undefined in all; the test set is too small to bootstrap"
            )
        kept = diff_boot[~undefined, :, j]
        out[f"{m}_undefined"] = int(undefined.sum())
        low, high = np.percentile(kept, [2.5, 97.5], axis=0)
        out[m], out[f"{m}_low"], out[f"{m}_high"] = diff_full[:, j], low, high
        mean_boot = kept.mean(1)
        out[f"{m}_mean"] = float(diff_full[:, j].mean())
        out[f"{m}_mean_low"], out[f"{m}_mean_high"] = (
            float(x) for x in np.percentile(mean_boot, [2.5, 97.5])
        )
    return out


def format_p(p: float) -> str:
    """A p-value as the tables print it: three decimals, ``< 0.001`` below 0.0005 (where three decimals would
    read 0.000), MISSING for NaN (fewer than two seeds, or no spread)."""
    if math.isnan(p):
        return MISSING
    return "< 0.001" if p < 0.0005 else f"{p:.3f}"


def seed_t_test(diffs: Any) -> tuple[float, float, float]:
    """Per-seed paired differences (fractions) → (mean, half-width of its 95 % t-interval, two-sided p of the
    one-sample t-test against 0), the first two in fractions; NaN where fewer than two seeds."""
    values = [float(x) for x in np.asarray(diffs, dtype=float).ravel()]
    if len(values) < 2:
        return (values[0] if values else math.nan), math.nan, math.nan
    from scipy.stats import ttest_1samp

    half = t_half_width(values)
    p = float(ttest_1samp(values, 0.0).pvalue) if statistics.stdev(values) > 0 else math.nan
    return statistics.fmean(values), (half / 100 if half is not None else math.nan), p


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def table_study_bootstrap(key: StudyKey, rows_runs: dict[str, list[Run]], num: int) -> Table:
    """Per seed and over the seeds: grounded / oracle / shuffled / empty − baseline, and oracle / shuffled / empty −
    grounded, mR@50 and R@50, with the 95 % percentile interval of the paired bootstrap over test images
    (:func:`paired_bootstrap`)."""
    task = key[2]
    k = STUDY_K
    header = [
        "Comparison",
        "seed",
        f"Δ mR@{k}",
        "low",
        "high",
        f"Δ R@{k}",
        "low",
        "high",
        "images",
        f"p (mR@{k})",
    ]
    rows: list[list[Any]] = []
    undefined: list[str] = []
    # every row against the baseline, then the other rows against the grounded one (transferred masks): the gap
    # between transferred and true, wrong-source or no masks, per seed with its test-set interval
    comparisons = [(v, "baseline") for v in STUDY_ROWS if v != "baseline"] + [
        (v, "grounded") for v in VS_GROUNDED
    ]
    for variant, reference in comparisons:
        base = _by_seed(rows_runs.get(reference, []))
        other = _by_seed(rows_runs.get(variant, []))
        seeds = [s for s in base if s in other]
        pairs, used = [], []
        for seed in seeds:
            a, b = base[seed].per_image(task), other[seed].per_image(task)
            if a is not None and b is not None:
                pairs.append((a, b))
                used.append(seed)
        if not pairs:
            continue
        res = paired_bootstrap(pairs, k, num)
        label = f"{variant} − {reference}"
        if res[f"R@{k}_undefined"]:
            undefined.append(f"{label}: {res[f'R@{k}_undefined']}")
        for i, seed in enumerate(used):
            a, b = base[seed].detector_id, other[seed].detector_id
            shown = f"{seed} (detectors differ)" if a is not None and b is not None and a != b else seed
            rows.append([label, shown] + [
                _signed(x) for m in (f"mR@{k}", f"R@{k}")
                for x in (res[m][i], res[f"{m}_low"][i], res[f"{m}_high"][i])
            ] + [res["images"], ""])  # fmt: skip
        if len(pairs) > 1:
            rows.append([label, f"mean of {len(pairs)}"] + [
                _signed(res[f"{m}{suffix}"]) for m in (f"mR@{k}", f"R@{k}")
                for suffix in ("_mean", "_mean_low", "_mean_high")
            ] + [res["images"], ""])  # fmt: skip
            # the spread the bootstrap does not see: the per-seed differences as a sample of training runs
            cells: list[Any] = []
            for m in (f"mR@{k}", f"R@{k}"):
                mean, half, _ = seed_t_test(res[m])
                cells += [_signed(mean), _signed(mean - half), _signed(mean + half)]
            p_value = seed_t_test(res[f"mR@{k}"])[2]
            rows.append([label, f"over {len(pairs)} seeds (t)", *cells, res["images"], format_p(p_value)])
    note = (
        f"Difference in points of recall; 'low'/'high': the 95 % percentile interval of {num} paired bootstrap "
        "resamples of the test images (the same resample for both runs of a pair, and for every seed in the "
        "'mean' line). It measures test-set sampling only. The 'over n seeds (t)' line measures the spread over "
        "training runs instead: the per-seed differences' mean with its 95 % Student-t interval, and p of the "
        "two-sided paired t-test over seeds (H0: mean difference 0)."
    )
    if undefined:
        note += (
            f" Resamples that drew no image with a GT relation (R@{k} undefined; a tiny test set) are left out of "
            f"R@{k}'s percentiles — of {num}: " + "; ".join(undefined) + "."
        )
    name = f"study_bootstrap_{_study_slug(key)}"
    return Table(f"Study: paired bootstrap, {_study_name(key)}", header, rows, name, note)


def _signed_cell(cell: Any) -> str:
    """A Δ cell (mean ± spread) with the sign written out: ``+4.5 ± 13.0``."""
    if not isinstance(cell, Cell) or cell.mean is None:
        return MISSING
    return f"{cell.mean:+.1f}" if cell.spread is None else f"{cell.mean:+.1f} ± {cell.spread:.1f}"


def table_study_summary(
    key: StudyKey,
    study: Table,
    predicates: Table,
    swaps: Table | None,
    bootstrap: Table,
    detectors: str = "",
) -> Table:
    """One line per study row, gathered from the study's other tables (so every number is theirs): seeds,
    mR@50 / R@50 / zsR@50 (mean ± 95 % t-interval), the per-seed Δ mR@50 with its paired-bootstrap interval, the
    over-seeds Δ (t) with its p, the Δ of the mask-decided and box-decided predicates' mean R@50, and the
    change of mR@50 when the trained model is tested with all-zero masks (the swap to 'empty')."""
    k = STUDY_K
    col = {h: i for i, h in enumerate(study.header)}
    pcol = {h: i for i, h in enumerate(predicates.header)}
    pline = {row[0]: row for row in predicates.rows}
    rows = []
    for line in study.rows:
        variant, seeds = line[0], line[-1]
        if not seeds:
            continue
        cells = [line[col[f"mR@{k}"]], line[col[f"R@{k}"]], line[col[f"zsR@{k}"]]]
        per_seed, over, p, mask, box, empty = MISSING, MISSING, MISSING, MISSING, MISSING, MISSING
        if variant != "baseline":
            mine = [r for r in bootstrap.rows if r[0] == f"{variant} − baseline"]
            per = [r for r in mine if not str(r[1]).startswith(("mean ", "over "))]
            if per:
                per_seed = " / ".join(f"{r[1]}: {r[2]} [{r[3]}, {r[4]}]" for r in per)
            for r in mine:
                if str(r[1]).startswith("over "):
                    over, p = f"{r[2]} [{r[3]}, {r[4]}]", r[-1]
            if f"Δ {variant}" in pcol:
                mask = _signed_cell(pline["mean, mask-decided"][pcol[f"Δ {variant}"]])
                box = _signed_cell(pline["mean, box-decided"][pcol[f"Δ {variant}"]])
            if swaps is not None:
                empty_col = swaps.header.index(f"→ {SWAP_NAMES['empty']}")
                for r in swaps.rows:
                    if r[0].split(" (")[0] == variant and r[1] == f"mR@{k}":
                        empty = _signed_cell(r[empty_col])
        rows.append([variant, seeds, *cells, per_seed, over, p, mask, box, empty])
    header = ["Row", "seeds", f"mR@{k}", f"R@{k}", f"zsR@{k}", f"Δ mR@{k} per seed [bootstrap 95 %]",
              "Δ over seeds (t)", "p", "Δ mask-decided", "Δ box-decided", f"all-zero masks at test (Δ mR@{k})"]  # fmt: skip
    note = (
        "The study's other tables on one line per row: recall mean ± 95 % t-interval over seeds; per seed the "
        "difference from the baseline of the same seed with its paired-bootstrap interval over test images; over "
        "seeds the mean difference with its 95 % t-interval and the paired t-test's p; the mask-decided and "
        f"box-decided predicates' mean R@{k} minus the baseline's; the change of mR@{k} when the row's trained "
        "weights are tested with all-zero masks."
    )
    if detectors:  # detector_note: which frozen detector each seed's runs used
        note += " " + detectors
    name = f"summary_study_{_study_slug(key)}"
    return Table(f"Study summary: {_study_name(key)}", header, rows, name, note)


# ------------------------------------------------------------------------------------------------ recorded values
RECORDED_COLUMNS = ("model", "detector", "task", "row", "seed", f"mR@{STUDY_K}", "note")
# optional: the runs' training length as :attr:`Run.schedule` writes it (needed where the runs given with the
# recorded values trained one model, detector and task for several lengths)
RECORDED_SCHEDULE = "schedule"


def load_recorded(path: Path) -> dict[StudyKey, dict[str, dict[int, float]]]:
    """Per-seed mR@50 (in %) of study runs whose directories no longer exist, from a CSV with the columns
    :data:`RECORDED_COLUMNS` (``note``: where the value comes from) → {(model, detector, task): {row: {seed:
    fraction}}} (+ the optional column ``schedule``, the key's fourth part; "" without it). A missing column, an
    unknown row, a seed or value that is no number, or the same run twice is an error naming the file and line."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in RECORDED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: recorded study values need the columns {', '.join(RECORDED_COLUMNS)}; "
                f"missing {', '.join(missing)}"
            )
        out: dict[StudyKey, dict[str, dict[int, float]]] = {}
        for line, rec in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            if rec["row"] not in STUDY_ROWS:
                raise ValueError(f"{where}: row {rec['row']!r} is not a study row ({', '.join(STUDY_ROWS)})")
            try:
                seed, value = int(rec["seed"]), float(rec[f"mR@{STUDY_K}"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}: seed must be an integer and mR@{STUDY_K} a number in %, got "
                    f"{rec['seed']!r}, {rec[f'mR@{STUDY_K}']!r}"
                ) from None
            if not 0 <= value <= 100:
                raise ValueError(f"{where}: mR@{STUDY_K} {value} is not a percentage (0-100)")
            key = (rec["model"], rec["detector"], rec["task"], (rec.get(RECORDED_SCHEDULE) or "").strip())
            seeds = out.setdefault(key, {}).setdefault(rec["row"], {})
            if seed in seeds:
                raise ValueError(f"{where}: {rec['row']} seed {seed} is listed twice")
            seeds[seed] = value / 100
    return out


def table_study_over_seeds(
    key: StudyKey, rows_runs: dict[str, list[Run]], recorded: dict[str, dict[int, float]], checkpoint: str
) -> list[Table]:
    """The study's over-seeds line with runs that are gone: per row, the recorded per-seed mR@50
    (:func:`load_recorded`) together with the runs found, a recorded value taking the place of a run of the same
    row and seed (the earlier runs were paired with the earlier baselines, so the pairs stay as they were).
    Per row: the seeds, mR@50 mean ± 95 % t-interval, the per-seed differences from the baseline of the same
    seed, their mean ± t-interval and the paired t-test's p. A second table sets each recorded value beside the
    run found for the same row and seed (a re-run: how far two trainings of one seed land apart)."""
    task, k = key[2], STUDY_K
    merged: dict[str, dict[int, tuple[float, bool]]] = {}
    reruns: list[list[Any]] = []
    for variant in STUDY_ROWS:
        values: dict[int, tuple[float, bool]] = {}
        for run in rows_runs.get(variant, []):
            v = run.value(task, f"mR@{k}")
            if run.seed is not None and v is not None:
                values.setdefault(int(run.seed), (v, False))
        for seed, v in recorded.get(variant, {}).items():
            if seed in values:
                disk = values[seed][0]
                reruns.append(
                    [
                        variant,
                        seed,
                        f"{100 * v:.2f}",
                        f"{100 * disk:.2f}",
                        f"{round(100 * (disk - v), 2) + 0.0:+.2f}",
                    ]
                )
            values[seed] = (v, True)
        if values:
            merged[variant] = dict(sorted(values.items()))
    plain = {variant: {s: v for s, (v, _) in values.items()} for variant, values in merged.items()}
    base, grounded = plain.get("baseline", {}), plain.get("grounded", {})
    rows: list[list[Any]] = []
    for variant, values in merged.items():
        mine = plain[variant]
        cell = IntervalCell()
        for v in mine.values():
            cell.add(v)
        seeds = " ".join(f"{s}{'*' if rec else ''}" for s, (_, rec) in values.items())
        per_seed, over, p_text = _paired_over_seeds(mine, base if variant != "baseline" else {})
        _, over_g, p_g = _paired_over_seeds(mine, grounded if variant in VS_GROUNDED else {})
        rows.append([variant, seeds, len(values), cell, per_seed, over, p_text, over_g, p_g])
    note = (
        f"mR@{k} (%) of the {checkpoint} weights per seed: the runs found and the recorded values (seeds marked *; "
        "a recorded value replaces a run of the same row and seed). Mean ± 95 % t-interval over the seeds; Δ: "
        "row − baseline of the same seed, over the seeds with both, with the two-sided paired t-test's p; "
        "'vs grounded': the same against the grounded (transferred-mask) run of the same seed — the gap between "
        "transferred and true, wrong-source or no (empty: all-zero) masks."
    )
    name = f"study_over_seeds_{_study_slug(key)}"
    header = [
        "Row", "seeds (* recorded)", "n", f"mR@{k}", f"per-seed Δ mR@{k}", "Δ over seeds (t)", "p",
        "Δ vs grounded (t)", "p vs grounded",
    ]  # fmt: skip
    out = [Table(f"Study: over seeds with recorded values, {_study_name(key)}", header, rows, name, note)]
    if reruns:
        out.append(Table(
            f"Study: recorded values and re-runs of the same seed, {_study_name(key)}",
            ["Row", "seed", f"recorded mR@{k}", f"re-run mR@{k}", "re-run − recorded"], reruns,
            f"study_reruns_{_study_slug(key)}",
            "Runs found for a row and seed that the recorded values also hold (the table above uses the recorded "
            "value): the spread between two trainings of one seed on the same code.",
        ))  # fmt: skip
    return out


def _paired_over_seeds(values: dict[int, float], ref: dict[int, float]) -> tuple[str, str, str]:
    """Per-seed differences ``values − ref`` (fractions) over the seeds both hold, as printed text: the per-seed
    list, the mean with its 95 % t-interval, and the two-sided paired t-test's p; MISSING where no seed pairs."""
    diffs = {s: v - ref[s] for s, v in values.items() if s in ref}
    if not diffs:
        return MISSING, MISSING, MISSING
    mean, half, p = seed_t_test(list(diffs.values()))
    per_seed = " / ".join(f"{s}: {_signed(d)}" for s, d in diffs.items())
    over = (
        _signed(mean)
        if math.isnan(half)
        else f"{_signed(mean)} [{_signed(mean - half)}, {_signed(mean + half)}]"
    )
    return per_seed, over, format_p(p)


def mask_decided_first(names: list[str]) -> list[int]:
    """The predicate indices with the mask-decided predicates (:data:`MASK_PREDICATES`) first, then the
    box-decidable ones, each in the dataset's order — the order of the study's per-predicate table and figure."""
    return sorted(range(len(names)), key=lambda i: names[i] not in MASK_PREDICATES)


def plot_study_predicates(key: StudyKey, rows_runs: dict[str, list[Run]], path: Path) -> Path | None:
    """Per-predicate R@50 bars: baseline vs. Table 4's partial rows vs. grounded vs. oracle(s) vs. the all-zero-mask
    control (those present; not the shuffled row), mean over seeds with the 95 % t-interval as error bars;
    mask-decided predicates first and marked (bold label, shaded). None without data."""
    task = key[2]
    count = _num_predicates(rows_runs, task)
    shown = [v for v in STUDY_ROWS if v != "shuffled" and rows_runs.get(v)]
    if count == 0 or not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = predicate_names([r for rs in rows_runs.values() for r in rs], task, count)
    order = mask_decided_first(names)  # as the per-predicate table lists them
    names = [names[i] for i in order]
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * count + 2.0) + 2.5, 4.0))
    for c, n in enumerate(names):
        if n in MASK_PREDICATES:
            ax.axvspan(c - 0.45, c + 0.45, color="#F2E2C4", zorder=0)
    for j, variant in enumerate(shown):
        cells = _per_predicate_cells(rows_runs[variant], task, count)
        cells = [cells[i] for i in order]
        x = np.arange(count) + (j - (len(shown) - 1) / 2) * width
        means = [c.mean if c.mean is not None else 0.0 for c in cells]
        errs = [c.spread if c.spread is not None else 0.0 for c in cells]
        n_runs = len(rows_runs[variant])
        ax.bar(x, means, width, yerr=errs if n_runs > 1 else None, capsize=2, color=ROW_COLORS[variant], zorder=2,
               label=f"{LEGEND_NAMES.get(variant, variant)} ({n_runs} run{'s' if n_runs != 1 else ''})")  # fmt: skip
    ax.set_xticks(range(count))
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    for label in ax.get_xticklabels():
        if label.get_text() in MASK_PREDICATES:
            label.set_fontweight("bold")
    ax.set_ylabel(f"R@{STUDY_K} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-predicate R@{STUDY_K}, {_study_name(key)}; error bars: 95 % t-interval over seeds",
                 fontsize=9)  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="#F2E2C4", label="mask-decided predicate (bold)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_study_curves(key: StudyKey, rows_runs: dict[str, list[Run]], path: Path) -> Path | None:
    """Validation curves of every study row: val mR@50 and val R@50 against the training step, one thin line
    per seed and the mean over seeds (thick; :func:`mean_curve`: at the steps every seed of the row validated,
    give or take :data:`CURVE_STEP_TOLERANCE`). None without data."""
    return _plot_curves(
        {"": rows_runs}, f"validation curves, {_study_name(key)}; thin lines: single seeds", path
    )


def plot_study_schedules(
    key: StudyKey, by_schedule: dict[str, dict[str, list[Run]]], path: Path
) -> Path | None:
    """The validation curves of one model, detector and task trained for several lengths, in one figure: each
    row's colour as in :func:`plot_study_curves`, one line style per schedule — where the shorter schedule
    stopped, and what the longer one reached. None without data."""
    model, det, task = key[:3]
    title = (
        f"validation curves by schedule, {_label(model, MODEL_NAMES)} {TASK_NAMES.get(task, task)} ({det})"
    )
    return _plot_curves(by_schedule, f"{title}; thin lines: single seeds", path)


def _plot_curves(series: dict[str, dict[str, list[Run]]], title: str, path: Path) -> Path | None:
    """val mR@50 | val R@50 against the step; ``series``: label (e.g. a schedule; "" for one) → row → runs."""
    styles = ("-", "--", ":", "-.")
    drawn: list[tuple[str, str, list[tuple[Run, dict]]]] = []
    for label, rows_runs in series.items():
        for variant in STUDY_ROWS:
            runs = [
                (r, {m: r.val_curve(f"{m}@{STUDY_K}") for m in ("mR", "R")})
                for r in rows_runs.get(variant, [])
            ]
            runs = [(r, c) for r, c in runs if c["mR"]]
            if runs:
                drawn.append((label, variant, runs))
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {label: styles[i % len(styles)] for i, label in enumerate(series)}
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.0 if len(series) == 1 else 4.6))
    for ax, metric in zip(axes, ("mR", "R")):
        for label, variant, runs in drawn:
            color = ROW_COLORS.get(variant, "#000000")
            per_seed = [dict(c[metric]) for _, c in runs]
            for points in per_seed:
                ax.plot(list(points), [100 * v for v in points.values()], color=color, alpha=0.25, lw=0.8,
                        ls=style[label])  # fmt: skip
            common, means = mean_curve(per_seed)
            name = _curve_legend(variant, label, [r.seed for r, _ in runs])
            ax.plot(common, means, color=color, lw=2.2, marker="o", ms=3, ls=style[label], label=name)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"val {metric}@{STUDY_K} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# Validations of one schedule logged this many steps apart count as the same point of the mean curve: Lightning logs
# a mid-epoch validation (val_check_interval 0.5) at the step before the one an end-of-epoch validation (1.0) has.
CURVE_STEP_TOLERANCE = 2


def mean_curve(
    per_seed: list[dict[int, float]], tolerance: int = CURVE_STEP_TOLERANCE
) -> tuple[list[int], list[float]]:
    """The thick curve of a row: at each validation step of its sparsest seed, the mean (in %) over the seeds of
    each seed's validation nearest that step — only where every seed has one within ``tolerance`` steps (seeds
    validated at other intervals or one step apart still meet; a step some seed lacks is left out)."""
    if not per_seed or not all(per_seed):
        return [], []
    steps, means = [], []
    for step in sorted(min(per_seed, key=len)):
        nearest = [min(p, key=lambda s: (abs(s - step), s)) for p in per_seed]
        if all(abs(n - step) <= tolerance for n in nearest):
            steps.append(step)
            means.append(100 * statistics.fmean(p[n] for p, n in zip(per_seed, nearest)))
    return steps, means


def _curve_legend(variant: str, label: str, seeds: list[Any]) -> str:
    """Legend entry of a row's thick curve: the mean of its seeds' curves, or — with one run — that run itself."""
    what = f"mean of {len(seeds)}" if len(seeds) > 1 else f"1 run, seed {seeds[0]}"
    return f"{LEGEND_NAMES.get(variant, variant)}{', ' + label if label else ''} ({what})"


def tables_study(
    runs: list[Run],
    bootstrap: int,
    recorded: dict[StudyKey, dict[str, dict[int, float]]] | None = None,
    checkpoint: str = "best",
) -> list[Table]:
    """The study's tables per (model, detector, task[, schedule]) (:func:`study_groups`); with ``recorded``
    (:func:`load_recorded`) also the over-seeds table that merges them with the runs (:func:`table_study_over_seeds`)."""
    found = _study_groups_by_schedule(runs)
    full: dict[StudyKey, dict[str, dict[int, float]]] = {}
    for key, values in (recorded or {}).items():
        lengths = sorted({k[3] for k in found if k[:3] == key[:3]})
        if not key[3]:  # no schedule given: the runs' one schedule for this model, detector and task
            if len(lengths) > 1:
                raise ValueError(
                    f"recorded study values of {' '.join(key[:3])} name no schedule, but the runs trained it for "
                    f"several lengths ({'; '.join(lengths)}): add a '{RECORDED_SCHEDULE}' column to the CSV naming "
                    "the one each value belongs to"
                )
            key = (*key[:3], lengths[0] if lengths else "")
        elif lengths and key[3] not in lengths:
            raise ValueError(
                f"recorded study values of {' '.join(key[:3])} name the schedule {key[3]!r}, which none of the "
                f"runs given has (theirs: {'; '.join(repr(x) for x in lengths)}): write it as the runs' "
                "tables name it"
            )
        full[key] = values
    shown = _shown_keys([*found, *full])
    groups = {shown[k]: v for k, v in found.items()}
    recorded = {shown[k]: v for k, v in full.items()}
    out = []
    for key in sorted({*groups, *recorded}, key=_study_order):
        rows_runs = groups.get(key, {})
        if key in recorded:
            out += table_study_over_seeds(key, rows_runs, recorded[key], checkpoint)
        if not rows_runs or (
            not any(v != "baseline" for v in rows_runs) and "baseline" in rows_runs and len(rows_runs) == 1
        ):
            continue  # baselines alone are no study (Tables 1 and 4 show them)
        study, predicates = table_study(key, rows_runs), table_study_predicates(key, rows_runs)
        swaps = table_study_swaps(key, rows_runs)
        boot = table_study_bootstrap(key, rows_runs, bootstrap) if bootstrap > 0 else None
        # the one-line-per-row summary first; it needs the bootstrap's per-seed intervals
        if boot is not None:
            out.append(table_study_summary(key, study, predicates, swaps, boot, detector_note(rows_runs)))
        out += [study, predicates]
        out += tables_study_objects(key, rows_runs)
        if (steps := table_study_steps(key, rows_runs)) is not None:
            out.append(steps)
        if swaps is not None:
            out.append(swaps)
        if boot is not None:
            out.append(boot)
    return out


def failures(runs: list[Run]) -> list[str]:
    out = []
    for run in runs:
        if run.failure is not None:
            out.append(f"- {run.path}: FAILED ({run.failure})")
        elif not run.metrics and not run.detector_metrics:
            out.append(f"- {run.path}: no metrics.json (unfinished?)")
    return out


def runs_table(runs: list[Run]) -> Table:
    """Every run on one line per tested task: its settings and the headline numbers (CSV only)."""
    header = [
        "run",
        "status",
        "experiment",
        "model",
        "detector",
        "detector file",
        "joint",
        "node",
        "edge",
        "refine",
        "row",
        "seed",
    ]
    metrics = [f"{m}@{k}" for m in ("R", "mR", "zsR") for k in KS] + ["mask_AP_unrefined", "mask_AP_refined"]
    rows = []
    for run in runs:
        status = "failed" if run.failure else ("done" if run.metrics else "no metrics")
        settings = [str(run.path), status, run.get("experiment_name", "experiment"), run.model, run.detector,
                    run.detector_id, run.joint, run.node, run.edge, run.refine, run.row, run.seed]  # fmt: skip
        settings = ["" if v is None else v for v in settings]
        for task in run.tasks or [None]:
            cells = [Cell() for _ in metrics]
            if task is not None:
                for cell, m in zip(cells, metrics):
                    cell.add(run.value(task, m))
            rows.append([*settings, task or "", *cells])
    return Table("All runs", [*header, "task", *metrics], rows, "runs")


def collect(
    paths: list[Path], bootstrap: int = 1000, checkpoint: str = "best", recorded: Path | None = None
) -> tuple[list[Run], list[Table], list[str]]:
    """Every table of the runs at or below ``paths``; ``bootstrap``: resamples of the study's paired
    bootstrap (0: none); ``checkpoint``: the runs' own tests (``best``) or their final-weights re-tests (``last``);
    ``recorded``: a CSV of per-seed study values of runs that are gone (:func:`load_recorded`)."""
    recorded_values = load_recorded(recorded) if recorded is not None else None
    runs = [load_run(p, checkpoint) for p in find_job_dirs(paths)]
    tables = [
        table_recall(runs, "mR", KS, "Table 1: mean recall mR@K (%)", "table1_mean_recall"),
        table_mask_ap(runs),
        table_recall(runs, "zsR", (20, 100), "Table 3: zero-shot recall zsR@K (%)", "table3_zero_shot"),
        *tables_ablation(runs),
        *tables_study(runs, bootstrap, recorded_values, checkpoint),
        table_detectors(runs),
        table_job_time(runs),
    ]
    return runs, tables, failures(runs)


def study_figures(runs: list[Run], out: Path) -> list[Path]:
    """Per study group: ``study_per_predicate_<model>_<task>_<detector>.png`` (:func:`plot_study_predicates`) and
    ``study_curves_<model>_<task>_<detector>.png`` (:func:`plot_study_curves`); where a model, detector and task
    trained for several schedules, ``study_curves_schedules_<model>_<task>_<detector>.png`` overlays them
    (:func:`plot_study_schedules`)."""
    paths = []
    groups = study_groups(runs)
    for key, rows_runs in groups.items():
        for plot, name in ((plot_study_predicates, "per_predicate"), (plot_study_curves, "curves")):
            path = plot(key, rows_runs, out / f"study_{name}_{_study_slug(key)}.png")
            if path is not None:
                paths.append(path)
    for base in sorted({k[:3] for k in groups if k[3]}, key=lambda k: _study_order((*k, ""))):
        by_schedule = {k[3]: v for k, v in groups.items() if k[:3] == base}
        key = (*base, "")
        path = plot_study_schedules(key, by_schedule, out / f"study_curves_schedules_{_study_slug(key)}.png")
        if path is not None:
            paths.append(path)
    return paths


def render(runs: list[Run], tables: list[Table], failed: list[str]) -> str:
    parts = [f"# sgseg results ({len(runs)} runs)", ""]
    parts += [t.markdown() for t in tables]
    if failed:
        parts += ["### Failed or unfinished runs", "", *failed, ""]
    return "\n".join(parts)


# What a run directory holds that the tables, the bootstrap, the curves and the job times are computed from
# (a few hundred KB a run, against ~165 MB with its checkpoints): ``--archive`` copies these and nothing else.
ARCHIVE_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "metrics.json",
    "*_per_image.npz",
    "*_per_predicate_recall.csv",
    "timing.json",
    "detector_source.json",
    "train.log",
    "FAILED.txt",
    "csv/version_*/metrics.csv",
    "detector/detector_metrics.json",
    "detector/timing.json",
    "evaluate/*/evaluation.json",
    "evaluate/*/metrics.json",
    "evaluate/*/*_per_image.npz",
    "evaluate/*/*_per_predicate_recall.csv",
)


def archive_runs(paths: list[Path], dest: Path) -> list[Path]:
    """Copy the small files of every run at or below ``paths`` (:data:`ARCHIVE_FILES`) to ``dest``, keeping each
    run's folder name and its place below the argument it was found under (``dest/<arg name>/<job subpath>``),
    so that ``python -m sgseg.results dest ...`` gives the same tables on any machine — the run folders themselves
    (checkpoints, pictures) stay where they are. Files already in the archive are replaced by the run's current
    ones (a later re-test updates it); two arguments with the same folder name are refused, as they would mix;
    a run that already is the archive's folder is left as it is. Returns the archived run folders."""
    names: dict[str, Path] = {}
    for path in paths:
        other = names.setdefault(path.resolve().name, path)
        if other != path:
            raise ValueError(
                f"sgseg.results --archive: {other} and {path} have the same folder name and would be archived "
                "into one folder; archive them in two calls with different destinations"
            )
    out: list[Path] = []
    for path in paths:
        jobs = find_job_dirs([path])
        for job in jobs:
            target = dest / path.resolve().name / job.relative_to(path)
            # a run of the archive itself: already there, nothing to copy
            if target.resolve() == job.resolve():
                out.append(target)
                continue
            files = sorted({f for pattern in ARCHIVE_FILES for f in job.glob(pattern) if f.is_file()})
            for f in files:
                to = target / f.relative_to(job)
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, to)
            out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="run directories, multirun directories or folders above"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.md, the CSVs and the figures go (default: the one directory given, when it is a "
        "sweep or a folder of runs; required with several directories or a single run directory)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="paired bootstrap resamples of the study tables (0: off)"
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best: each run's own test (best-validated weights); last: its final-weights re-test "
        "(python -m sgseg.evaluate run_dir=RUN ckpt=last), also for the mask-swap table",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        metavar="DEST",
        help="instead of tables: copy the runs' small files (configs, metrics, per-image counts, re-tests, CSV "
        "logs, timings; no checkpoints or pictures) to DEST/<dir name>/..., from which the tables can be made "
        "again on any machine",
    )
    parser.add_argument(
        "--recorded",
        type=Path,
        default=None,
        metavar="CSV",
        help="per-seed study mR@50 of runs that are gone (columns model,detector,task,row,seed,mR@50,note), "
        "merged with the runs into an over-seeds table",
    )
    args = parser.parse_args(argv)
    if args.out is None and args.archive is None:
        if len(args.dirs) > 1 or _is_job_dir(args.dirs[0]):
            parser.error(
                f"--out DIR is needed with {'several directories' if len(args.dirs) > 1 else 'a run directory'}: "
                f"the tables would otherwise be written into {args.dirs[0]}, a run's own folder or an arbitrary "
                "one of the given folders (e.g. an archived run under docs/runs)"
            )
        args.out = args.dirs[0]
    none_found = f"sgseg.results: no run directories under {', '.join(map(str, args.dirs))}"
    if args.archive is not None:
        archived = archive_runs(args.dirs, args.archive)
        if not archived:
            print(none_found, file=sys.stderr)
            return 1
        print(f"archived {len(archived)} runs into {args.archive}")
        return 0
    runs, tables, failed = collect(args.dirs, args.bootstrap, args.checkpoint, args.recorded)
    if not runs:
        print(none_found, file=sys.stderr)
        return 1
    text = render(runs, tables, failed)
    print(text)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    for table in [*tables, runs_table(runs)]:
        table.write_csv(out / f"{table.name}.csv")
    figures = study_figures(runs, out)
    print(f"written: {out / 'results.md'}, {len(tables) + 1} CSV files and {len(figures)} figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
