#!/usr/bin/env bash
# Every benchmark, one after the other, in the benchmark environment (spanet + torchreid 0.2.5).
# Results land in benchmarks/results/ (JSON + a Markdown table each). Each script's --help lists its own options
# (e.g. --quick for a short smoke run): run one directly as `.venv-bench/bin/python benchmarks/bench_eval.py --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/setup_env.sh
PY=.venv-bench/bin/python
for bench in bench_eval bench_train bench_infer bench_search bench_loader bench_serve; do
  echo "== $bench"
  "$PY" "benchmarks/$bench.py"
done
