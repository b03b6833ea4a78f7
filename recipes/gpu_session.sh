#!/usr/bin/env bash
# One GPU session through the device tool (15 minutes of device time, a bare machine, no network):
# the Teacher continued (warm restart of its cosine) and the bundled Student distilled from the committed
# Teacher (models/teacher.ckpt), side by side on the one GPU, then both best checkpoints, weights only, in $OUT.
#
# Here, before the session (the data travels as zip parts small enough to ride beside the wheels):
#   ../shared/tools/pack-data --splits train,val --part-mib 33       # .devdata/data-{1..4}.zip
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#       rapidfuzz albumentations albucore pydantic pydantic-core ...  # what the device image lacks
# Then back to back (the machine and its /tmp go back ~30 s after a call):
#   run: bash recipes/gpu_session.sh unpack        carry .devdata/data-1.zip .devdata/data-4.zip .whl
#   run: bash recipes/gpu_session.sh unpack        carry .devdata/data-2.zip
#   run: bash recipes/gpu_session.sh train 640 555 carry .devdata/data-3.zip  (unpacks it first)
#   run: bash recipes/gpu_session.sh collect 200   (waits for both runs, copies their results to $OUT)
# SECONDS is each run's --max-time, which also sizes the cosine schedules; WAIT is how long this call
# waits for the runs (they run on in their own sessions; a later `collect` picks them up).
set -euo pipefail
stage=${1:?usage: gpu_session.sh unpack | train SECONDS [WAIT] | collect [WAIT]}
case $stage in unpack | train | collect) ;; *) echo "gpu_session.sh: unknown stage '$stage'" >&2; exit 2 ;; esac
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
export DATA=${DATA:-/tmp/data} RUNS=${RUNS:-/tmp/runs} WORKERS=${WORKERS:-7}
export OUT=${OUT:-$RUNS/out}

mkdir -p "$DATA"
for zip in .devdata/*.zip; do  # once each: a zip left from an earlier call must not rewrite lines in use
  mark="$DATA/.unpacked-$(basename "$zip")"
  [ -e "$zip" ] && [ ! -e "$mark" ] && python3 -m zipfile -e "$zip" "$DATA" && touch "$mark"
done
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
if [ "$stage" = unpack ]; then
  python3 -c "import torch, rapidfuzz, albumentations, htrjand.cli; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
  find "$DATA" -name '*.jpg' -o -name '*.png' | wc -l
  exit 0
fi

mkdir -p "$OUT"
if [ "$stage" = train ]; then
  seconds=${2:?train needs SECONDS} wait_seconds=${3:-540}
  mkdir -p "$RUNS/cfg"
  for name in teacher-gpu distill-gpu; do  # the recipes, reading the unpacked data, without their test section
    sed -e "s#\.\./shared/data#$DATA#g" -e '/^  test:/d' "recipes/$name.yaml" >"$RUNS/cfg/$name.yaml"
  done
  limit=$((seconds + 150))  # data loading and the final report on top of the training time
  start() {  # NAME ARGS...: a run in its own session (it outlives this call), NAME.done when it ends
    local name=$1; shift
    setsid nohup bash -c 'timeout "$0" python3 -m htrjand "$@"; echo $? >"$RUNS/'"$name"'.done"' "$limit" "$@" \
      >"$RUNS/$name.log" 2>&1 </dev/null &
  }
  start teacher train --config "$RUNS/cfg/teacher-gpu.yaml" --init models/teacher.ckpt --output "$RUNS/teacher" \
    --lr 1e-3 --warmup-steps 100 --max-steps 100000 --max-time "$seconds" --workers "$WORKERS"
  start student distill --config "$RUNS/cfg/distill-gpu.yaml" --init src/htrjand/models/student.ckpt \
    --teacher models/teacher.ckpt --output "$RUNS/student" --batch-size 64 --lr 6e-4 --warmup-steps 100 \
    --epochs 1000 --max-steps 100000 --max-time "$seconds" --workers "$WORKERS"
else
  wait_seconds=${2:-540}
fi
deadline=$((SECONDS + wait_seconds))  # this call's own limit
until [ -e "$RUNS/teacher.done" ] && [ -e "$RUNS/student.done" ]; do
  [ "$SECONDS" -ge "$deadline" ] && { tail -n 3 "$RUNS"/*.log; echo "still running: collect again"; exit 0; }
  sleep 5
done

for run in teacher student; do  # weights only (slim_checkpoint): a Teacher's full checkpoint passes 16 MiB
  cp "$RUNS/$run.log" "$OUT/$run.log" || true
  cp "$RUNS/$run/report.md" "$OUT/$run-report.md" 2>/dev/null || true
  [ -e "$RUNS/$run/best.ckpt" ] && python3 -c 'import sys; from htrjand.checkpoint import slim_checkpoint
slim_checkpoint(sys.argv[1], sys.argv[2], digest=False)' "$RUNS/$run/best.ckpt" "$OUT/$run.ckpt"
done
tail -n 5 "$RUNS"/*.log
ls -la "$OUT"
