"""``python -m sgseg.data.synthetic out=DIR [key=value ...]`` (and ``preset=vg150_shapes``).

Where this sits: the command-line face of :mod:`sgseg.data.synthetic.benchmark` and
:mod:`sgseg.data.synthetic.vg150`; run through ``sgseg/data/synthetic/__main__.py``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from sgseg.data.synthetic.benchmark import ensure_synthetic, generate, read_stamp
from sgseg.data.synthetic.config import SyntheticConfig


def _parse_args(argv: list[str]) -> tuple[Path, SyntheticConfig, int, bool]:
    known = {f.name: f for f in fields(SyntheticConfig)}
    values: dict[str, Any] = {}
    out: Path | None = None
    workers, force = 2, False
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(
                f"sgseg.data.synthetic: expected key=value, got {arg!r} (e.g. out=data/synthetic seed=0)"
            )
        key, val = arg.split("=", 1)
        if key == "out":
            out = Path(val)
        elif key == "workers":
            workers = int(val)
        elif key == "force":
            force = val.lower() in ("1", "true", "yes")
        elif key == "image_size":
            lo, _, hi = val.partition(",")
            values["min_image_size"], values["max_image_size"] = int(lo), int(hi or lo)
        elif key in known:
            values[key] = float(val) if known[key].type in ("float", float) else int(val)
        else:
            raise SystemExit(
                f"sgseg.data.synthetic: unknown key {key!r}; known: out, workers, force, image_size, "
                + ", ".join(known)
            )
    if out is None:
        raise SystemExit(
            "sgseg.data.synthetic: out=DIR is required, e.g. python -m sgseg.data.synthetic out=data/synthetic"
        )
    return out, SyntheticConfig(**values), workers, force


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
