"""COCO 2017 instances: the auxiliary dataset whose masks train the detector's mask head (stage 1).

Where this sits: the COCO side of stage 1. ``CocoInstances`` reads an official instances json with
pycocotools and yields one dict per image (boxes, contiguous labels 1..80, instance masks at image size);
the DataModule's transforms resize/pad them into :class:`sgseg.structures.Targets` with ``masks``. VG images
never reach the mask loss; these images are the only source of segmentation supervision (method.md, Eq. 10).

Conventions: labels are contiguous 1..80 in the standard order (sorted category id, checked against
:data:`sgseg.data.label_spaces.COCO_OBJECT_CLASSES`); json ``bbox`` (x, y, w, h) becomes xyxy
``(x, y, x + w, y + h)``; ``iscrowd`` annotations are not training targets (kept apart, on request, as
``crowd_*``); annotations whose box has w < 1 or h < 1 are dropped and counted in
:attr:`CocoInstances.num_dropped_degenerate`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgseg.data.errors import DatasetError, read_rgb
from sgseg.data.label_spaces import COCO_OBJECT_CLASSES, coco_category_to_contiguous

OBTAIN_HINT = (
    "download COCO 2017 (annotations/instances_{split}2017.json and {split}2017/) into the COCO root, "
    "or pass ann_file / image_dir"
)


class CocoInstances(torch.utils.data.Dataset):
    """One split of COCO instances, read through pycocotools.

    Item (a dict, one image):
        image: Uint8[3, H, W] RGB.
        boxes: Float[N, 4] xyxy in original-image pixels (non-crowd, non-degenerate annotations).
        labels: Long[N] in 1..80 (1..K for a custom label space).
        masks: UInt8[N, H, W] binary instance masks (polygons and RLE decoded by ``annToMask``).
        image_id: int; width, height: int.
        With ``include_crowd``: crowd_boxes Float[K, 4], crowd_labels Long[K], crowd_masks UInt8[K, H, W].

    root: COCO root; ann_file / image_dir default to ``annotations/instances_{split}2017.json`` and
        ``{split}2017`` and, when relative, are joined to ``root``.
    skip_empty: drop images without any training annotation; None = True for train, False otherwise.
    min_box_size: boxes with w or h below this (pixels) are degenerate: dropped and counted.
    check_label_space: require the 80 COCO categories; False accepts the file's own (labels 1..K in sorted
        category-id order, names in :attr:`class_names`), e.g. for the synthetic benchmark.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        ann_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        skip_empty: bool | None = None,
        include_crowd: bool = False,
        min_box_size: float = 1.0,
        check_label_space: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        hint = OBTAIN_HINT.format(split=split)
        if not self.root.is_dir():
            raise DatasetError(f"COCO root {self.root} is not a directory; {hint}")
        self.ann_path = self.root / (ann_file or f"annotations/instances_{split}2017.json")
        self.image_dir = self.root / (image_dir or f"{split}2017")
        if not self.ann_path.is_file():
            raise DatasetError(f"COCO annotation file not found at {self.ann_path}; {hint}")
        if not self.image_dir.is_dir():
            raise DatasetError(f"COCO image folder not found at {self.image_dir}; {hint}")
        self.skip_empty = (split == "train") if skip_empty is None else bool(skip_empty)
        self.include_crowd = bool(include_crowd)
        self.min_box_size = float(min_box_size)
        self.transform = transform

        from pycocotools.coco import COCO

        try:
            # pycocotools prints progress lines; keep stdout clean for the CLI and logs.
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(self.ann_path))
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as e:
            raise DatasetError(
                f"COCO annotation file {self.ann_path} is not a valid instances json ({type(e).__name__}: "
                f"{e}); download it again"
            ) from e
        for key in ("images", "annotations", "categories"):
            if key not in self.coco.dataset:
                raise DatasetError(f"COCO annotation file {self.ann_path} lacks the {key!r} list")
        self.category_to_label = coco_category_to_contiguous(
            self.coco.dataset["categories"],
            str(self.ann_path),
            COCO_OBJECT_CLASSES if check_label_space else None,
        )
        self.label_to_category = {v: k for k, v in self.category_to_label.items()}
        # C with background (81 for COCO), the project's convention; labels lie in 1..C-1.
        self.num_object_classes = len(self.category_to_label) + 1
        # Foreground names in label order: class_names[k - 1] is label k.
        self.class_names: tuple[str, ...] = tuple(
            str(self.coco.cats[self.label_to_category[k]]["name"])
            for k in range(1, len(self.label_to_category) + 1)
        )

        self._ann_ids: list[list[int]] = []
        self._crowd_ids: list[list[int]] = []
        self.dropped_degenerate_ids: list[int] = []
        image_ids: list[int] = []
        for image_id in sorted(self.coco.imgs):
            keep, crowd = [], []
            for ann_id in self.coco.getAnnIds(imgIds=[image_id]):
                ann = self.coco.anns[ann_id]
                self._check_annotation(ann)
                if ann.get("iscrowd", 0):
                    crowd.append(ann_id)
                elif ann["bbox"][2] < self.min_box_size or ann["bbox"][3] < self.min_box_size:
                    self.dropped_degenerate_ids.append(ann_id)
                else:
                    keep.append(ann_id)
            if self.skip_empty and not keep:
                continue
            image_ids.append(image_id)
            self._ann_ids.append(keep)
            self._crowd_ids.append(crowd)
        self._image_ids = image_ids

    def _check_annotation(self, ann: dict) -> None:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list | tuple) and len(bbox) == 4):
            raise DatasetError(
                f"COCO annotation file {self.ann_path}: annotation id {ann.get('id')} has bbox {bbox!r}, "
                "expected [x, y, w, h]; the file is corrupt"
            )
        if ann.get("category_id") not in self.category_to_label:
            raise DatasetError(
                f"COCO annotation file {self.ann_path}: annotation id {ann.get('id')} has category_id "
                f"{ann.get('category_id')!r}, not one of its 'categories'; the file is corrupt"
            )

    @property
    def num_dropped_degenerate(self) -> int:
        """How many non-crowd annotations were dropped for a box side below ``min_box_size``."""
        return len(self.dropped_degenerate_ids)

    @property
    def image_ids(self) -> list[int]:
        return list(self._image_ids)

    def __len__(self) -> int:
        return len(self._image_ids)

    def image_info(self, i: int) -> dict[str, Any]:
        """``image_id``, ``width``, ``height`` and ``file`` of image ``i`` (from the json)."""
        rec = self.coco.imgs[self._image_ids[i]]
        return {
            "image_id": int(rec["id"]),
            "width": int(rec["width"]),
            "height": int(rec["height"]),
            "file": self.image_dir / rec["file_name"],
        }

    def _targets(self, ann_ids: list[int], h: int, w: int, with_masks: bool) -> dict[str, Tensor]:
        anns = self.coco.loadAnns(ann_ids)
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).to(torch.float32)
        labels = torch.tensor([self.category_to_label[a["category_id"]] for a in anns], dtype=torch.long)
        out = {"boxes": boxes, "labels": labels}
        if with_masks:
            masks = np.zeros((len(anns), h, w), dtype=np.uint8)
            for k, a in enumerate(anns):
                try:
                    masks[k] = self.coco.annToMask(a)
                except (ValueError, TypeError, KeyError, IndexError) as e:
                    raise DatasetError(
                        f"COCO annotation file {self.ann_path}: segmentation of annotation id {a['id']} "
                        f"(image id {a['image_id']}) does not decode ({e}); the file is corrupt"
                    ) from e
            out["masks"] = torch.from_numpy(masks)
        return out

    def get_groundtruth(self, i: int, with_masks: bool = False) -> dict[str, Any]:
        """The item of image ``i`` without decoding the JPEG (masks only on request: they cost the most)."""
        info = self.image_info(i)
        h, w = info["height"], info["width"]
        item: dict[str, Any] = self._targets(self._ann_ids[i], h, w, with_masks)
        if self.include_crowd:
            crowd = self._targets(self._crowd_ids[i], h, w, with_masks)
            item.update({f"crowd_{k}": v for k, v in crowd.items()})
        item.update(image_id=info["image_id"], width=w, height=h)
        return item

    def load_image(self, i: int) -> Tensor:
        """Uint8[3, H, W] RGB of image ``i``; its size must match the json (masks are drawn at that size)."""
        info = self.image_info(i)
        path: Path = info["file"]
        image = read_rgb(
            path,
            "COCO image file",
            info["image_id"],
            f"put the {self.split}2017 images into {self.image_dir}",
        )
        if tuple(image.shape[1:]) != (info["height"], info["width"]):
            raise DatasetError(
                f"COCO image file {path}: size {image.shape[2]}x{image.shape[1]} differs from the json's "
                f"{info['width']}x{info['height']} (image id {info['image_id']}); image and annotation "
                "files do not belong together"
            )
        return image

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.get_groundtruth(i, with_masks=True)
        item["image"] = self.load_image(i)
        if self.transform is not None:
            item = self.transform(item)
        return item

    def __repr__(self) -> str:
        return (
            f"CocoInstances(ann_file={str(self.ann_path)!r}, images={len(self)}, skip_empty={self.skip_empty}, "
            f"include_crowd={self.include_crowd}, dropped_degenerate={self.num_dropped_degenerate})"
        )
