#!/usr/bin/env bash
# Table 3 (+SA vs -SA on the full model) under four readings of the SA layer, paired seeds, CPU scale.
# Results: docs/ablation.md ("Table 3 under four readings"); raw: docs/ablation-table3-readings.json.
#
#   scripts/table3_readings.sh OUT [SEEDS]      # e.g. scripts/table3_readings.sh runs/t3 5
#   python scripts/table3_paired.py OUT --json docs/ablation-table3-readings.json
#
# Seed k is trained for every cell before seed k+1 starts (each `spanet ablation --seeds k` call skips the seeds it
# already finished), so an interrupted run still leaves complete pairs. Rows without SA do not depend on
# model.attention, so -SA is trained once for the three readings that share the CPU demo recipe (folder paper/)
# and once for the official recipe, whose other switches do change it. Wall and CPU time per call: OUT/times.tsv.
set -euo pipefail
OUT=${1:?usage: table3_readings.sh OUT [SEEDS]}
SEEDS=${2:-5}
PY=${PYTHON:-python}
# Waiting OpenMP threads sleep instead of spinning: on a shared, busy machine a spinning thread burns the core its
# preempted partner needs (the thread count stays torch's default; the numbers do not depend on it).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# 50 training ids × 8 pictures (400 images), 50 test ids, drawn at the 96×48 the demo trains at
[ -d "$OUT/data" ] || $PY -m spanet synth "$OUT/data" --preset demo --train-ids 50 --test-ids 50 --images-per-id 8 \
    --distractors 50 --junk 20 --height 96 --width 48 --no-progress
COMMON=(--config configs/cpu_demo.yaml --data-root "$OUT/data"
        --set train.amp=none --set train.channels_last=false
        --set optim.epochs=6 --set "optim.milestones=[5]" --set train.eval_every=0 --set train.progress=false)
# The official code's recipe (configs/market1501_official.yaml vs configs/market1501.yaml), on the CPU demo scale.
OFFICIAL=(--set model.attention=l1 --set loss.weighting=official --set model.head_init=official
          --set optim.warmup_epochs=0 --set data.erasing_p=0 --set model.dropout=0.5)
cell() {  # LABEL SEEDS ROWS... -- EXTRA_ARGS...
    local label=$1 seeds=$2; shift 2
    local rows=(); while [ "$1" != "--" ]; do rows+=("$1"); shift; done; shift
    local start=$(date +%s)
    /usr/bin/time -f "%U %S" -o "$OUT/.cpu" $PY -m spanet ablation "${COMMON[@]}" "$@" \
        --rows "${rows[@]}" --seeds "$seeds" --output "$OUT/$label" > "$OUT/$label.log" 2>&1
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$seeds" "$start" "$(date +%s)" "$(tr ' ' '\t' < "$OUT/.cpu")" >> "$OUT/times.tsv"
}
for k in $(seq 1 "$SEEDS"); do
    cell paper "$k" with-sa without-sa --
    cell softmax_mean "$k" with-sa -- --set model.attention=softmax_mean
    cell l1 "$k" with-sa -- --set model.attention=l1
    cell official_recipe "$k" with-sa without-sa -- "${OFFICIAL[@]}"
done
