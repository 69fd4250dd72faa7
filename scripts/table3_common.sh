# Sourced by scripts/table3_readings.sh and scripts/table3_crowd.sh: the scale both share and one `cell` call.
# Expects OUT and PY. A cell is one `spanet ablation --seeds k` call; it records label, seeds, start and end
# (epoch seconds) and user/sys CPU seconds in OUT/times.tsv.

# Waiting OpenMP threads sleep instead of spinning: on a shared, busy machine a spinning thread burns the core its
# preempted partner needs (the thread count stays torch's default; the numbers do not depend on it).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# 50 training ids × 8 pictures (400 images), 50 test ids, drawn at the 96×48 the demo trains at
SYNTH=(--preset demo --train-ids 50 --test-ids 50 --images-per-id 8 --distractors 50 --junk 20 --height 96 --width 48
       --no-progress)
COMMON=(--config configs/cpu_demo.yaml --data-root "$OUT/data"
        --set train.amp=none --set train.channels_last=false
        --set optim.epochs=6 --set "optim.milestones=[5]" --set train.eval_every=0 --set train.progress=false)

cell() {  # LABEL SEEDS ROWS... -- EXTRA_ARGS...
    local label=$1 seeds=$2; shift 2
    local rows=(); while [ "$1" != "--" ]; do rows+=("$1"); shift; done; shift
    local start; start=$(date +%s)
    /usr/bin/time -f "%U %S" -o "$OUT/.cpu" $PY -m spanet ablation "${COMMON[@]}" "$@" \
        --rows "${rows[@]}" --seeds "$seeds" --output "$OUT/$label" > "$OUT/$label.log" 2>&1
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$seeds" "$start" "$(date +%s)" "$(tr ' ' '\t' < "$OUT/.cpu")" >> "$OUT/times.tsv"
}
