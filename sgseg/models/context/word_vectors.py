"""Word vectors of the context encoders' label tables (the baselines' GloVe initialisation, paper Sec. 3.1).

Where this sits: computed once before stage 2 from a GloVe-format file (``model.label_vectors``, read by
:func:`sgseg.models.masks.similarity.load_word_vectors`) and passed into the MOTIF / VCTree constructors as
tensors (``class_embeddings``, ``start_embedding``, ``source_class_embeddings``). MOTIF and VCTree in the
reference and in SGB initialise every object-label table from GloVe 6B 200-d (``obj_edge_vectors``).

Differences from SGB's ``obj_edge_vectors``, on purpose: a multi-word name takes the whole ``_``-joined key when
the file has it, else the mean of its words' vectors (the paper's rule, :func:`class_vectors`) where SGB takes its
longest word; a class name without a vector is an error naming every missing word, where SGB keeps a random row.
Rows that are not words — background and the decoders' ``start`` when the file lacks it — are N(0, 1), as SGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sgseg.models.masks.similarity import KeyedVectorsLike, class_vectors


def label_word_vectors(names: Sequence[str], keyed_vectors: KeyedVectorsLike, seed: int = 0) -> Tensor:
    """Float[1 + T, D]: row 0 (background) N(0, 1), rows 1..T the word vectors of the T class ``names``
    (foreground, index order) — the layout of a C_obj = 1 + T label table."""
    fg = class_vectors(list(names), keyed_vectors)
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(1, fg.shape[1], generator=g), fg], 0)


def start_word_vector(keyed_vectors: KeyedVectorsLike, dim: int, seed: int = 1) -> Tensor:
    """Float[D]: the vector of the word ``start`` (the decoders' first input, SGB ``['start'] + classes``), or
    N(0, 1) when the file has no such word (e.g. the synthetic benchmark's vectors)."""
    if "start" in keyed_vectors:
        v = torch.from_numpy(np.asarray(keyed_vectors["start"], dtype=np.float32))
        if v.shape != (dim,):
            raise ValueError(
                f"start_word_vector: the `start` vector has shape {tuple(v.shape)}, expected ({dim},)"
            )
        return v
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))
