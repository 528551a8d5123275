"""``python -m sgseg.models.detector.convert SRC DST``: a COCO Mask R-CNN in JointDetector names.

SRC is a detectron2 checkpoint (model-zoo ``model_final_*.pkl`` or a detectron2 ``.pth``) or torchvision
``maskrcnn_resnet50_fpn``/``_v2`` weights; DST (``{"format", "source", "kind", "state_dict"}``) is what
``detector.init`` then reads with no pickle and no renaming (:func:`.checkpoint.convert`).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from typing import Any

import torch

from sgseg.models.detector.checkpoint import DETECTRON2_PIXEL_MEAN, DETECTRON2_X101_PIXEL_STD, convert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sgseg.models.detector.convert",
        description="Write a COCO Mask R-CNN (detectron2 .pkl/.pth or torchvision .pth) in JointDetector names, "
        "as a file detector.init reads.",
    )
    parser.add_argument(
        "src", help="detectron2 model_final_*.pkl / .pth, or torchvision maskrcnn_resnet50_fpn .pth"
    )
    parser.add_argument("dst", help="output .pt")
    parser.add_argument("--pixel-mean", type=float, nargs=3, help="detectron2 MODEL.PIXEL_MEAN (default: the file's, "
                   f"else {DETECTRON2_PIXEL_MEAN})")  # fmt: skip
    parser.add_argument("--pixel-std", type=float, nargs=3, help="detectron2 MODEL.PIXEL_STD (default: the file's, else "
                   f"{DETECTRON2_X101_PIXEL_STD} of X-101-32x8d; 1 1 1 for MSRA ResNets)")  # fmt: skip
    parser.add_argument(
        "--input-format", default="BGR", choices=("BGR", "RGB"), help="detectron2 INPUT.FORMAT"
    )
    parser.add_argument("--stride-in-3x3", action="store_true",
                   help="a plain ResNet trained with RESNETS.STRIDE_IN_1X1=False")  # fmt: skip
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"input_format": args.input_format}
    if args.pixel_mean:
        options["pixel_mean"] = tuple(args.pixel_mean)
    if args.pixel_std:
        options["pixel_std"] = tuple(args.pixel_std)
    if args.stride_in_3x3:
        options["stride_in_1x1"] = False
    try:
        dst = convert(args.src, args.dst, **options)
    except (FileNotFoundError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise SystemExit(f"convert: {err}") from None
    n = len(torch.load(dst, weights_only=True)["state_dict"])
    print(f"wrote {dst}: {n} tensors in JointDetector names; use it as detector.init={dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
