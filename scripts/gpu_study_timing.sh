#!/usr/bin/env bash
# How long the synthetic lab study's stage-2 jobs take on one CUDA GPU: the study's own job command (MOTIF
# SGCls, `sweep=study`, the archived frozen detector, fp32, one data-loading thread each) for EPOCHS epochs,
# first the baseline and the grounded row one at a time, then PARALLEL jobs at once (half of each row), so the
# table gives one job's speed alone and the GPU's throughput when several jobs share it. Prints a table from
# each job's timing.json (fit time, validations included; not the data generation of the first job).
#   bash scripts/gpu_study_timing.sh                 EPOCHS=1 PARALLEL=8 by default; extra args go to every job
# Runs on CPU too (then it times the CPU). WORK=dir: where the job folders go (default: a new temporary one);
# LOGS=dir: the job logs and the table (default: WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
EPOCHS="${EPOCHS:-1}"
PARALLEL="${PARALLEL:-8}"
WORK="${WORK:-$(mktemp -d)}"
LOGS="${LOGS:-$WORK}"
DET="$PWD/docs/runs/study12/det_joint_b/detector/detector.pt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', '| torch', torch.__version__)"

job() {  # row seed name [extra overrides]
    local row=$1 seed=$2 name=$3
    shift 3
    "$PY" -m sgseg.train sweep=study experiment=synthetic_motif task=sgcls stage=scene_graph \
        detector.checkpoint="$DET" model.trainer.max_epochs="$EPOCHS" 'model.optim.milestones=[4000]' \
        +model.trainer.val_check_interval=0.5 num_threads=1 logger.wandb=null cpu_fast_kernels=false \
        row="$row" seed="$seed" hydra.run.dir="$WORK/$name" "$@" > "$LOGS/$name.log" 2>&1
}

t0=$(date +%s)
for row in joint refine; do
    job "$row" 0 "alone_$row" "$@"
    echo "alone $row done at $(( $(date +%s) - t0 )) s (the first job generates the data when they are missing)"
done
t1=$(date +%s)
for i in $(seq 0 $((PARALLEL - 1))); do
    row=$([ $((i % 2)) = 0 ] && echo joint || echo refine)
    job "$row" $((i / 2 + 1)) "par_${row}_s$((i / 2 + 1))" "$@" &
done
wait
wall=$(( $(date +%s) - t1 ))
"$PY" - "$WORK" "$EPOCHS" "$wall" <<'EOF' | tee "$LOGS/gpu_study_timing.md"
import json, statistics, sys
from pathlib import Path
work, epochs, wall = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def fit(name):
    t = json.loads((work / name / "timing.json").read_text())
    return sum(s["seconds"] for s in t["segments"]), t["segments"][-1]["last_step"]
print(f"| job ({epochs} epoch{'s' * (epochs > 1)}) | jobs | fit s (median) | steps | s / step |")
print("| --- | --- | --- | --- | --- |")
for row, label in (("joint", "baseline"), ("refine", "grounded")):
    s, n = fit(f"alone_{row}")
    print(f"| {label}, alone | 1 | {s:.0f} | {n} | {s / n:.3f} |")
for row, label in (("joint", "baseline"), ("refine", "grounded")):
    runs = sorted(p.name for p in work.glob(f"par_{row}_s*") if p.is_dir())
    got = [fit(r) for r in runs]
    s = statistics.median(x for x, _ in got)
    print(f"| {label}, {sum(p.is_dir() for p in work.glob('par_*'))} at once | {len(runs)} | {s:.0f} | {got[0][1]} | {s / got[0][1]:.3f} |")
print(f"\nwall time of the parallel block (start to last end, test included): {wall} s")
EOF
