#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (under 8 minutes on one H100/H200-class GPU): the table of
# scripts/gpu_check.py (stage-1 ResNeXt-101-FPN bf16 steps, stage-2 MOTIF baseline vs seg-grounded steps at the
# reference batch, the SGDet test of one image with 40 detections), then the tests marked `gpu`.
#   bash scripts/gpu_check.sh            (from the repository root; PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 360 "$PY" scripts/gpu_check.py "$@"
timeout 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider
