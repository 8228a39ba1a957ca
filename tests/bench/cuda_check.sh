#!/usr/bin/env bash
# The checks only a CUDA machine can run, in one go, most important first:
#   1. tests/test_cuda.py and the panel's real-NVML test (AMP bf16 and fp16, pinned memory,
#      CUDA-event timing, a real out-of-memory rollback, NVML gauges, resume on the GPU);
#   2. the engine/bare throughput benchmark on the GPU;
#   3. the whole suite, where `--device auto` now means CUDA (skipped when time is short).
# Usage: bash tests/bench/cuda_check.sh [LOG_DIR] [SECONDS_FOR_THE_SUITE]
# Needs ctui importable (pip install -e '.[test]'), or run from the repository with
# CTUI_FROM_SOURCE=1 to import engine/ and tui/ as ctui.* without installing.
set -uo pipefail
logs=${1:-cuda-check}
suite_seconds=${2:-240}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
if [ "${CTUI_FROM_SOURCE:-}" = 1 ]; then
    shim=$(mktemp -d)
    mkdir -p "$shim/ctui" && ln -s "$PWD/engine" "$shim/ctui/engine" && ln -s "$PWD/tui" "$shim/ctui/tui"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$logs/gpu.txt"
python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$logs/gpu.txt"
python3 -m pytest -p no:cacheprovider -v -rs tests/test_cuda.py tests/tui/test_cuda_panel.py 2>&1 | tee "$logs/test_cuda.log"
python3 tests/bench/bench_engine.py --device cuda --epochs 8 --repeats 5 2>&1 | tee "$logs/bench_engine.log"
python3 tests/bench/bench_engine.py --device cuda --epochs 8 --repeats 3 --log-interval 10 2>&1 | tee "$logs/bench_engine_interval10.log"
timeout "$suite_seconds" python3 -m pytest -p no:cacheprovider -q -rfEs --timeout 120 \
    --ignore=tests/test_loggers.py 2>&1 | tee "$logs/suite.log"
