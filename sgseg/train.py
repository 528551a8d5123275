"""Thin Hydra entry point: ``python -m sgseg.train [experiment=...] [task=predcls|sgcls|sgdet] ...``.

Composes ``conf/train.yaml`` and hands the config to :func:`sgseg.lit.run.run`, which runs stage 1 (detector
pretraining), stage 2 (scene-graph training) or both chained through the detector checkpoint file.
In a multirun (``-m``) a failing job records its traceback in ``<job dir>/FAILED.txt`` and returns, so the
other jobs of the sweep still run.
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


_STOPPED: list[int] = []


def _stop_sweep(signum, frame) -> None:
    _STOPPED.append(signum)  # Lightning turns the interrupt into SystemExit(1); this flag survives that
    raise KeyboardInterrupt(f"signal {signum}: stopping the sweep")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sgseg.lit.run import run

    if not _is_multirun():
        return run(cfg)
    # A SIGTERM (a scheduler stopping the sweep) must end the sweep; Lightning's own handler only logs it,
    # and composes with this one while a Trainer runs.
    signal.signal(signal.SIGTERM, _stop_sweep)
    signal.signal(signal.SIGINT, _stop_sweep)
    try:
        return run(cfg)
    except BaseException as err:  # noqa: BLE001 - a sweep job must not take the sweep down
        if isinstance(err, KeyboardInterrupt) or _STOPPED:
            raise SystemExit(130) from err  # the sweep itself was stopped (Ctrl-C, SIGTERM): stop
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "FAILED.txt").write_text(traceback.format_exc())
        print(
            f"sgseg: job failed ({type(err).__name__}: {err}); traceback in {out / 'FAILED.txt'}",
            file=sys.stderr,
        )
        return None


if __name__ == "__main__":
    main()
