"""Stage 1: the joint VG + COCO detector (image → boxes, VG label distributions, RoI features, COCO masks)."""

from sgseg.models.detector.backbones import BACKBONE_NAMES, build_backbone
from sgseg.models.detector.checkpoint import (
    PROVENANCE_FILE,
    build_detector,
    detector_from_coco_maskrcnn,
    detector_provenance,
    export_detector,
    load_coco_maskrcnn,
    load_detector,
    load_torchvision_maskrcnn,
)
from sgseg.models.detector.detector import JointDetector

__all__ = [
    "BACKBONE_NAMES",
    "JointDetector",
    "PROVENANCE_FILE",
    "build_backbone",
    "build_detector",
    "detector_from_coco_maskrcnn",
    "detector_provenance",
    "export_detector",
    "load_coco_maskrcnn",
    "load_detector",
    "load_torchvision_maskrcnn",
]
