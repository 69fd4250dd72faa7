#!/usr/bin/env bash
# Table 3 (+SA vs -SA, paired seeds) on a crowded synthetic set, where attention has something to find: 70 % of an
# identity's pictures also hold a second pedestrian half inside the box, and every camera has an occluder in half of
# its pictures. Same scale and recipe as scripts/table3_readings.sh (CPU demo, 6 epochs, fp32); the CPU demo recipe
# only (-SA; +SA with the paper's softmax, with softmax_mean, then with L1 once those are done).
#
#   scripts/table3_crowd.sh OUT [SEEDS]        # e.g. scripts/table3_crowd.sh runs/t3crowd 5
#   python scripts/table3_paired.py OUT --json docs/ablation-table3-crowd.json
set -euo pipefail
OUT=${1:?usage: table3_crowd.sh OUT [SEEDS]}
SEEDS=${2:-5}
PY=${PYTHON:-python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see scripts/table3_readings.sh
[ -d "$OUT/data" ] || $PY -m spanet synth "$OUT/data" --preset demo --train-ids 50 --test-ids 50 --images-per-id 8 \
    --distractors 50 --junk 20 --height 96 --width 48 --crowd 0.7 --occlusion 0.5 --no-progress
COMMON=(--config configs/cpu_demo.yaml --data-root "$OUT/data"
        --set train.amp=none --set train.channels_last=false
        --set optim.epochs=6 --set "optim.milestones=[5]" --set train.eval_every=0 --set train.progress=false)
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
done
cell l1 "$SEEDS" with-sa -- --set model.attention=l1
