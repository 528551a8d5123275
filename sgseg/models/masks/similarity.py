"""Class-similarity matrix S (paper Sec. 2.3, Eq. 3–4): how each VG class borrows COCO mask channels.

Where this sits: computed once, before stage 2, from word vectors and the two label spaces; the resulting
``Float[T, S]`` (T = 150 VG classes, S = 80 COCO classes, no background in either) is handed to
:class:`sgseg.models.masks.transfer.MaskTransfer`, which applies it per pixel to the detector's COCO mask logits.

The normalisation is the reference one (``../shared/docs/method.md``): a target class whose name equals a source
name, or that ``aliases`` maps to a source name, takes that source channel one-to-one; every other row is
``softmax(g_t · g_s / temperature)`` over the sources, entries below ``threshold`` set to 0 and the row
renormalised to sum 1.

Run ``python -m sgseg.models.masks.similarity --vectors glove.840B.300d.txt`` to print, for every novel VG class,
its top COCO sources and weights (and ``--save S.pt`` to keep the matrix).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

# VG name → COCO name, the reference code's table. People and their parts/clothes map to `person` because
# COCO's person masks cover them; the rest are synonyms whose words GloVe would not match one-to-one.
DEFAULT_ALIASES: dict[str, str] = {
    "bike": "motorcycle",
    "ski": "skis",
    "phone": "cell phone",
    "table": "dining table",
    "plane": "airplane",
    "screen": "tv",
    "plant": "potted plant",
    "branch": "potted plant",
    **{
        name: "person"
        for name in (
            "woman",
            "men",
            "man",
            "lady",
            "girl",
            "guy",
            "boy",
            "child",
            "kid",
            "people",
            "player",
            "head",
            "arm",
            "face",
            "jacket",
            "jean",
            "leg",
            "pant",
            "short",
        )  # fmt: skip
    },
}


class KeyedVectorsLike(Protocol):
    """What we need from gensim's ``KeyedVectors`` (a plain ``dict[str, np.ndarray]`` also qualifies)."""

    def __contains__(self, key: str) -> bool: ...

    def __getitem__(self, key: str) -> Any: ...


def _lookup_key(name: str) -> str:
    return name.strip().replace(" ", "_")


def class_vectors(names: Sequence[str], keyed_vectors: KeyedVectorsLike) -> Tensor:
    """Word vectors of class names.

    names: T class names (spaces or underscores between words).
    keyed_vectors: gensim ``KeyedVectors`` (e.g. a GloVe text file loaded with ``no_header=True``) or a dict.
    Returns Float[T, D] (float32). The whole name with spaces as ``_`` (``traffic_light``) is used when the
    vectors have it; otherwise the mean of its words' vectors (the paper's rule for multi-word names).
    Raises KeyError listing *every* missing word at once, so one run tells you all the fixes.
    """
    rows: list[np.ndarray] = []
    missing: list[str] = []
    for name in names:
        key = _lookup_key(name)
        if key in keyed_vectors:
            rows.append(np.asarray(keyed_vectors[key], dtype=np.float64))
            continue
        words = [w for w in key.split("_") if w]
        absent = [w for w in words if w not in keyed_vectors]
        if absent or not words:
            missing.extend(absent or [repr(name)])
            continue
        rows.append(np.mean([np.asarray(keyed_vectors[w], dtype=np.float64) for w in words], axis=0))
    if missing:
        raise KeyError(
            f"class_vectors: no word vector for {sorted(set(missing))}; use a vector file that covers these "
            "words (e.g. glove.840B.300d.txt) or rename the classes / add aliases"
        )
    if not rows:
        return torch.zeros(0, 0)
    return torch.from_numpy(np.stack(rows)).float()


def one_to_one_sources(
    target_names: Sequence[str], source_names: Sequence[str], aliases: Mapping[str, str] = DEFAULT_ALIASES
) -> dict[int, int]:
    """Target row → source column for the classes copied one-to-one (same name, or aliased to a source name).

    Aliases whose source is not among ``source_names`` are ignored (so the VG→COCO table is harmless on other
    label spaces, e.g. the synthetic benchmark).
    """
    column = {_lookup_key(s): j for j, s in enumerate(source_names)}
    out: dict[int, int] = {}
    for i, t in enumerate(target_names):
        key = _lookup_key(t)
        if key in column:
            out[i] = column[key]
        elif t in aliases and _lookup_key(aliases[t]) in column:
            out[i] = column[_lookup_key(aliases[t])]
    return out


def build_similarity(
    target_names: Sequence[str],
    source_names: Sequence[str],
    keyed_vectors: KeyedVectorsLike,
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    threshold: float = 0.05,
    temperature: float = 1.0,
) -> Tensor:
    """The class-similarity matrix S: Float[T, S], every row non-negative and summing to 1.

    target_names: T target (VG) class names, foreground only, in index order.
    source_names: S source (COCO) class names, foreground only, in index order.
    aliases: target name → source name, rows copied one-to-one (besides exact name matches).
    threshold: softmax entries below it are zeroed before renormalising (reference 0.05).
    temperature: divides the raw dot products before the softmax (reference 1).

    Computed in float64 and returned as float32. Word vectors are needed only for the source classes and the
    *novel* targets (rows not copied one-to-one). If a row's softmax has no entry ≥ ``threshold`` (possible
    only when ``threshold > 1/S``), its largest entry is kept so the row still sums to 1 instead of being NaN.
    """
    if temperature <= 0:
        raise ValueError(f"build_similarity: temperature must be > 0, got {temperature}")
    num_t, num_s = len(target_names), len(source_names)
    if num_s == 0:
        raise ValueError("build_similarity: source_names is empty; pass the COCO (source) class names")
    sim = torch.zeros(num_t, num_s, dtype=torch.float64)
    fixed = one_to_one_sources(target_names, source_names, aliases)
    for i, j in fixed.items():
        sim[i, j] = 1.0
    novel = [i for i in range(num_t) if i not in fixed]
    if novel:
        g_t = class_vectors([target_names[i] for i in novel], keyed_vectors).double()
        g_s = class_vectors(source_names, keyed_vectors).double()
        probs = torch.softmax(g_t @ g_s.T / temperature, dim=1)
        keep = probs >= threshold
        # Rows with nothing above threshold keep their argmax (see docstring).
        keep[torch.arange(len(novel)), probs.argmax(1)] = True
        probs = probs * keep
        sim[novel] = probs / probs.sum(1, keepdim=True)
    return sim.float()


