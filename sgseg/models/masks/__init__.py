"""Zero-shot mask transfer (COCO → VG class masks) and its refinement head; see the modules' docstrings."""

from sgseg.models.masks.refine import (
    MaskRefinement,
    crop_masks_to_boxes,
    refinement_loss,
)
from sgseg.models.masks.similarity import (
    DEFAULT_ALIASES,
    build_similarity,
    class_vectors,
    derangement,
    load_word_vectors,
    one_to_one_sources,
    shuffled_sources,
)
from sgseg.models.masks.transfer import MaskTransfer, blur_masks, own_mask_probs, true_mask_probs

__all__ = [
    "DEFAULT_ALIASES",
    "MaskRefinement",
    "MaskTransfer",
    "blur_masks",
    "build_similarity",
    "class_vectors",
    "crop_masks_to_boxes",
    "derangement",
    "load_word_vectors",
    "one_to_one_sources",
    "own_mask_probs",
    "true_mask_probs",
    "refinement_loss",
    "shuffled_sources",
]
