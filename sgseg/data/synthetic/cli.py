"""``python -m sgseg.data.synthetic out=DIR [key=value ...]`` (and ``preset=vg150_shapes``).

Where this sits: the command-line face of :mod:`sgseg.data.synthetic.benchmark` and
:mod:`sgseg.data.synthetic.vg150`; run through ``sgseg/data/synthetic/__main__.py``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from sgseg.data.synthetic.benchmark import ensure_synthetic, generate, read_stamp
from sgseg.data.synthetic.config import SyntheticConfig


def parse_key_values(
    argv: Sequence[str], config_cls: type, where: str, options: Sequence[str], example: str = ""
) -> tuple[dict[str, Any], dict[str, str]]:
    """``key=value`` arguments → (typed values of ``config_cls``'s dataclass fields, raw ``options``).

    where: the command named in errors; options: the other keys the command takes (returned as strings);
    example: appended to the "expected key=value" error. An unknown key is an error listing the known ones.
    """
    known = {f.name: f for f in fields(config_cls)}
    values: dict[str, Any] = {}
    opts: dict[str, str] = {}
    for arg in argv:
        key, sep, val = arg.partition("=")
        if not sep:
            raise SystemExit(f"{where}: expected key=value, got {arg!r}{example}")
        if key in options:
            opts[key] = val
        elif key in known:
            values[key] = float(val) if known[key].type in ("float", float) else int(val)
        else:
            raise SystemExit(f"{where}: unknown key {key!r}; known: " + ", ".join([*options, *known]))
    return values, opts


def is_true(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


def _parse_args(argv: list[str]) -> tuple[Path, SyntheticConfig, int, bool]:
    """(out, config, workers, force); ``image_size=LO[,HI]`` sets both bounds unless they are given."""
    values, opts = parse_key_values(
        argv,
        SyntheticConfig,
        "sgseg.data.synthetic",
        ("out", "workers", "force", "image_size"),
        " (e.g. out=data/synthetic seed=0)",
    )
    if "image_size" in opts:
        lo, _, hi = opts["image_size"].partition(",")
        values.setdefault("min_image_size", int(lo))
        values.setdefault("max_image_size", int(hi or lo))
    if "out" not in opts:
        raise SystemExit(
            "sgseg.data.synthetic: out=DIR is required, e.g. python -m sgseg.data.synthetic out=data/synthetic"
        )
    return (
        Path(opts["out"]),
        SyntheticConfig(**values),
        int(opts.get("workers", 2)),
        is_true(opts.get("force", "")),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    presets = [a.partition("=")[2] for a in argv if a.startswith("preset=")]
    if presets:  # real-scale dry-run data (sgseg.data.synthetic.vg150), not the learnable benchmark
        from sgseg.data.synthetic import vg150

        if presets != [vg150.PRESET]:
            raise SystemExit(f"sgseg.data.synthetic: unknown preset {presets}; known: {vg150.PRESET}")
        return vg150.main([a for a in argv if not a.startswith("preset=")])
    out, config, workers, force = _parse_args(argv)
    t0 = time.perf_counter()
    path = generate(out, config, workers) if force else ensure_synthetic(out, config, workers)
    stamp = read_stamp(path) or {}
    stats = stamp.get("stats", {})
    print(f"synthetic benchmark at {path} ({time.perf_counter() - t0:.1f} s)")
    print(
        json.dumps(
            {
                k: stats.get(k)
                for k in (
                    "vg_boxes",
                    "vg_relations",
                    "num_held_out_triplets",
                    "num_zero_shot_test_triplets",
                    "predicate_histogram",
                )
            },
            indent=1,
        )
    )
    return 0
