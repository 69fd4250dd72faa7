#!/usr/bin/env bash
# Creates .venv-bench: spanet plus the peer implementations it is compared with (never runtime dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
PINS=${TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
if [ ! -f "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q $PINS
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  touch "$VENV/.installed"
fi
"$VENV/bin/python" -c "import torchreid.reid, spanet; print('benchmark environment ready:', '$VENV')"
