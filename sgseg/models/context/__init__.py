"""Stage-2 context encoders: MOTIF (BiLSTMs over objects sorted by x) and VCTree (TreeLSTMs over a learned tree)."""

from sgseg.models.context.base import ContextEncoder, ContextOutput, SequenceLayout
from sgseg.models.context.motif import MotifContext
from sgseg.models.context.vctree import BinaryForest, VCTreeContext, greedy_spanning_tree, to_binary_forest

__all__ = [
    "BinaryForest",
    "ContextEncoder",
    "ContextOutput",
    "MotifContext",
    "SequenceLayout",
    "VCTreeContext",
    "greedy_spanning_tree",
    "to_binary_forest",
]
