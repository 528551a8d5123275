#!/usr/bin/env bash
# Installs the optional MMDetection backend (mmcv 2.1.0 with compiled ops, mmengine 0.10.7, mmdet 3.3.0)
# into the venv whose python is $1 (default .venv/bin/python). `make install-mmdet` calls this.
#
# PyPI has mmcv 2.x only as a source distribution, so it is built here: against the venv's torch, without
# build isolation (its setup.py imports torch and pkg_resources, hence setuptools<81), with -std=c++20
# instead of -std=c++17 (torch 2.14's headers need C++20). The built wheel is cached under
# $SGSEG_WHEEL_CACHE (default .cache/wheels/, gitignored), keyed by torch version and CPU/CUDA, so a second
# install takes seconds. FORCE_CUDA=1 builds the CUDA ops too (needs nvcc matching torch's CUDA).
set -euo pipefail
PY=${1:-.venv/bin/python}
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
test -x "$PY" || { echo "install_mmdet.sh: no python at $PY (run 'make install' first)" >&2; exit 1; }

"$PY" -m pip install --quiet "setuptools>=77.0.3,<81" ninja==1.13.2 "mmengine==$MMENGINE_VERSION"
TORCH=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
VARIANT=cpu
if [ "${FORCE_CUDA:-0}" = 1 ]; then VARIANT=cuda$("$PY" -c 'import torch; print(torch.version.cuda or "none")'); fi
CACHE=${SGSEG_WHEEL_CACHE:-.cache/wheels}/torch-$TORCH-$VARIANT
WHEEL=$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$WHEEL" ]; then
    echo "install_mmdet.sh: building mmcv $MMCV_VERSION against torch $TORCH ($VARIANT); ~7 min on 2 idle cores"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$WORK"
    tar -xzf "$WORK/mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/mmcv-$MMCV_VERSION"
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "install_mmdet.sh: patching $SRC/setup.py to -std=c++20 failed" >&2; exit 1; }
    mkdir -p "$CACHE"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --quiet --no-deps --no-build-isolation \
        -w "$CACHE" "$SRC"
    WHEEL=$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl | head -n 1)
fi

"$PY" -m pip install --quiet --no-deps "$WHEEL"
"$PY" -m pip install --quiet "mmcv==$MMCV_VERSION" "mmdet==$MMDET_VERSION" "mmengine==$MMENGINE_VERSION" \
    --find-links "$CACHE"
"$PY" -c 'import mmcv, mmdet, mmengine; from mmcv.ops import RoIAlign, nms; print("mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmdet", mmdet.__version__, "ops ok")'
