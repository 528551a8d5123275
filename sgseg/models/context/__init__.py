"""Stage-2 context encoders: MOTIF (BiLSTMs over objects sorted by x), VCTree (TreeLSTMs over a learned tree) and
the Transformer (self-attention over the objects of each image)."""

from sgseg.models.context.base import ContextEncoder, ContextOutput, SequenceLayout
from sgseg.models.context.motif import MotifContext
from sgseg.models.context.transformer import TransformerContext
from sgseg.models.context.vctree import (
    BinaryForest,
    VCTreeContext,
    VCTreeOutput,
    greedy_spanning_tree,
    to_binary_forest,
)

__all__ = [
    "BinaryForest",
    "ContextEncoder",
    "ContextOutput",
    "MotifContext",
    "SequenceLayout",
    "TransformerContext",
    "VCTreeContext",
    "VCTreeOutput",
    "greedy_spanning_tree",
    "to_binary_forest",
]
