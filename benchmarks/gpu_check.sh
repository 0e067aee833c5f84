#!/usr/bin/env bash
# One-call GPU check for a machine with one NVIDIA GPU and no network.
#
#   bash benchmarks/gpu_check.sh [SCALE]
#
# SCALE (default 1.0) multiplies the data sizes: 1.0 generates 1M stand-in spectra for CNN_1M and uses the
# first 100k of them for MLP_100k; 0.01 is a quick partial run. It brings no data files and installs nothing
# from the network: packages missing on the machine (webdataset, braceexpand) come as wheels in .whl/ beside
# the repository (see benchmarks/README.md). Steps: GPU tests, stand-in data, shards, then `specstream bench`
# for CNN_1M and MLP_100k (fast path end to end, and a timed slice of the reference path for the ratio),
# then the multi-GPU scaling model fed with the measured CNN_1M epoch.
# The report goes to $OUT (the device tool's output folder) when set, else benchmarks/results/gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-1.0}"
REPORT_DIR="${OUT:-benchmarks/results/gpu}"
WORK="${GPU_CHECK_WORK:-/tmp/specstream_gpu_check}"
JOBS="${GPU_CHECK_JOBS:-$(nproc)}"
PY="${PYTHON:-python3}"
# GPU_CHECK_EPOCHS and GPU_CHECK_COMPILE=0 shorten a CPU trial of this script; leave them unset on a GPU.
EXTRA=()
[ -n "${GPU_CHECK_EPOCHS:-}" ] && EXTRA+=(--epochs "$GPU_CHECK_EPOCHS")
[ "${GPU_CHECK_COMPILE:-1}" = 0 ] && EXTRA+=(--no-compile)
export PYTHONUNBUFFERED=1
mkdir -p "$REPORT_DIR" "$WORK"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

# Packages: carried wheels, then specstream itself, all offline.
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$WORK/pip.log" 2>&1 \
    || { cat "$WORK/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, specstream; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

log "GPU tests"
"$PY" -m pytest -q -m gpu tests 2>&1 | tee "$REPORT_DIR/gpu_tests.log" | tail -5

# Stand-in data: JOBS parallel synth processes (flat layout: no PyTables needed), then shards in float16.
N_TOTAL=$("$PY" -c "print(max(4000, int(1_000_000 * $SCALE)) + 2000)")
N_MLP=$("$PY" -c "print(max(2000, int(100_000 * $SCALE)))")
PER_JOB=$(( (N_TOTAL + JOBS - 1) / JOBS ))
log "stand-in data: $N_TOTAL spectra in $JOBS files"
rm -rf "$WORK/data" "$WORK/shards" && mkdir -p "$WORK/data"
for ((job = 0; job < JOBS; job++)); do
    specstream synth "$WORK/data/part_$job.h5" --n "$PER_JOB" --seed "$job" --layout flat > /dev/null 2>&1 &
done
wait
log "shards"
specstream shard "$WORK"/data/part_*.h5 --out "$WORK/shards" --dtype float16 --test-size 1000 --val-size 1000 \
    2>&1 | tail -3 | tee "$REPORT_DIR/shard.log"

log "bench CNN_1M and MLP_100k"
specstream bench --data "$WORK/shards" -e CNN_1M --data-paths resident --reference-steps 10 \
    --reference-workers 8 --out "$REPORT_DIR" --runs-dir "$WORK/runs" "${EXTRA[@]}" 2>&1 | tail -12
specstream bench --data "$WORK/shards" -e MLP_100k --train-size "$N_MLP" --data-paths resident,streaming \
    --num-workers 0 --reference-steps 20 --reference-workers 8 --out "$REPORT_DIR" --runs-dir "$WORK/runs" "${EXTRA[@]}" \
    2>&1 | tail -12
log "4-GPU scaling model from the measured CNN_1M epoch"
"$PY" benchmarks/scaling_model.py --from-bench "$REPORT_DIR" --out-dir "$REPORT_DIR" | sed -n '6,18p'
log "done; reports in $REPORT_DIR"