def derangement(n: int, seed: int) -> Tensor:
    """Long[n]: a permutation of 0..n-1 without a fixed point, the same for the same ``seed`` (random
    permutations drawn from a seeded generator until one moves every element; identity for n < 2)."""
    g = torch.Generator().manual_seed(int(seed))
    while True:
        p = torch.randperm(n, generator=g)
        if n < 2 or (p != torch.arange(n)).all():
            return p


def shuffled_sources(similarity: Tensor, seed: int) -> Tensor:
    """The transfer's lower bound: S with its source columns deranged, ``S'[:, s] = S[:, d[s]]`` with
    ``d = derangement(S, seed)``, so every target class draws on the wrong source channels with its own weights.
    similarity: Float[T, S], S >= 2."""
    if similarity.dim() != 2 or similarity.shape[1] < 2:
        raise ValueError(
            f"shuffled_sources: `similarity` must be Float[T, S] with S >= 2 source classes to derange, "
            f"got {tuple(similarity.shape)}"
        )
    return similarity[:, derangement(similarity.shape[1], seed)]


def load_word_vectors(path: str | Path, words: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read a GloVe-format text file (no header), keeping only ``words`` (all if None).

    Streaming and filtering keeps memory small for the 2.2M-row ``glove.840B.300d.txt``; a handful of its keys
    contain spaces, so a row's key is everything before its last ``D`` fields (``D`` from the first row).
    """
    wanted = None if words is None else set(words)
    out: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if dim is None:
                dim = len(parts) - 1
            key = " ".join(parts[:-dim])
            if wanted is not None and key not in wanted:
                continue
            out.setdefault(key, np.asarray(parts[-dim:], dtype=np.float32))
            if wanted is not None and len(out) == len(wanted):
                break
    return out


def _needed_words(names: Sequence[str]) -> list[str]:
    words = []
    for n in names:
        key = _lookup_key(n)
        words.append(key)
        words.extend(w for w in key.split("_") if w)
    return words


def describe(
    sim: Tensor,
    target_names: Sequence[str],
    source_names: Sequence[str],
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    top: int = 3,
) -> list[str]:
    """One line per novel target class: its ``top`` sources with their weights (for eyeballing S)."""
    fixed = one_to_one_sources(target_names, source_names, aliases)
    lines = []
    for i, name in enumerate(target_names):
        if i in fixed:
            continue
        weights, cols = sim[i].topk(min(top, sim.shape[1]))
        parts = [f"{source_names[j]} {w:.2f}" for w, j in zip(weights.tolist(), cols.tolist()) if w > 0]
        lines.append(f"{name:>14s} ← " + ", ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> Tensor:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m sgseg.models.masks.similarity"
    )
    p.add_argument(
        "--vectors", required=True, help="GloVe-format text file (no header), e.g. glove.840B.300d.txt"
    )
    p.add_argument(
        "--targets",
        help="JSON: a list of target names, or a dict with `vg150_objects` (and optionally `coco80_objects` as "
        "sources), as ../shared/data/class-names.json; default VG150 → COCO80",
    )
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--no-aliases", action="store_true", help="only exact name matches are one-to-one")
    p.add_argument("--top", type=int, default=3, help="sources listed per novel class")
    p.add_argument("--save", help="write S (Float[T, S]) with torch.save, plus the names, to this .pt file")
    args = p.parse_args(argv)

    from sgseg.data.label_spaces import COCO_OBJECT_CLASSES, VG150_OBJECT_CLASSES

    targets, sources = list(VG150_OBJECT_CLASSES), list(COCO_OBJECT_CLASSES)
    if args.targets:
        spec = json.loads(Path(args.targets).read_text())
        if isinstance(spec, dict):
            targets = list(spec["vg150_objects"])
            sources = list(spec.get("coco80_objects", sources))
        else:
            targets = list(spec)
    aliases = {} if args.no_aliases else DEFAULT_ALIASES
    vectors = load_word_vectors(args.vectors, _needed_words(targets + sources))
    sim = build_similarity(targets, sources, vectors, aliases, args.threshold, args.temperature)
    fixed = one_to_one_sources(targets, sources, aliases)
    one_hot = int((sim.max(1).values == 1).sum())
    print(f"S: {len(targets)} targets × {len(sources)} sources; {len(fixed)} one-to-one by name/alias, "
          f"{one_hot - len(fixed)} novel rows one-hot after thresholding, {one_hot} one-hot in all")  # fmt: skip
    print("\n".join(describe(sim, targets, sources, aliases, args.top)))
    if args.save:
        torch.save({"similarity": sim, "target_names": targets, "source_names": sources}, args.save)
        print(f"saved to {args.save}")
    return sim


if __name__ == "__main__":
    main()
