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
# # 02 · Zero-shot mask transfer and the Gaussian edge kernels
#
# 1. The class-similarity matrix **S** (paper Eq. 3–4) on the real VG150 and COCO class vectors
#    (`../shared/data/class-embeddings.glove840b.300d.txt`): a heatmap of the novel VG classes against the
#    COCO sources they draw on, and the top sources of each novel class.
# 2. Transferred vs. true masks of synthetic VG-like test objects (the synthetic benchmark keeps their true
#    masks hidden in `vg/vg_test_masks.json`), through the detector of a trained run.
# 3. A gallery of the Gaussian kernels K(σx, σy, ρ) that blur the masks for the edge grounding.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import sgseg
from sgseg.models.masks.similarity import (
    DEFAULT_ALIASES,
    build_similarity,
    describe,
    load_word_vectors,
    one_to_one_sources,
)

REPO = Path(sgseg.__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
FIGURES = Path(os.environ.get("SGSEG_FIGURES") or tempfile.mkdtemp(prefix="sgseg_fig_"))
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1 · S on the real label spaces
# A VG class whose name is a COCO class (or is aliased to one, e.g. *man* → *person*) copies that channel
# one-to-one; every other ("novel") class takes a softmax over GloVe dot products, entries below 0.05 dropped.

# %%
names = json.loads((SHARED / "class-names.json").read_text())
vg, coco = names["vg150_objects"], names["coco80_objects"]
vectors = load_word_vectors(SHARED / "class-embeddings.glove840b.300d.txt")
S = build_similarity(vg, coco, vectors)
fixed = one_to_one_sources(vg, coco, DEFAULT_ALIASES)
novel = [i for i in range(len(vg)) if i not in fixed]
print(f"S: {tuple(S.shape)}; {len(fixed)} VG classes copied one-to-one, {len(novel)} novel")
assert torch.allclose(S.sum(1), torch.ones(len(vg)), atol=1e-5)

# %%
shown_rows = novel[:40]
cols = sorted({int(j) for i in shown_rows for j in (S[i] > 0).nonzero().flatten()})
fig, ax = plt.subplots(figsize=(0.28 * len(cols) + 2.5, 0.24 * len(shown_rows) + 1.8))
im = ax.imshow(S[shown_rows][:, cols].numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
ax.set_xticks(range(len(cols)), [coco[j] for j in cols], rotation=90, fontsize=7)
ax.set_yticks(range(len(shown_rows)), [vg[i] for i in shown_rows], fontsize=7)
ax.set_title(f"S: the first {len(shown_rows)} novel VG classes × the COCO sources they use")
fig.colorbar(im, ax=ax, fraction=0.03, label="weight")
fig.tight_layout()
fig.savefig(FIGURES / "02_similarity_heatmap.png", dpi=100)
plt.show()

# %%
print("top COCO sources of each novel VG class:")
print("\n".join(describe(S, vg, coco, DEFAULT_ALIASES, top=3)))

# %% [markdown]
# ## 2 · Transferred vs. true masks on synthetic test objects
# GT boxes of the synthetic test images go through the run's detector; its COCO-like mask channels are mixed
# into the VG-like classes by the synthetic S, and each object's own-class mask is pasted at 0.5.

# %%
from omegaconf import OmegaConf  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402

from sgseg.data.coco import CocoInstances  # noqa: E402
from sgseg.data.collate import collate  # noqa: E402
from sgseg.data.transforms import Resize  # noqa: E402
from sgseg.data.visual_genome import VisualGenome  # noqa: E402
from sgseg.evaluation import paste_masks  # noqa: E402
from sgseg.models.detector.checkpoint import load_detector  # noqa: E402
from sgseg.models.masks import MaskTransfer  # noqa: E402
from sgseg.predict import newest_run  # noqa: E402


RUN_DIR = Path(os.environ["SGSEG_RUN_DIR"]) if os.environ.get("SGSEG_RUN_DIR") else newest_run(REPO / "logs")
cfg = OmegaConf.load(RUN_DIR / ".hydra" / "config.yaml")
root = Path(OmegaConf.select(cfg, "data.root"))
root = root if root.is_absolute() else REPO / root
detector = load_detector(RUN_DIR / "detector" / "detector.pt").eval()
vg_test = VisualGenome(root / "vg", split="test", check_label_space=False, num_val=0)
coco_names = list(CocoInstances(root / "coco", split="val", check_label_space=False).class_names)
targets = list(vg_test.object_classes)
S_syn = build_similarity(targets, coco_names, load_word_vectors(next(root.glob("glove.*.txt"))), aliases={})
hidden = json.loads((root / "vg" / "vg_test_masks.json").read_text())
print(f"run {RUN_DIR.name}: {len(vg_test)} synthetic test images; VG-like classes {targets}")

# %%
resize = Resize(int(cfg.data.loader.test_min_size), int(cfg.data.loader.max_size))
transfer = MaskTransfer(S_syn)
examples = []  # (image, box, class name, transferred mask, true mask)
with torch.no_grad():
    for idx in range(len(vg_test)):
        item = vg_test[idx]
        images, tg = collate([resize(dict(item))])
        logits = detector.mask_logits(detector.features(images), images, tg.boxes, tg.image_index).logits
        probs = transfer(logits).sigmoid()[torch.arange(tg.labels.numel()), tg.labels - 1]
        h, w = item["image"].shape[-2:]
        pasted = paste_masks(probs, item["boxes"], h, w)
        anns = [a for a in hidden["annotations"] if a["image_id"] == int(item["image_id"])]
        if not anns:
            continue
        ann_boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                   a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
        best = box_iou(item["boxes"].float(), ann_boxes).max(1)
        for j in range(len(item["boxes"])):
            name = targets[int(item["labels"][j]) - 1]
            if name in coco_names or best.values[j] < 0.9:
                continue  # novel classes only, and only objects whose hidden mask is found
            ann = anns[int(best.indices[j])]
            rle = mask_utils.frPyObjects(ann["segmentation"], h, w) if isinstance(ann["segmentation"], list) \
                else ann["segmentation"]
            true = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle).astype(bool)
            examples.append((item["image"], item["boxes"][j], name, pasted[j].numpy(), true))
        if len(examples) >= 6:
            break
print(f"{len(examples)} novel-class test objects")
assert examples, "no novel-class test object with a hidden mask"

# %%
fig, axes = plt.subplots(len(examples), 3, figsize=(7.5, 2.4 * len(examples)), squeeze=False)
for row, (image, box, name, pred, true) in zip(axes, examples):
    x1, y1, x2, y2 = box.round().int().tolist()
    crop = lambda a: a[max(y1 - 4, 0):y2 + 4, max(x1 - 4, 0):x2 + 4]  # noqa: E731
    iou = (pred & true).sum() / max((pred | true).sum(), 1)
    row[0].imshow(crop(image.permute(1, 2, 0).numpy()))
    row[0].set_title(name, fontsize=9)
    row[1].imshow(crop(pred), cmap="gray", vmin=0, vmax=1)
    row[1].set_title(f"transferred (IoU {iou:.2f})", fontsize=9)
    row[2].imshow(crop(true), cmap="gray", vmin=0, vmax=1)
    row[2].set_title("true (hidden)", fontsize=9)
    for ax in row:
        ax.set_axis_off()
fig.tight_layout()
fig.savefig(FIGURES / "02_transferred_vs_true.png", dpi=100)
plt.show()

# %% [markdown]
# ## 3 · Gaussian kernels
# The edge grounding blurs each mask with a kernel whose σx, σy, ρ the model predicts from the pair's labels;
# ρ tilts the ellipse, σ stretches it (in mask-grid cells).

# %%
from sgseg.models.grounding.kernels import gaussian_kernels  # noqa: E402

params = [(1.0, 1.0, 0.0), (3.0, 3.0, 0.0), (4.0, 1.0, 0.0), (1.0, 4.0, 0.0), (3.0, 3.0, 0.8), (3.0, 3.0, -0.8)]
kernels = gaussian_kernels(*(torch.tensor(c) for c in zip(*params)), size=15)
assert torch.allclose(kernels.sum((1, 2)), torch.ones(len(params)))
fig, axes = plt.subplots(1, len(params), figsize=(2.2 * len(params), 2.6))
for ax, k, (sx, sy, rho) in zip(axes, kernels, params):
    ax.imshow(k.numpy(), cmap="magma")
    ax.set_title(f"σx={sx:g} σy={sy:g}\nρ={rho:g}", fontsize=9)
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(FIGURES / "02_gaussian_kernels.png", dpi=100)
plt.show()
