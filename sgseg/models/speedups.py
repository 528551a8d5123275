"""The stage-1 / stage-2 CPU speed-ups as one list of switches, and a context manager that sets them.

Each speed-up replaces a plain code path by a faster one that computes the same numbers (bit for bit, or up to
float rounding where noted at the flag), and keeps the plain path behind a module-level flag so that tests and
``scripts/bench_stage2.py`` can compare the two. This module is the one list of those flags:

- ``ONCE_PER_UNORDERED_PAIR`` (grounding/edge.py): f_E and its union box once per unordered pair;
- ``SEPARABLE_RESAMPLE`` (grounding/edge.py): masks pasted into the union frame by two matrix products
  instead of ``grid_sample`` (float rounding);
- ``MASK_ONLY_INPUT_GRAD`` (grounding/concat_conv.py): the grounding heads' first conv computes the input
  gradient of its mask channels only;
- ``CHANNELS_LAST`` (grounding/concat_conv.py): grounding and refinement convs in channels-last layout on CPU
  (float rounding; also set by the run config's ``cpu_fast_kernels``);
- ``WINDOW_POOL`` (grounding/node.py): the heads' 28 → 7 pooling as fixed windows (bit for bit);
- ``POOL_REPEATED_BOXES_ONCE`` (detector/detector.py): repeated union boxes pooled once (bit for bit);
- ``SEPARABLE`` (ops/roi_align.py): RoIAlign as two matrix products on CPU (float rounding; also set by
  ``cpu_fast_kernels``);
- ``DECODER_INPUT_ONCE`` (context/motif.py): the MOTIF label decoder's input projection of its rows for all
  steps in one matrix product, only the previous label's embedding per step (float rounding).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Iterator

# (module, flag) of every speed-up, in the order listed above
SWITCHES: tuple[tuple[str, str], ...] = (
    ("sgseg.models.grounding.edge", "ONCE_PER_UNORDERED_PAIR"),
    ("sgseg.models.grounding.edge", "SEPARABLE_RESAMPLE"),
    ("sgseg.models.grounding.concat_conv", "MASK_ONLY_INPUT_GRAD"),
    ("sgseg.models.grounding.concat_conv", "CHANNELS_LAST"),
    ("sgseg.models.grounding.node", "WINDOW_POOL"),
    ("sgseg.models.detector.detector", "POOL_REPEATED_BOXES_ONCE"),
    ("sgseg.ops.roi_align", "SEPARABLE"),
    ("sgseg.models.context.motif", "DECODER_INPUT_ONCE"),
)
FLAGS = tuple(flag for _, flag in SWITCHES)


@contextlib.contextmanager
def code_path(fast: bool, flags: Iterable[str] = FLAGS) -> Iterator[None]:
    """Within the block, the named speed-ups (default: all of :data:`FLAGS`) are on (``fast=True``) or off
    (the plain path); afterwards every flag has its earlier value again, also after an exception."""
    flags = tuple(flags)
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
        raise ValueError(f"code_path: unknown speed-up flag(s) {unknown}; known: {list(FLAGS)}")
    switches = [(importlib.import_module(mod), flag) for mod, flag in SWITCHES if flag in flags]
    old = [getattr(m, flag) for m, flag in switches]
    for m, flag in switches:
        setattr(m, flag, bool(fast))
    try:
        yield
    finally:
        for (m, flag), value in zip(switches, old):
            setattr(m, flag, value)
