#!/usr/bin/env bash
# One job of the synthetic lab study at the study's 12-epoch schedule, as the archived runs were made:
# train (with ckpt_path=last: sgseg.train resumes from the job's checkpoints/last.ckpt when one is there, else
# starts fresh), test the last weights, re-test a grounded row with all-zero masks (mask_source=empty), and
# optionally archive the run next to the study's.
#
#   DETECTOR=DET.pt bash scripts/study_job.sh EXPERIMENT TASK ROW SEED [extra overrides ...]
#   DETECTOR=DET.pt bash scripts/study_job.sh synthetic_motif sgdet refine 2
#   DETECTOR=DET.pt ARCHIVE=docs/runs/study12 bash scripts/study_job.sh synthetic_vctree sgcls joint 0
#
# Environment: DETECTOR (required: the frozen joint detector's detector.pt), STUDY_DIR (where the job directories
# go, default logs/study), ARCHIVE (a folder: archive the finished run there with `sgseg.results --archive`),
# VAL_CHECK (validations per epoch as Lightning's val_check_interval; default 0.5 — twice an epoch, as the
# archived PredCls/SGCls runs — and 1.0 for SGDet, whose grounded validation takes ~9 min on one thread),
# THREADS (torch threads of each command, default 1 as in the archived runs; with trainer.deterministic=cpu,
# the default since 2026-12-07, a 2-thread run is bit-reproducible too, but its numbers are not the 1-thread
# run's: a grounded SGDet job alone on a quiet 2-core Xeon trains at 1.13 it/s with THREADS=2 vs 0.73 it/s),
# PY (the Python, default python), DRY_RUN=1 (print the commands, run nothing).
# The job directory is $STUDY_DIR/<task>_<model>_<row>_s<seed> (model: the experiment without `synthetic_`),
# the archive's naming. Its file DONE marks a finished job: running the script again then does nothing, so a
# list of jobs can be rerun after an interruption and continues where it stopped. The study's settings:
# 12 epochs, LR × 0.1 at step 4000, one thread unless THREADS says otherwise, no W&B, torchvision's kernels
# (cpu_fast_kernels=false) and, for SGDet, every ordered pair of detections tested
# (model.sampling.test_require_overlap=false; README, *MOTIF SGDet*).
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: DETECTOR=DET.pt bash scripts/study_job.sh EXPERIMENT TASK ROW SEED [overrides ...]" >&2
    exit 2
fi
EXPERIMENT=$1 TASK=$2 ROW=$3 SEED=$4
shift 4
: "${DETECTOR:?set DETECTOR to the frozen joint detector (detector/detector.pt of a synthetic_detector run)}"
if [ -z "${DRY_RUN:-}" ] && [ ! -f "$DETECTOR" ]; then
    echo "study_job.sh: DETECTOR=$DETECTOR is not a file; train one with" \
        "python -m sgseg.train experiment=synthetic_detector cpu_fast_kernels=false" >&2
    exit 2
fi
PY=${PY:-python}
STUDY_DIR=${STUDY_DIR:-logs/study}
NAME=${TASK}_${EXPERIMENT#synthetic_}_${ROW}_s${SEED}
DIR=$STUDY_DIR/$NAME

run() {
    echo "+ $*"
    [ -n "${DRY_RUN:-}" ] || "$@"
}

if [ -f "$DIR/DONE" ]; then
    echo "study_job.sh: $DIR is done ($DIR/DONE); nothing to do"
    exit 0
fi
SGDET=()
VAL_DEFAULT=0.5
if [ "$TASK" = sgdet ]; then
    SGDET=(model.sampling.test_require_overlap=false)
    VAL_DEFAULT=1.0
fi
VAL_CHECK=${VAL_CHECK:-$VAL_DEFAULT}
THREADS=${THREADS:-1}
run "$PY" -m sgseg.train sweep=study "experiment=$EXPERIMENT" "task=$TASK" stage=scene_graph \
    "detector.checkpoint=$DETECTOR" model.trainer.max_epochs=12 'model.optim.milestones=[4000]' \
    "+model.trainer.val_check_interval=$VAL_CHECK" "num_threads=$THREADS" logger.wandb=null cpu_fast_kernels=false \
    "row=$ROW" "seed=$SEED" ${SGDET[@]+"${SGDET[@]}"} "hydra.run.dir=$DIR" ckpt_path=last "$@"
run "$PY" -m sgseg.evaluate "run_dir=$DIR" ckpt=last "num_threads=$THREADS"
if [ "$ROW" != joint ]; then  # the baseline reads no masks: nothing to swap
    run "$PY" -m sgseg.evaluate "run_dir=$DIR" ckpt=last "num_threads=$THREADS" mask_source=empty
fi
if [ -n "${ARCHIVE:-}" ]; then
    run "$PY" -m sgseg.results "$DIR" --checkpoint last --archive "$ARCHIVE" --out "$DIR/results"
fi
[ -n "${DRY_RUN:-}" ] || date -Is > "$DIR/DONE"
