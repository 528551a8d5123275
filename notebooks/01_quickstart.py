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
# # 01 · Quickstart: a trained run, its predictions and its numbers
#
# Loads a stage-2 run of `python -m sgseg.train`, predicts the scene graph of a synthetic test image and of a
# real COCO photo (`../shared/data/coco_tiny8/`), draws masks, boxes and the graph, prints the top triplets,
# and plots the per-predicate recall of the run's `metrics.json`.
#
# **Which run**: `SGSEG_RUN_DIR` if set, else the newest run under `logs/` with a checkpoint. A model trained
# on the synthetic benchmark knows 19 synthetic classes, so on the real photo its labels are nonsense by
# construction; the photo shows the real-image path (decoding, resizing, detection, drawing) end to end.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Image, display
from omegaconf import OmegaConf

import sgseg
from sgseg.predict import load_model, newest_run, predict_image
from sgseg.visualize import draw_scene_graph

REPO = Path(sgseg.__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
FIGURES = Path(os.environ.get("SGSEG_FIGURES") or tempfile.mkdtemp(prefix="sgseg_fig_"))
FIGURES.mkdir(parents=True, exist_ok=True)
MIN_SCORE = float(os.environ.get("SGSEG_MIN_SCORE", "0.3"))  # detections below are not drawn


RUN_DIR = Path(os.environ["SGSEG_RUN_DIR"]) if os.environ.get("SGSEG_RUN_DIR") else newest_run(REPO / "logs")
print("run:", RUN_DIR)

# %%
model, cfg, objects, predicates = load_model(RUN_DIR)
data_root = Path(OmegaConf.select(cfg, "data.root"))
data_root = data_root if data_root.is_absolute() else REPO / data_root
print(f"{cfg.model.name} / {cfg.task.name}: {len(objects)} object classes, {len(predicates)} predicates")
print("data:", data_root)


# %%
def predict_and_draw(image: Path, name: str, top_k: int = 8) -> dict:
    r = predict_image(model, cfg, image, top_k=top_k, min_score=MIN_SCORE)
    names = [objects[int(c) - 1] for c in r["labels"]]
    triplets = [(s, o, predicates[c - 1], sc) for s, o, c, sc in r["triplets"]]
    png = draw_scene_graph(r["image"], r["boxes"], names, triplets, FIGURES / f"01_{name}.png", r["masks"],
                           title=image.name)
    display(Image(filename=str(png)))
    print(f"{len(names)} objects; top triplets:")
    for s, o, p, sc in triplets:
        print(f"  {s}:{names[s]:<12} {p:<16} {o}:{names[o]:<12} {sc:.3f}")
    return {"objects": names, "triplets": triplets}


synthetic_image = sorted((data_root / "vg" / "VG_100K").glob("*.jpg"))[0]
synthetic = predict_and_draw(synthetic_image, "synthetic")
assert synthetic["objects"], "no detection on the synthetic image"

# %%
photo = SHARED / "coco_tiny8" / "images" / "000000184324.jpg"  # person / car / bicycle (CC BY 2.0)
real = predict_and_draw(photo, "coco_photo")

# %% [markdown]
# ## The run's numbers
# `metrics.json` holds flat keys such as `predcls/mR@50` (fractions); the per-predicate recall list is
# `predcls/mR_per_predicate@100` (the mR@100 average runs over these).

# %%
from sgseg.lit.run import results_table  # noqa: E402

metrics = json.loads((RUN_DIR / "metrics.json").read_text())
mode = str(cfg.task.name)
print(results_table(metrics, mode))

# %%
k = 100
per_pred = metrics[f"{mode}/mR_per_predicate@{k}"]
ng = metrics.get(f"{mode}/ng-mR_per_predicate@{k}")
order = sorted(range(len(predicates)), key=lambda i: per_pred[i])
fig, ax = plt.subplots(figsize=(6, 0.32 * len(predicates) + 1.2))
y = range(len(order))
if ng is not None:
    ax.barh(y, [100 * ng[i] for i in order], color="#C7D3E6", label=f"ngR@{k} (no graph constraint)")
ax.barh(y, [100 * per_pred[i] for i in order], color="#4C72B0", label=f"R@{k}")
ax.set_yticks(list(y), [predicates[i] for i in order])
ax.set_xlabel("recall (%)")
ax.set_xlim(0, 100)
ax.axvline(100 * metrics[f"{mode}/mR@{k}"], color="k", ls="--", lw=1, label=f"mR@{k}")
ax.set_title(f"{mode}: per-predicate recall at K = {k}")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "01_per_predicate_recall.png", dpi=100)
plt.close(fig)
display(Image(filename=str(FIGURES / "01_per_predicate_recall.png")))  # draw_scene_graph left matplotlib on Agg
seen = [r for r in per_pred if r == r]  # NaN: a predicate without test instances
assert abs(sum(seen) / len(seen) - metrics[f"{mode}/mR@{k}"]) < 1e-6  # mR@K is their mean
