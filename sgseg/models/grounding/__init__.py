"""Segmentation grounding of node (f_N) and edge (f_E) features; see ``node.py`` and ``edge.py``."""

from sgseg.models.grounding.edge import (
    AvgEdgeGrounding,
    GaussianEdgeGrounding,
    NoEdgeGrounding,
    UnionEdgeGrounding,
    grow_boxes,
    paste_into_union,
    resample_to_frames,
    union_boxes,
)
from sgseg.models.grounding.kernels import blur_per_sample, gaussian_kernels
from sgseg.models.grounding.node import GroundingHead, NodeGrounding, NoNodeGrounding

__all__ = [
    "AvgEdgeGrounding",
    "GaussianEdgeGrounding",
    "GroundingHead",
    "NoEdgeGrounding",
    "NoNodeGrounding",
    "NodeGrounding",
    "UnionEdgeGrounding",
    "blur_per_sample",
    "gaussian_kernels",
    "grow_boxes",
    "paste_into_union",
    "resample_to_frames",
    "union_boxes",
]
