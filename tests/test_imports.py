"""Layering: the models, data and evaluation packages import neither Lightning nor Hydra (only ``sgseg.lit`` and
the entry points do), so they can be used from plain PyTorch code and scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra")


@pytest.mark.slow
def test_models_data_evaluation_import_no_lightning_or_hydra() -> None:
    # a fresh interpreter: this test process has long imported both
    code = (
        "import json, sys\n"
        "import sgseg.models, sgseg.data, sgseg.evaluation, sgseg.data.synthetic, sgseg.ops.boxes\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
