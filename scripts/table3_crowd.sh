#!/usr/bin/env bash
# Table 3 (+SA vs -SA, paired seeds) on a crowded synthetic set, where attention has something to find: 70 % of an
# identity's pictures also hold a second pedestrian half inside the box, and every camera has an occluder in half of
# its pictures. Same scale and recipe as scripts/table3_readings.sh (scripts/table3_common.sh); the CPU demo recipe
# only: -SA; +SA with the paper's softmax and with softmax_mean, seed by seed; then +SA with L1.
#
#   scripts/table3_crowd.sh OUT [SEEDS]        # e.g. scripts/table3_crowd.sh runs/t3crowd 5
#   python scripts/table3_paired.py OUT --cam-images 25 --json docs/ablation-table3-crowd.json
set -euo pipefail
OUT=${1:?usage: table3_crowd.sh OUT [SEEDS]}
SEEDS=${2:-5}
PY=${PYTHON:-python}
source "$(dirname "$0")/table3_common.sh"
mkdir -p "$OUT"
[ -d "$OUT/data" ] || $PY -m spanet synth "$OUT/data" "${SYNTH[@]}" --crowd 0.7 --occlusion 0.5
for k in $(seq 1 "$SEEDS"); do
    cell paper "$k" with-sa without-sa --
    cell softmax_mean "$k" with-sa -- --set model.attention=softmax_mean
done
cell l1 "$SEEDS" with-sa -- --set model.attention=l1
