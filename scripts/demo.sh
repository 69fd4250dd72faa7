#!/usr/bin/env bash
# The whole paper on one CPU: synthetic cross-view data -> train SPANet (+SA) and its -SA twin -> evaluate with and
# without re-ranking -> class activation maps (with vs without SA) -> ranked lists -> report.html.
# Every step is a plain `spanet` command, printed before it runs, so you can copy it for your own data.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_DIR:-demo}
SPANET=${SPANET:-.venv/bin/spanet}
CONFIG=${DEMO_CONFIG:-configs/cpu_demo.yaml}
DATA=$OUT/data
RUN=$OUT/run
RUN_NOSA=$OUT/run_no_sa
start=$(date +%s)

step() {
  local t=$(( $(date +%s) - start ))
  printf '\n\033[1m[demo %dm%02ds] %s\033[0m\n' $((t / 60)) $((t % 60)) "$1"
}
run() {
  printf '$ %s\n' "$*"
  "$@"
}

step "1/6 Generate the synthetic cross-view dataset (Market-1501 layout)"
if [ -f "$DATA/spanet_synth.json" ]; then
  echo "reusing $DATA (delete it to regenerate)"
else
  run "$SPANET" synth "$DATA" --preset demo
fi
run "$SPANET" check-data --dataset synthetic --data-root "$DATA"

step "2/6 Train SPANet (ResNet-18, DS + SA2 + parts) on the CPU"
run "$SPANET" train --config "$CONFIG" --dataset synthetic --data-root "$DATA" --output "$RUN"

step "3/6 Train the same network without spatial attention (for Table 3 and the CAM comparison)"
run "$SPANET" train --config "$CONFIG" --dataset synthetic --data-root "$DATA" --output "$RUN_NOSA" \
  --set model.sa_branches=false

step "4/6 Evaluate: CMC / mAP / mINP, plain and k-reciprocal re-ranked, with ranked lists"
run "$SPANET" evaluate --checkpoint "$RUN/last.pt" --dataset synthetic --data-root "$DATA" --rerank \
  --visualize 10 --out "$RUN/eval"
run "$SPANET" evaluate --checkpoint "$RUN_NOSA/last.pt" --dataset synthetic --data-root "$DATA" --rerank \
  --out "$RUN_NOSA/eval"

step "5/6 Class activation maps: GAP+SA vs GAP, per stage"
run "$SPANET" cam --checkpoint "$RUN/last.pt" --compare "$RUN_NOSA/last.pt" --out "$RUN/cam" \
  --images $(ls "$DATA"/query/*.jpg | head -n 8)

step "6/6 Write the HTML report"
run "$SPANET" report "$RUN"

step "Done"
.venv/bin/python - "$RUN" "$RUN_NOSA" <<'PY'
import json, sys
from pathlib import Path
rows = []
for label, run in (("SPANet (+SA)", Path(sys.argv[1])), ("without SA (-SA)", Path(sys.argv[2]))):
    m = json.loads((run / "eval" / "metrics.json").read_text())
    for kind in ("plain", "reranked"):
        if kind in m:
            r = m[kind]
            rows.append(f"{label:18s} {kind:9s} rank-1 {100*r['rank1']:5.1f}  rank-5 {100*r['rank5']:5.1f}  "
                        f"mAP {100*r['mAP']:5.1f}  mINP {100*r['mINP']:5.1f}")
print("\n".join(rows))
print(f"\nReport: {(Path(sys.argv[1]) / 'report.html').resolve()}")
PY
t=$(( $(date +%s) - start ))
printf 'Demo finished in %dm%02ds.\n' $((t / 60)) $((t % 60))
