"""Thin Hydra entry point: ``python -m sgseg.evaluate run_dir=RUN [task=predcls|sgcls|sgdet] [ckpt=best|last|PATH]``.

Re-tests a trained stage-2 run without training (:func:`sgseg.lit.run.run_evaluation`): its config and checkpoint,
the same model and module as training builds, the same test stage — metrics.json, the per-predicate recall table
and plot — written under ``<run dir>/evaluate/<task>-<checkpoint>`` (or ``out=DIR``), with ``evaluation.json``
(what was tested).

``mask_source=transfer|oracle|shuffled`` swaps grounding's masks at test time (the same weights grounded on
other masks: how much the trained model reads them), written under ``.../<task>-<checkpoint>-<source>-masks``;
``task=sgdet require_overlap=true|false`` re-tests SGDet on the pairs of overlapping detections only (the
reference) or on every ordered pair (the synthetic experiments' setting), under ``...-overlapping-pairs`` /
``...-all-pairs``; ``split=val`` re-tests on the validation images (``...-val``); ``relations=seen|zeroshot``
scores only the GT relations whose triplet the training split has / lacks (``...-seen-relations``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# ``${sgseg.default:A,B}``: A, or B where A is null (conf/evaluate.yaml: Hydra's run dir, and with it
# evaluate.log, is ``out`` when one is given, so ``out=`` writes nothing into the run directory)
OmegaConf.register_new_resolver(
    "sgseg.default", lambda value, default: default if value is None else value, replace=True
)


def _run_subdir(run_dir: str | None, name: str) -> str:
    """``${sgseg.run_subdir:${oc.select:run_dir,null},evaluate}``: ``<run_dir>/evaluate``, Hydra's run dir when no
    ``out`` is given.

    Exits with one line before Hydra creates that folder where ``run_dir`` is not given (``???``) or is not a run of
    ``python -m sgseg.train`` (a mistyped path would otherwise be left behind as a new ``<run_dir>/evaluate``)."""
    if run_dir is None:
        raise SystemExit(
            "sgseg.evaluate: run_dir is required: python -m sgseg.evaluate run_dir=<a run directory of "
            "python -m sgseg.train> [task=...] [ckpt=best|last|PATH]"
        )
    from sgseg.lit.build import ConfigError
    from sgseg.lit.factory import run_config_path

    try:
        run_config_path(run_dir)
    except ConfigError as err:
        raise SystemExit(f"sgseg.evaluate: {err}") from None
    return str(Path(run_dir) / name)


OmegaConf.register_new_resolver("sgseg.run_subdir", _run_subdir, replace=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from sgseg.data.errors import DatasetError
    from sgseg.lit.build import ConfigError
    from sgseg.lit.run import run_evaluation

    try:
        run_evaluation(cfg)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        raise SystemExit(f"sgseg.evaluate: {err}") from None


if __name__ == "__main__":
    main()
