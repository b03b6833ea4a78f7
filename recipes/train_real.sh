#!/usr/bin/env bash
# Train the Teacher and the Student side by side on copiste + hooker (train/val splits), for a wall-time
# budget: a 1-epoch trial of each sets the epoch count so the cosine schedule ends inside the budget.
# usage: recipes/train_real.sh DATA_DIR OUT_DIR BUDGET_SECONDS [extra htrjand train flags...]
set -euo pipefail
data=$1; out=$2; budget=$3; shift 3
common=(--train "$data/copiste/train.tsv" "$data/hooker/train.tsv" --val "$data/copiste/val.tsv" "$data/hooker/val.tsv"
        --batch-size 32 --lr 1.5e-3 --warmup-steps 300 --workers 6 --progress false --patience 1000 "$@")
start=$(date +%s)
for p in teacher student; do
  python3 -m htrjand train --preset $p "${common[@]}" --output "$out/trial-$p" --epochs 1 > "$out/trial-$p.log" 2>&1 &
done
wait
trial=$(( $(date +%s) - start ))
left=$(( budget - trial ))
epochs=$(( left * 9 / 10 / trial ))
echo "trial epoch took ${trial}s; training $epochs epochs in the remaining ${left}s"
for p in teacher student; do
  python3 -m htrjand train --preset $p "${common[@]}" --output "$out/$p" --epochs "$epochs" \
      --max-time "00:00:00:$(( left - 30 ))" > "$out/$p.log" 2>&1 &
done
wait
echo "done after $(( $(date +%s) - start ))s"
