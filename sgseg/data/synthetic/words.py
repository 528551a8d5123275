"""The synthetic benchmark's word vectors (GloVe text format), built so zero-shot mask transfer has signal.

Where this sits: written next to the dataset by :mod:`sgseg.data.synthetic.benchmark`; read like real GloVe by
:func:`sgseg.models.masks.similarity.load_word_vectors`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgseg.data.synthetic.config import SyntheticConfig
from sgseg.data.synthetic.labels import NOVEL_CLASSES, SOURCE_CLASSES, TARGET_TO_SOURCE

_SOURCE_CONFUSER = {  # a second source each novel name also resembles a little (realistic ambiguity)
    "plate": "ring",
    "crate": "bar",
    "brick": "bar",
    "roof": "block",
    "donut": "disc",
    "tire": "disc",
    "plank": "block",
    "pipe": "ring",
}
_FILLER_WORDS = ("the", "of", "a", "and", "object", "thing", "shape")


def word_vectors(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Float32[D] vectors of every source and target name (``_`` for spaces), plus a few filler words.

    Sources are near-orthogonal (norm ~3.2, so softmax over dot products is peaked, as with real GloVe
    norms); a novel name is 0.85 × its source + a little of one confusable source + noise; a multi-word
    name's words average to the name's vector (the paper's rule for multi-word names).
    """
    rng = np.random.default_rng([config.seed, 4242])
    d = config.word_dim
    if d < len(SOURCE_CLASSES) + 4:
        raise ValueError(f"SyntheticConfig.word_dim must be >= {len(SOURCE_CLASSES) + 4}, got {d}")
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    src = {n: 3.2 * q[:, k] for k, n in enumerate(SOURCE_CLASSES)}
    # Shared "round" and "straight" directions make disc/ring and block/bar mildly similar, like real words.
    src["disc"] = src["disc"] + 0.8 * q[:, 5]
    src["ring"] = src["ring"] + 0.8 * q[:, 5]
    src["block"] = src["block"] + 0.8 * q[:, 6]
    src["bar"] = src["bar"] + 0.8 * q[:, 6]
    vecs: dict[str, np.ndarray] = dict(src)
    for name in NOVEL_CLASSES:
        v = 0.85 * src[TARGET_TO_SOURCE[name]] + rng.normal(0, 0.2, size=d)
        if name in _SOURCE_CONFUSER:
            v = v + 0.6 * src[_SOURCE_CONFUSER[name]]
        key = name.replace(" ", "_")
        vecs[key] = v
        words = name.split(" ")
        if len(words) > 1:
            offsets = rng.normal(0, 0.5, size=(len(words), d))
            offsets -= offsets.mean(axis=0)
            for wd, off in zip(words, offsets):
                vecs.setdefault(wd, v + off)
    for wd in _FILLER_WORDS:
        vecs.setdefault(wd, rng.normal(0, 0.35, size=d))
    return {k: v.astype(np.float32) for k, v in vecs.items()}


def _write_word_vectors(path: Path, config: SyntheticConfig) -> None:
    with open(path, "w") as f:
        for key, v in word_vectors(config).items():
            f.write(key + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
