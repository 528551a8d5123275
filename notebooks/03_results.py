# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Results: the paper's tables from a sweep, and the ablation figure
#
# Reads every job of a sweep directory (a Hydra multirun of `python -m sgseg.train -m …`, e.g.
# `sweep=ablation`) with `sgseg.results` — the same code that writes `results.md` — and draws
# the Table-4 ablation (mR@K per row, mean ± std over seeds) and Table 2 (COCO mask AP, unrefined vs. refined).
#
# **Which sweep**: `SGSEG_SWEEP_DIR` if set, else the newest `logs/*/multiruns/*`.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import sgseg
from sgseg import results as cr

REPO = Path(sgseg.__file__).resolve().parent.parent
FIGURES = Path(os.environ.get("SGSEG_FIGURES") or tempfile.mkdtemp(prefix="sgseg_fig_"))
FIGURES.mkdir(parents=True, exist_ok=True)


def newest_sweep(root: Path) -> Path:
    sweeps = sorted(root.glob("*/multiruns/*"), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise FileNotFoundError(f"no sweep under {root}/*/multiruns; run one (python -m sgseg.train -m …) "
                                "or set SGSEG_SWEEP_DIR")
    return sweeps[-1]


SWEEP_DIR = Path(os.environ["SGSEG_SWEEP_DIR"]) if os.environ.get("SGSEG_SWEEP_DIR") else newest_sweep(REPO / "logs")
runs, tables, failed = cr.collect([SWEEP_DIR])
print(f"{SWEEP_DIR}: {len(runs)} runs, {len(failed)} failed or unfinished")
assert runs, f"no run directories in {SWEEP_DIR}"

# %%
display(Markdown(cr.render(runs, tables, failed)))

# %% [markdown]
# ## The ablation figure (paper Table 4)

# %%
ablations = [t for t in tables if t.name.startswith("table4_") and t.rows]
assert ablations, "no ablation rows (runs without `row=` / ablation_row)"
fig, axes = plt.subplots(1, len(ablations), figsize=(7 * len(ablations), 3.8), squeeze=False)
for ax, table in zip(axes[0], ablations):
    rows = [r for r in table.rows if any(c.values for c in r[1:4])]
    x = np.arange(len(rows))
    for offset, (col, k) in zip((-0.27, 0, 0.27), enumerate(cr.KS, start=1)):
        means = [r[col].mean or 0.0 for r in rows]
        stds = [r[col].std or 0.0 for r in rows]
        ax.bar(x + offset, means, 0.27, yerr=stds, capsize=3, label=f"mR@{k}")
    ax.set_xticks(x, [f"{r[0]}\n({r[-1]} seed{'s' if r[-1] != 1 else ''})" for r in rows], fontsize=8)
    ax.set_ylabel("mR@K (%)")
    ax.set_title(table.title.removeprefix("Table 4: "), fontsize=10)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "03_ablation.png", dpi=100)
plt.show()

# %% [markdown]
# ## COCO mask AP, unrefined vs. refined (paper Table 2)
# Every run trained with refinement scores the COCO val masks in all three settings of Table 2 (GT boxes +
# GT labels, GT boxes + predicted labels, detected boxes): `<task>/mask_<setting>_AP_<unrefined|refined>`.

# %%
settings = {"predcls": "GT boxes + labels", "sgcls": "GT boxes, pred. labels", "sgdet": "detected boxes"}
values = {(s, kind): [] for s in settings for kind in ("unrefined", "refined")}
for run in cr._finished(runs):
    if run.refine is not True:
        continue
    for task in run.tasks:
        for s in settings:
            for kind in ("unrefined", "refined"):
                v = run.value(task, f"mask_{s}_AP_{kind}")
                if v is not None:
                    values[(s, kind)].append(100 * v)
if any(values.values()):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(settings))
    for offset, kind, color in ((-0.2, "unrefined", "#C7D3E6"), (0.2, "refined", "#4C72B0")):
        means = [np.mean(values[(s, kind)]) if values[(s, kind)] else 0.0 for s in settings]
        ax.bar(x + offset, means, 0.4, label=kind, color=color)
        for xi, m in zip(x, means):
            ax.text(xi + offset, m, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, list(settings.values()), fontsize=8)
    ax.set_ylabel("COCO val mask AP (%)")
    ax.legend(fontsize=8)
    n = len({r.path for r in cr._finished(runs) if r.refine is True})
    ax.set_title(f"transferred masks, unrefined vs. refined ({n} run{'s' if n != 1 else ''})")
    fig.tight_layout()
    fig.savefig(FIGURES / "03_mask_ap.png", dpi=100)
    plt.show()
else:
    print("no run with refine=true in this sweep: nothing to compare")
