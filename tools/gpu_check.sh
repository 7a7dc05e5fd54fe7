#!/usr/bin/env bash
# The GPU check: at most ~8 minutes on one GPU; prints one JSON object (tools/bench_gpu.py).
#   bash tools/gpu_check.sh            # everything
#   bash tools/gpu_check.sh --quick    # learner throughput only (~1 min)
# On a machine without CUDA it prints one line naming the device and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" tools/bench_gpu.py "$@"
