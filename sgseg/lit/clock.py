"""How long a stage trained, across resumptions: ``<stage dir>/timing.json``.

Where this sits: a callback of every Trainer the runners build (``conf/callbacks/default.yaml``), so each
stage's folder (the run directory for stage 2, ``<run>/detector`` for stage 1) records its own fit wall time.
A run resumed with ``ckpt_path=last`` appends a segment (a fresh fit starts a new record); a segment of a killed process keeps the time of its
last update (every ``every_s`` seconds, each validation, the end of training), so its time is known to within
``every_s`` even though nothing ran at its end. ``python -m sgseg.results`` sums the segments into the job
time of each run (the wall time of a study on a given machine).

The file::

    {"segments": [{"start": "2026-12-03T12:23:00", "updated": "...", "seconds": 1680.4,
                   "first_step": 0, "last_step": 996, "finished": false}, ...]}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

FILE = "timing.json"


def read_timing(path: Path) -> list[dict[str, Any]]:
    """The segments of ``path`` (a ``timing.json``); a file that is not this format raises naming it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path}: not a readable timing file ({exc}); delete it to start a new record"
        ) from exc
    segments = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(segments, list) or not all(
        isinstance(s, dict) and isinstance(s.get("seconds"), (int, float)) for s in segments
    ):
        raise ValueError(
            f"{path}: expected {{'segments': [{{'seconds': ..., ...}}, ...]}}; delete it to start a new record"
        )
    return segments


class RunClock(Callback):
    """Writes the fit's wall time per segment (one per process that trained this stage) to ``timing.json``
    in the trainer's ``default_root_dir``; rank zero only. ``every_s``: how often, at most, a training step
    rewrites the file (validation and the end of training always do)."""

    def __init__(self, every_s: float = 60.0) -> None:
        if not every_s > 0:
            raise ValueError(f"RunClock: every_s must be > 0 seconds, got {every_s}")
        self.every_s = float(every_s)
        self._path: Path | None = None
        self._segments: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._last_write = 0.0

    @staticmethod
    def _now() -> str:
        return dt.datetime.now().isoformat(timespec="seconds")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start, not on_fit_start: a resumed run's global_step is restored by then
        if not trainer.is_global_zero:
            return
        self._path = Path(trainer.default_root_dir) / FILE
        # a fit from a checkpoint continues the record; a fresh one (ckpt_path None) in a folder that holds an
        # earlier run's record replaces it, as it replaces that run's checkpoints
        ckpt = getattr(trainer, "ckpt_path", None)
        self._segments = []
        if ckpt is not None:
            # ckpt_path=last may resume another folder's run (sgseg.lit.run: a new Hydra run directory that
            # continues the previous one): its record, beside its checkpoints/, is where this one continues
            for earlier in (self._path, Path(ckpt).parent.parent / FILE):
                if earlier.is_file():
                    self._segments = read_timing(earlier)
                    break
        self._t0 = time.perf_counter()
        step = int(trainer.global_step)
        self._segments.append(
            {"start": self._now(), "updated": self._now(), "seconds": 0.0, "first_step": step,
             "last_step": step, "finished": False}
        )  # fmt: skip
        self._write(trainer)

    def _write(self, trainer: pl.Trainer, finished: bool = False) -> None:
        if self._path is None:
            return
        seg = self._segments[-1]
        seg.update(updated=self._now(), seconds=round(time.perf_counter() - self._t0, 1))
        seg.update(last_step=int(trainer.global_step), finished=finished)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps({"segments": self._segments}, indent=1))
        os.replace(tmp, self._path)  # a kill mid-write leaves the previous file, never half of one
        self._last_write = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._path is not None and time.perf_counter() - self._last_write >= self.every_s:
            self._write(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, finished=True)
        self._path = None
