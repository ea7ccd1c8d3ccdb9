#!/usr/bin/env bash
# The GPU check of issue 18 §3, bounded to 8 minutes: every notebook at the smoke profile on CUDA,
# lockstep throughput on the GPU vs one CPU thread, the ResNet-18 step time and the projected
# paper-profile time; writes a JSON report (default build/gpu_check.json, or $OUT/gpu_check.json
# where OUT is set). Needs the project's environment (make venv data) and a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
report=${OUT:-build}/gpu_check.json
export PYTHONUNBUFFERED=1 CLREPRO_CACHE=${CLREPRO_CACHE:-off}
timeout 470 "$PY" benchmarks/gpu_check.py --out "$report" "$@"
