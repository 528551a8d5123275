"""Thin Hydra entry point for your own images: ``python -m sgseg.predict run_dir=RUN images=DIR_OR_FILE``.

Loads a trained scene-graph run (its ``.hydra/config.yaml`` and best — or ``checkpoint=last`` / a path —
checkpoint; the model is rebuilt by :func:`sgseg.lit.build.build_stage2` from what the checkpoint stores), runs
the model's own SGDet path on each image (your images have no boxes: the frozen detector's detections, the
context model's labels, SGDet post-processing), and writes for each image ``<name>.png`` (masks, boxes and the top relations drawn as a graph)
and ``<name>.json`` (boxes, labels, scores and the ranked triplets) into ``out``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sgseg.lit.factory import (  # find_checkpoint also imported from here by notebooks and tests
    find_checkpoint,
    run_config_path,
)
from sgseg.ops.boxes import local_index, rescale_boxes

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
USAGE = (
    "python -m sgseg.predict run_dir=<a run directory of python -m sgseg.train> images=<an image or a folder of "
    "them> [out=predictions]"
)


def check_arguments(run_dir: str | None, images: str | None) -> None:
    """Exit with one line where ``run_dir`` or ``images`` is not given (None), ``run_dir`` is no run of
    ``python -m sgseg.train`` or ``images`` names no image."""
    missing = [key for key, value in (("run_dir", run_dir), ("images", images)) if value is None]
    if missing:
        raise SystemExit(f"sgseg.predict: {' and '.join(missing)} required: {USAGE}")
    from sgseg.lit.build import ConfigError

    try:
        run_config_path(str(run_dir))
        image_files(str(images))
    except (ConfigError, FileNotFoundError) as err:
        raise SystemExit(f"sgseg.predict: {err}") from None


def _log_dir(run_dir: str | None, images: str | None, out: str) -> str:
    """``${sgseg.predict_log_dir:...}`` (conf/predict.yaml): Hydra's run dir, ``<out>/.hydra_logs``.

    Hydra resolves it before it creates that folder, so :func:`check_arguments` runs here: a usage error exits
    with one line and leaves no ``<out>/.hydra_logs`` behind."""
    check_arguments(run_dir, images)
    return str(Path(out) / ".hydra_logs")


OmegaConf.register_new_resolver("sgseg.predict_log_dir", _log_dir, replace=True)


def newest_run(root: Path) -> Path:
    """The most recently written stage-2 run directory under ``root`` (one holding checkpoints/last.ckpt)."""
    runs = sorted(
        (p.parent.parent for p in root.rglob("checkpoints/last.ckpt") if "detector" not in p.parts),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise FileNotFoundError(f"no stage-2 run under {root}; train one (make run) or set SGSEG_RUN_DIR")
    return runs[-1]


def load_model(run_dir: Path, which: str = "best"):
    """Rebuild the trained SceneGraphModel of a run; returns (model, run config, object names, predicates)."""
    from sgseg.lit.build import StageTwoInputs, build_stage2
    from sgseg.models.detector.checkpoint import build_detector

    cfg = OmegaConf.load(run_config_path(run_dir))
    ckpt_path = find_checkpoint(run_dir, which)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if "detector_config" not in ckpt:
        raise ValueError(f"{ckpt_path} is not a scene-graph checkpoint of sgseg (no detector_config)")
    if "stage_two_inputs" not in ckpt:
        raise ValueError(
            f"{ckpt_path} predates stored stage-2 inputs (label spaces, statistics): retrain the run with this "
            "version of sgseg, or re-test it on its data with python -m sgseg.evaluate run_dir=..."
        )
    inputs = StageTwoInputs(**ckpt["stage_two_inputs"])
    model = build_stage2(cfg, build_detector(ckpt["detector_config"]), inputs)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), cfg, inputs.object_classes, inputs.predicates


def image_files(images: str) -> list[Path]:
    p = Path(images)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"images={images}: no such file or directory")
    if not files:
        raise FileNotFoundError(f"images={images}: no .jpg/.jpeg/.png files there")
    return files


@torch.no_grad()
def predict_image(
    model, cfg, path: Path, top_k: int, min_score: float = 0.3, agnostic_nms: float = 0.7
) -> dict:
    """SGDet on one image file, through the model's own SGDet path (detections, context labels, label NMS,
    class-specific boxes). For the picture, objects scoring below ``min_score`` or overlapping a better one of
    any class by IoU > ``agnostic_nms`` are dropped afterwards, with the relations that involve them. A model
    trained in PredCls never trained its label decoder: its labels are unreliable (a warning says so); train
    with task=sgcls or sgdet for pictures."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.ops import nms

    from sgseg.data.collate import collate
    from sgseg.data.transforms import Resize
    from sgseg.visualize import top_triplets

    if str(cfg.task.name) == "predcls":
        warnings.warn(
            "sgseg.predict: this run was trained in predcls, so its object label decoder is untrained; the labels "
            "drawn are unreliable (use an sgcls or sgdet run)",
            stacklevel=2,
        )
    image = decode_image(str(path), mode=ImageReadMode.RGB)
    item = {
        "image": image,
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "image_id": 0,
    }
    item = Resize(int(cfg.data.loader.test_min_size), int(cfg.data.loader.max_size))(item)
    images, _ = collate([item])
    out = model(images, None, "sgdet")
    p = out.predictions
    keep = (p.scores >= min_score).nonzero().flatten()
    keep = keep[nms(p.boxes[keep], p.scores[keep], agnostic_nms)].sort().values
    pairs = local_index(keep, p.boxes.shape[0])[p.pair_index]
    kept_pairs = (pairs >= 0).all(1)
    # to the image as read: the batch's original_sizes hold the resized size here (no orig_size in the item)
    original = torch.tensor([image.shape[-2:]])
    boxes = rescale_boxes(p.boxes[keep], p.image_index[keep], images.image_sizes, original)
    labels, scores = p.labels[keep], p.scores[keep]
    rel_scores = p.rel_logits[kept_pairs].softmax(-1)
    own = out.vg_mask_probs[keep, labels - 1]
    return {
        "image": image, "boxes": boxes, "labels": labels, "scores": scores, "masks": own,
        "triplets": top_triplets(pairs[kept_pairs], rel_scores, scores, top_k),
    }  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    from sgseg.visualize import draw_scene_graph

    # on the command line _log_dir has run this check already, before Hydra made its run dir; a config passed
    # in directly (compose API) gets the same lines here (a missing ``???`` value selects as None)
    check_arguments(
        OmegaConf.select(cfg, "run_dir", default=None), OmegaConf.select(cfg, "images", default=None)
    )
    try:
        model, run_cfg, objects, predicates = load_model(Path(cfg.run_dir), str(cfg.checkpoint))
        files = image_files(str(cfg.images))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"sgseg.predict: {err}") from None
    out_dir = Path(cfg.out)
    for path in files:
        r = predict_image(model, run_cfg, path, int(cfg.top_k), float(cfg.min_score), float(cfg.agnostic_nms))
        names = [objects[int(c) - 1] for c in r["labels"]]
        triplets = [(s, o, predicates[c - 1], sc) for s, o, c, sc in r["triplets"]]
        png = draw_scene_graph(r["image"], r["boxes"], names, triplets, out_dir / f"{path.stem}.png", r["masks"],
                               title=path.name)  # fmt: skip
        record = {
            "image": str(path),
            "objects": [
                {"box": b, "label": n, "score": float(s)}
                for b, n, s in zip(r["boxes"].tolist(), names, r["scores"])
            ],  # fmt: skip
            "relations": [
                {"subject": s, "object": o, "predicate": c, "score": sc} for s, o, c, sc in triplets
            ],
        }
        (out_dir / f"{path.stem}.json").write_text(json.dumps(record, indent=1))
        print(f"{path.name}: {len(names)} objects, top relation: "
              f"{(names[triplets[0][0]] + ' ' + triplets[0][2] + ' ' + names[triplets[0][1]]) if triplets else '—'}"
              f"  → {png}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
