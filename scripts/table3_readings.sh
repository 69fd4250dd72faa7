#!/usr/bin/env bash
# Table 3 (+SA vs -SA on the full model) under four readings of the SA layer, paired seeds, CPU scale.
# Results: docs/ablation.md ("Table 3 under four readings"); raw: docs/ablation-table3-readings.json.
#
#   scripts/table3_readings.sh OUT [SEEDS]      # e.g. scripts/table3_readings.sh runs/t3 5
#   python scripts/table3_paired.py OUT --cam-images 25 --json docs/ablation-table3-readings.json
#
# Seed k is trained for every cell before seed k+1 starts (each `spanet ablation --seeds k` call skips the seeds it
# already finished), so an interrupted run still leaves complete pairs. Rows without SA do not depend on
# model.attention, so -SA is trained once for the three readings that share the CPU demo recipe (folder paper/)
# and once for the official recipe, whose other switches do change it. Wall and CPU time per call: OUT/times.tsv.
# Stopping it: a training killed mid-run saves last.pt, which the next call resumes; delete that seed's folder first.
set -euo pipefail
OUT=${1:?usage: table3_readings.sh OUT [SEEDS]}
SEEDS=${2:-5}
PY=${PYTHON:-python}
source "$(dirname "$0")/table3_common.sh"
mkdir -p "$OUT"
[ -d "$OUT/data" ] || $PY -m spanet synth "$OUT/data" "${SYNTH[@]}"
# The official code's recipe (configs/market1501_official.yaml vs configs/market1501.yaml), on the CPU demo scale.
OFFICIAL=(--set model.attention=l1 --set loss.weighting=official --set model.head_init=official
          --set optim.warmup_epochs=0 --set data.erasing_p=0 --set model.dropout=0.5)
for k in $(seq 1 "$SEEDS"); do
    cell paper "$k" with-sa without-sa --
    cell softmax_mean "$k" with-sa -- --set model.attention=softmax_mean
    cell l1 "$k" with-sa -- --set model.attention=l1
    cell official_recipe "$k" with-sa without-sa -- "${OFFICIAL[@]}"
done
