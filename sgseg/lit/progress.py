"""What the main job says while it runs: a banner per stage and progress lines that survive a log file.

Where this sits: callbacks of every Trainer the runners build (``conf/callbacks/default.yaml``). In a
terminal the rich progress bar stays; when stdout is a file or a pipe (``make run > log.txt``, CI, ``nohup``,
a cluster job) a rich bar only writes its last frame, so :func:`progress_bar` picks :class:`LogProgress`
instead: one plain line at a steady wall-clock interval with step/total, the losses, it/s and the ETA.
:class:`StageBanner` prints, either way, what a stage trains, on which data and for how many steps.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar

# the validation numbers a progress line shows (when the stage logs them)
HEADLINE = (
    "vg_map50",
    "coco_box_ap",
    "coco_mask_ap",
    "R@50",
    "mR@50",
    "zsR@50",
    "mask_AP_unrefined",
    "mask_AP_refined",
)


def progress_bar(interval_s: float = 30.0, terminal: bool | None = None) -> ProgressBar:
    """The rich bar when stdout is a terminal, else :class:`LogProgress` (``terminal`` forces either)."""
    if terminal is None:
        terminal = sys.stdout.isatty()
    return RichProgressBar() if terminal else LogProgress(interval_s=interval_s)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _total(value: float | int) -> str:
    return str(int(value)) if isinstance(value, (int, float)) and math.isfinite(value) else "?"


class LogProgress(ProgressBar):
    """One line per ``interval_s`` seconds (and at the end of each loop) instead of a redrawn bar.

    Training: ``[train] step 120/800 (15%) epoch 0 | loss 1.234 loss_rel 0.801 | 0.63 it/s | elapsed 3:10
    | ETA 17:58``; validation and test: ``[val] batch 3/13 | 1.2 it/s``. it/s is measured over the lines'
    interval; the ETA divides the remaining steps by the average rate since the stage started (validation
    time included, so it is what the wall clock will show).
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        if interval_s < 0:
            raise ValueError(f"LogProgress: interval_s must be >= 0 seconds, got {interval_s}")
        self.interval_s = float(interval_s)
        self._enabled = True
        self._start = 0.0
        self._start_step = 0
        self._last = (0.0, 0)  # (time, step) of the last line
        self._eval_last = (0.0, 0)
        self._eval_done = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _emit(self, text: str) -> None:
        if self._enabled and (self._trainer is None or self.trainer.is_global_zero):
            print(text, flush=True)

    # ------------------------------------------------------------------ training
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        self._start, self._start_step = now, trainer.global_step
        self._last = (now, trainer.global_step)

    def _losses(self, trainer: pl.Trainer) -> str:
        shown = []
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith("train/") and "loss" in key:
                try:
                    shown.append(f"{key.removeprefix('train/')} {float(value):.4f}")
                except (TypeError, ValueError):
                    continue
        return " ".join(shown) or "loss n/a"

    def train_line(self, trainer: pl.Trainer) -> str:
        now = time.monotonic()
        step = trainer.global_step
        total = trainer.estimated_stepping_batches
        t_last, s_last = self._last
        rate = (step - s_last) / (now - t_last) if now > t_last and step > s_last else float("nan")
        done = step - self._start_step
        avg = done / (now - self._start) if now > self._start and done > 0 else float("nan")
        remaining = (total - step) / avg if math.isfinite(total) and avg > 0 else float("nan")
        pct = f" ({100 * step / total:.0f}%)" if math.isfinite(total) and total > 0 else ""
        self._last = (now, step)
        return (
            f"[train] step {step}/{_total(total)}{pct} epoch {trainer.current_epoch} | {self._losses(trainer)}"
            f" | {rate:.2f} it/s | elapsed {_duration(now - self._start)} | ETA {_duration(remaining)}"
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = trainer.estimated_stepping_batches
        last = math.isfinite(total) and trainer.global_step >= total
        if last or time.monotonic() - self._last[0] >= self.interval_s:
            self._emit(self.train_line(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._last[1]:
            self._emit(self.train_line(trainer))

    # ------------------------------------------------------------------ validation / test
    def _eval_start(self) -> None:
        self._eval_last = (time.monotonic(), 0)
        self._eval_done = 0

    def _eval_line(self, name: str, done: int, total: float, force: bool) -> None:
        now = time.monotonic()
        t_last, n_last = self._eval_last
        if not force and now - t_last < self.interval_s:
            return
        rate = (done - n_last) / (now - t_last) if now > t_last and done > n_last else float("nan")
        self._eval_last = (now, done)
        self._emit(f"[{name}] batch {done}/{_total(total)} | {rate:.2f} it/s")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_start()
            self._emit(
                f"[val] validating at step {trainer.global_step} ({_total(self.total_val_batches)} batches)"
            )

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_done += 1
            self._eval_line("val", self._eval_done, self.total_val_batches, force=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            shown = [f"{k} {float(metrics[k]):.4f}" for k in (f"val/{h}" for h in HEADLINE) if k in metrics]
            self._emit(
                f"[val] done at step {trainer.global_step}" + (" | " + " ".join(shown) if shown else "")
            )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start()
        total = sum(_as_number(n) for n in trainer.num_test_batches)
        self._emit(f"[test] testing ({_total(total)} batches)")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_done += 1
        total = sum(_as_number(n) for n in trainer.num_test_batches)
        self._eval_line("test", self._eval_done, total, force=False)


def _as_number(n: Any) -> float:
    return float(n) if isinstance(n, (int, float)) else float("inf")


class StageBanner(Callback):
    """Before a stage trains (and before it tests): what it is, on which data, and how many steps."""

    def __init__(self, width: int = 100) -> None:
        self.width = width

    @staticmethod
    def what(pl_module: pl.LightningModule, trainer: pl.Trainer) -> str:
        from sgseg.lit.detector_module import DetectorPretrainModule
        from sgseg.lit.scene_graph_module import SceneGraphModule

        dm = trainer.datamodule
        coco = getattr(dm, "coco_factory", None) is not None
        if isinstance(pl_module, DetectorPretrainModule):
            backbone = (getattr(pl_module.detector, "config", None) or {}).get("backbone") or {}
            name = backbone.get("name", type(pl_module.detector).__name__)
            return f"stage 1: detector pretraining ({name}) on {'VG boxes + COCO boxes and masks' if coco else 'VG boxes only'}"
        if isinstance(pl_module, SceneGraphModule):
            model = pl_module.model
            context = type(getattr(model, "context", None)).__name__
            parts = [f"stage 2: scene-graph training, {pl_module.mode}, {context}"]
            if getattr(model, "refinement", None) is not None:
                parts.append("mask refinement on COCO")
            return ", ".join(parts) + " (detector frozen)"
        return f"training {type(pl_module).__name__}"

    @staticmethod
    def data(trainer: pl.Trainer, splits: tuple[tuple[str, str], ...]) -> list[str]:
        dm = trainer.datamodule
        if not hasattr(dm, "dataset"):
            return ["  (dataloaders passed to the Trainer directly)"]
        lines = []
        for name, split in splits:
            if name == "coco" and getattr(dm, "coco_factory", None) is None:
                continue
            try:
                ds = dm.dataset(name, split)
            except Exception as err:  # noqa: BLE001 - a banner must not stop the job; the loaders will say why
                lines.append(f"  {name} {split}: not readable ({type(err).__name__}: {err})")
                continue
            root = getattr(ds, "root", None)
            lines.append(f"  {name} {split}: {len(ds)} images" + (f"  ({root})" if root is not None else ""))
        return lines

    def _print(self, lines: list[str]) -> None:
        rule = "=" * self.width
        print("\n".join([rule, *lines, rule]), flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        lines = [self.what(pl_module, trainer), "data:"]
        lines += self.data(trainer, (("vg", "train"), ("coco", "train"), ("vg", "val"), ("coco", "val")))
        total = trainer.estimated_stepping_batches
        per_epoch = trainer.num_training_batches
        val = trainer.val_check_interval
        when = (f"every {val} steps" if isinstance(val, int) else
                f"every {val:g} epoch" if trainer.check_val_every_n_epoch else "never")  # fmt: skip
        sizes = [f"{getattr(dm, 'batch_size_vg', '?')} VG"]
        if getattr(dm, "coco_factory", None) is not None:
            sizes.append(f"{getattr(dm, 'batch_size_coco', '?')} COCO")
        lines.append(
            f"steps: {_total(total)} (max_steps={trainer.max_steps}, max_epochs={trainer.max_epochs}, "
            f"{_total(per_epoch)} per epoch, batches of {' + '.join(sizes)} images); validation {when}; "
            f"starting at step {trainer.global_step}"
        )
        lines.append(f"output: {trainer.default_root_dir}")
        self._print(lines)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        lines = [f"test: {self.what(pl_module, trainer)}"]
        lines += self.data(trainer, (("vg", "test"), ("coco", "val")))
        self._print(lines)
