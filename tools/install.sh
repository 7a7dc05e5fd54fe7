#!/usr/bin/env bash
# Install roborl (editable) without ever pulling CUDA wheels on a machine with no NVIDIA GPU.
#   bash tools/install.sh          # runtime + dev extras
# On a CPU-only machine torch is installed first from a CPU build (the PyTorch CPU index
# when reachable, else the configured package index pinned to torch==2.13.0, which
# resolves to a CPU wheel there); pip then sees torch satisfied and never fetches CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch>=2.2"
  else
    "$PY" -m pip install -q --timeout 20 --retries 1 --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" 2>/dev/null \
      || "$PY" -m pip install -q "torch==2.13.0"
  fi
fi
"$PY" -m pip install -q -e ".[dev,plot,teleop,export,interop]"
