"""Thin Hydra entry point: ``python -m sgseg.train [experiment=...] [task=predcls|sgcls|sgdet] ...``.

Composes ``conf/train.yaml`` and hands the config to :mod:`sgseg.lit.run`, which runs stage 1 (detector
pretraining), stage 2 (scene-graph training) or both chained through the detector checkpoint file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        from sgseg.lit.run import run
    except ImportError as err:  # the stage runners land with the detector / scene-graph issues
        print(
            f"sgseg: the training pipeline is not there yet ({err.name} is missing); "
            "what exists today: the evaluator (sgseg.evaluation), the data loaders and the synthetic "
            "benchmark (python -m sgseg.data.synthetic out=DIR). See README.md.",
            file=sys.stderr,
        )
        return None
    return run(cfg)


if __name__ == "__main__":
    main()
