"""Result tables in the paper's layout from sgseg run directories.

    python scripts/collect_results.py RUN_OR_SWEEP_DIR... [--out DIR]

Where this sits: after training. Each argument is a run directory (``python -m sgseg.train``), a Hydra
multirun directory (its job subdirectories are found here) or any folder above them. A run is read from
``metrics.json`` (flat keys ``<task>/mR@50`` …, fractions), ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``
(model, task, grounding, detector, ablation row, seed) and ``detector/detector_metrics.json`` (stage 1);
``FAILED.txt`` marks a sweep job that failed. Printed and written to ``DIR/results.md`` plus one CSV per table:

- Table 1: mR@20/50/100 per task, baseline vs. seg-grounded, per model and detector,
- Table 2: COCO val mask AP of the transferred masks without and with refinement,
- Table 3: zsR@20/100 per task, baseline vs. seg-grounded,
- Table 4: the ablation rows (``row=``/``ablation_row``) as mean ± std over seeds of mR@20/50/100,
- the stage-1 detectors (VG mAP@50, COCO box / mask AP) and the failed or unfinished runs.

Numbers are percentages; a cell averages the runs (seeds) that share its row, "a ± s" with the sample standard
deviation (n - 1) when there are several; "—" when no run has the value (missing, NaN, or never run).
"Baseline" = no node/edge grounding, no refinement, not on the joint detector; "seg-grounded" = node grounding,
Gaussian edge grounding and refinement. Other configurations show up in Table 4 and in runs.csv only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS = ("predcls", "sgcls", "sgdet")
TASK_NAMES = {"predcls": "PredCls", "sgcls": "SGCls", "sgdet": "SGDet"}
MODEL_NAMES = {"motif": "MOTIF", "vctree": "VCTree"}
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
    failure: str | None = None
    # the config-group options the job was composed with (.hydra/hydra.yaml hydra.runtime.choices)
    choices: dict[str, Any] = field(default_factory=dict)

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

    def choice(self, group: str, dotted: str) -> str | None:
        """A config-group option (``model/grounding/edge=none``): the job's override, else the option it was
        composed with; runs from before the config groups: the string value at ``dotted``."""
        for source in (self.overrides, self.choices):
            if source.get(group) is not None:
                return str(source[group])
        value = self.get(dotted)
        return None if value is None or isinstance(value, dict) else str(value)

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
        ):
            return "seg-grounded"
        return None

    def value(self, task: str, key: str) -> float | None:
        """``metrics.json[task/key]`` as a float, None when absent, NaN or not a number."""
        v = self.metrics.get(f"{task}/{key}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            return None
        return float(v)


def _is_job_dir(path: Path) -> bool:
    return (
        (path / ".hydra" / "config.yaml").is_file()
        or (path / "metrics.json").is_file()
        or (path / "FAILED.txt").is_file()
    )


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_job_dirs(paths: list[Path]) -> list[Path]:
    """The run directories at or below ``paths`` (a Hydra multirun dir yields its job subdirs), in order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            print(f"collect_results: {path} is not a directory; skipped", file=sys.stderr)
            continue
        if _is_job_dir(path):
            found.append(path)
            continue
        markers = [*path.rglob(".hydra"), *path.rglob("metrics.json"), *path.rglob("FAILED.txt")]
        jobs = {m.parent for m in markers if _is_job_dir(m.parent)}
        found += sorted(jobs, key=_natural_key)
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def load_run(path: Path) -> Run:
    run = Run(path=path)
    config = _load_yaml(path / ".hydra" / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    run.overrides = _parse_overrides(_load_yaml(path / ".hydra" / "overrides.yaml"))
    hydra_cfg = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = _select(hydra_cfg, "hydra.runtime.choices") if isinstance(hydra_cfg, dict) else None
    run.choices = choices if isinstance(choices, dict) else {}
    run.metrics = _load_json(path / "metrics.json")
    run.detector_metrics = _load_json(path / "detector" / "detector_metrics.json")
    failed = path / "FAILED.txt"
    if failed.is_file():
        lines = [ln for ln in failed.read_text(errors="replace").splitlines() if ln.strip()]
        run.failure = lines[-1].strip() if lines else "failed"
    return run


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

    def __str__(self) -> str:
        if not self.values:
            return MISSING
        return f"{self.mean:.1f}" if self.std is None else f"{self.mean:.1f} ± {self.std:.1f}"


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
        """Mean and std (in %) as two columns per metric; empty where there is no value."""
        header: list[str] = []
        for i, h in enumerate(self.header):
            is_metric = any(isinstance(row[i], Cell) for row in self.rows)
            header += [h, f"{h} std"] if is_metric else [h]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in self.rows:
                out: list[Any] = []
                for i, c in enumerate(row):
                    if isinstance(c, Cell):
                        out += [_num(c.mean), _num(c.std)]
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


def table_recall(runs: list[Run], metric: str, ks: tuple[int, ...], title: str, name: str) -> Table:
    """Tables 1 and 3: one row per (model, detector, variant), columns task × K."""
    groups: dict[tuple[str, str, str], dict[str, Cell]] = {}
    for run in _finished(runs):
        if run.variant is None:
            continue
        key = (run.model or "?", run.detector or "?", run.variant)
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
    for run in _finished(runs):
        if run.row is None:
            continue
        for task in run.tasks:
            key = (run.model or "?", run.detector or "?", task)
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
        name = f"table4_ablation_{model}_{task}_{det}"
        tables.append(Table(title, ["Row"] + [f"mR@{k}" for k in KS] + ["seeds"], rows, name, note))
    if not tables:
        tables.append(
            Table("Table 4: ablation", ["Row"] + [f"mR@{k}" for k in KS] + ["seeds"], [], "table4_ablation")
        )
    return tables


def table_detectors(runs: list[Run]) -> Table:
    """Stage 1: VG box mAP@50 and COCO box/mask AP of the detectors these runs trained.

    "Trained on" comes from the metrics; a config that says otherwise is shown next to it.
    """
    keys = ("vg_map50", "coco_box_ap", "coco_mask_ap")
    groups: dict[tuple[str, str], dict[str, Cell]] = {}
    for run in runs:
        if not run.detector_metrics:
            continue
        # what the detector saw, from its metrics (COCO is validated whenever it was trained on)
        saw_coco = any(k.startswith("val/coco_") for k in run.detector_metrics)
        trained_on = "VG + COCO" if saw_coco else "VG only"
        if run.joint is not None and run.joint != saw_coco:
            trained_on += f" (config: detector.joint={str(run.joint).lower()})"
        cells = groups.setdefault((run.detector or "?", trained_on), {})
        for k in keys:
            v = run.detector_metrics.get(f"val/{k}")
            cells.setdefault(k, Cell()).add(
                float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None
            )
    header = ["Detector", "Trained on", "VG mAP@50", "COCO box AP", "COCO mask AP"]
    rows = [[d, j] + [groups[(d, j)][k] for k in keys] for d, j in sorted(groups)]
    return Table("Stage 1: detectors (validation)", header, rows, "detectors")


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
                    run.joint, run.node, run.edge, run.refine, run.row, run.seed]  # fmt: skip
        settings = ["" if v is None else v for v in settings]
        for task in run.tasks or [None]:
            cells = [Cell() for _ in metrics]
            if task is not None:
                for cell, m in zip(cells, metrics):
                    cell.add(run.value(task, m))
            rows.append([*settings, task or "", *cells])
    return Table("All runs", [*header, "task", *metrics], rows, "runs")


