#!/usr/bin/env bash
# The whole paper on one CPU: synthetic cross-view data -> train SPANet and its twin without spatial attention ->
# evaluate with and without re-ranking, with ranked lists -> class activation maps of both (paper Fig. 5) ->
# report.html. Running it again reuses what is already there (finished runs are resumed, i.e. kept).
# Every step is a plain `spanet` command, printed before it runs, so you can copy it for your own data.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_DIR:-demo}
SPANET=${SPANET:-.venv/bin/spanet}
CONFIG=${DEMO_CONFIG:-configs/cpu_demo.yaml}
DATA=$OUT/data
RUN=$OUT/run
RUN_NOSA=$OUT/run_without_sa
start=$(date +%s)
# What `amp: auto` picks here: bf16 where the CPU computes it natively (AMX, AVX512-BF16), fp16 on a GPU, float32 on
# CPUs that only emulate bf16 (most AVX2 laptops and cloud hosts), where each image costs ~3x more. There the demo
# trains 6 epochs instead of 24 so that it still ends within ~10 minutes (README). DEMO_EPOCHS=N sets the epochs,
# DEMO_AMP=none|bf16|fp16 the precision of every step (e.g. DEMO_AMP=none: what an AVX2 host runs).
PRECISION=${DEMO_AMP:-$("${SPANET%/spanet}/python" -c 'from spanet.runtime import choose_precision, resolve_device
print(choose_precision("auto", resolve_device("auto")).amp)' 2>/dev/null || echo none)}
if [ -z "${DEMO_EPOCHS:-}" ]; then
  if [ "$PRECISION" = none ]; then DEMO_EPOCHS=6; else DEMO_EPOCHS=24; fi
fi
SCHEDULE=(--set "optim.epochs=$DEMO_EPOCHS" --set "optim.milestones=[$(( DEMO_EPOCHS * 2 / 3 ))]")
AMP=(--amp "${DEMO_AMP:-auto}")
[ -n "${DEMO_AMP:-}" ] && SCHEDULE+=(--set "train.amp=$DEMO_AMP")

step() {
  local t=$(( $(date +%s) - start ))
  printf '\n\033[1m[demo %dm%02ds] %s\033[0m\n' $((t / 60)) $((t % 60)) "$1"
}
run() {
  printf '$ %s\n' "$*"
  "$@"
}
train() {  # train OUTPUT [spanet train options]: a finished run in OUTPUT is kept, an interrupted one continued
  local output=$1; shift
  local resume=()
  [ -f "$output/last.pt" ] && resume=(--resume)
  run "$SPANET" train --config "$CONFIG" --dataset synthetic --data-root "$DATA" --output "$output" "${resume[@]}" \
    "${SCHEDULE[@]}" "$@"
}

step "1/7 Generate the synthetic cross-view dataset (Market-1501 layout)"
if [ -f "$DATA/spanet_synth.json" ]; then
  echo "reusing $DATA (delete it to regenerate)"
else
  run "$SPANET" synth "$DATA" --preset demo
fi
run "$SPANET" check-data --dataset synthetic --data-root "$DATA"

if [ "$PRECISION" = none ] && [ "$DEMO_EPOCHS" != 24 ]; then
  echo "float32 here (no native bf16 on this CPU, or DEMO_AMP=none): $DEMO_EPOCHS epochs instead of 24 (DEMO_EPOCHS=24 for all)"
fi
step "2/7 Train SPANet (ResNet-18 from scratch, DS + SA2 + six parts, $DEMO_EPOCHS epochs, amp auto = $PRECISION)"
train "$RUN"

step "3/7 Train the same network without spatial attention (the paper's Table 3 '-SA')"
train "$RUN_NOSA" --set model.sa_ds=false

step "4/7 Evaluate both: CMC / mAP / mINP, plain and k-reciprocal re-ranked, with ranked lists"
run "$SPANET" evaluate --checkpoint "$RUN/last.pt" --dataset synthetic --data-root "$DATA" --rerank \
  --visualize 10 --out "$RUN/eval" "${AMP[@]}"
run "$SPANET" evaluate --checkpoint "$RUN_NOSA/last.pt" --dataset synthetic --data-root "$DATA" --rerank \
  --out "$RUN_NOSA/eval" --no-progress "${AMP[@]}"

step "5/7 Class activation maps of training images, per stage: GAP+SA (SPANet) vs GAP (the model without SA)"
run "$SPANET" cam --checkpoint "$RUN/last.pt" --compare "$RUN_NOSA/last.pt" --out "$RUN/cam" \
  --images $(ls "$DATA"/bounding_box_train/*.jpg | awk 'NR % 125 == 1' | head -n 8)

step "6/7 Write the HTML report"
run "$SPANET" report "$RUN"

step "7/7 Build a search gallery from the test split (images already enrolled are skipped)"
run "$SPANET" gallery build "$OUT/gallery" --checkpoint "$RUN/last.pt" "$DATA/bounding_box_test" --quiet "${AMP[@]}"

step "Done"
.venv/bin/python - "$RUN" "$RUN_NOSA" <<'PY'
import json, sys
from pathlib import Path
for label, run in (("SPANet (+SA)", Path(sys.argv[1])), ("without SA (-SA)", Path(sys.argv[2]))):
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for kind in ("plain", "reranked"):
        r = metrics[kind]
        print(f"{label:17s} {kind:9s} rank-1 {100 * r['rank1']:5.1f}  rank-5 {100 * r['rank5']:5.1f}  "
              f"rank-10 {100 * r['rank10']:5.1f}  mAP {100 * r['mAP']:5.1f}  mINP {100 * r['mINP']:5.1f}")
print("(one seed each on synthetic data: for the seeds-averaged comparison see docs/ablation.md)")
print(f"\nReport: {(Path(sys.argv[1]) / 'report.html').resolve()}  (open it in a browser)")
PY
cat <<EOF

Search the gallery in a browser (needs .venv/bin/pip install '.[serve]'), then open http://127.0.0.1:8000/ :
  $SPANET serve --gallery $OUT/gallery --checkpoint $RUN/last.pt --threshold 1.8
EOF
t=$(( $(date +%s) - start ))
printf 'Demo finished in %dm%02ds.\n' $((t / 60)) $((t % 60))
