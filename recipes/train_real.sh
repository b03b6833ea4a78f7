#!/usr/bin/env bash
# Train the Teacher and the Student side by side on copiste + hooker (train/val splits), as in the
# README's first real-data run. Resumable: run it again with the same OUT to continue.
# usage: recipes/train_real.sh DATA_DIR OUT_DIR EPOCHS [extra htrjand train flags...]
set -euo pipefail
data=$1; out=$2; epochs=$3; shift 3
mkdir -p "$out"
for p in teacher student; do
  python3 -m htrjand train --preset $p \
      --train "$data/copiste/train.tsv" "$data/hooker/train.tsv" --val "$data/copiste/val.tsv" "$data/hooker/val.tsv" \
      --batch-size 32 --lr 2e-3 --warmup-steps 200 --workers 7 --progress false --patience 1000 \
      --epochs "$epochs" --output "$out/$p" --resume auto "$@" > "$out/$p.log" 2>&1 &
done
wait
for p in teacher student; do python3 -m htrjand evaluate "$out/$p/best.ckpt" "$data/copiste/val.tsv" "$data/hooker/val.tsv"; done