def collect(paths: list[Path]) -> tuple[list[Run], list[Table], list[str]]:
    runs = [load_run(p) for p in find_job_dirs(paths)]
    tables = [
        table_recall(runs, "mR", KS, "Table 1: mean recall mR@K (%)", "table1_mean_recall"),
        table_mask_ap(runs),
        table_recall(runs, "zsR", (20, 100), "Table 3: zero-shot recall zsR@K (%)", "table3_zero_shot"),
        *tables_ablation(runs),
        table_detectors(runs),
    ]
    return runs, tables, failures(runs)


def render(runs: list[Run], tables: list[Table], failed: list[str]) -> str:
    parts = [f"# sgseg results ({len(runs)} runs)", ""]
    parts += [t.markdown() for t in tables]
    if failed:
        parts += ["### Failed or unfinished runs", "", *failed, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="run directories, multirun directories or folders above"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.md and the CSVs go (default: the first directory)",
    )
    args = parser.parse_args(argv)
    runs, tables, failed = collect(args.dirs)
    if not runs:
        print(f"collect_results: no run directories under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    text = render(runs, tables, failed)
    print(text)
    out = args.out if args.out is not None else args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    for table in [*tables, runs_table(runs)]:
        table.write_csv(out / f"{table.name}.csv")
    print(f"written: {out / 'results.md'} and {len(tables) + 1} CSV files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
