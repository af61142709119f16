#!/usr/bin/env bash
# Validate abaw-rt on a machine with an NVIDIA GPU and no network, in at most 8 minutes; one summary line.
#
#   scripts/gpu_validate.sh [--model tiny] [--quick]         (arguments go to benchmarks/bench_gpu.py)
#
# What it does (the logic is benchmarks/bench_gpu.py; this script only prepares the environment):
#   environment report (GPU, driver, CUDA, package versions), the torch-free CUDA layer on each binding,
#   pytest -m gpu, torch CUDA fp32 eager vs fp16 vs fp16 + CUDA graphs at B=1 and B=64, T=300 (paper size),
#   onnxruntime's CUDA provider: verify + bench of the fp16 graph, and a TensorRT build + verify + bench when
#   tensorrt imports. It writes benchmarks/results/gpu_<gpu>_<date>.json and prints one summary line.
#
# Without an NVIDIA GPU it says so and exits 0, having installed and written nothing.
#
# Wheels the machine lacks (no network there): put them in a folder and name it in ABAW_RT_WHEELS, e.g.
#   pip download --only-binary :all: --no-deps --python-version 3.12 -d wheels/ onnxruntime-gpu cuda-bindings cuda-pathfinder
# (choose the onnxruntime-gpu build for the machine's CUDA major version). They are installed with
# pip --no-index --no-deps into ABAW_RT_GPU_SITE (default: .gpu_site/ in this checkout, git-ignored) and
# put first on PYTHONPATH for this run only: the Python environment itself is not changed (onnxruntime-gpu
# there shadows a CPU onnxruntime for this run).
#
# Environment: PYTHON (default python3), ABAW_RT_WHEELS, ABAW_RT_GPU_SITE, ABAW_RT_VALIDATE_SECONDS (480).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

"$PY" benchmarks/bench_gpu.py --probe
case $? in
  0) ;;
  3) exit 0 ;;  # no GPU: said so, nothing else done
  *) echo "gpu_validate: cannot run benchmarks/bench_gpu.py with $PY" >&2; exit 1 ;;
esac

if [ -n "${ABAW_RT_WHEELS:-}" ]; then
  site="${ABAW_RT_GPU_SITE:-$PWD/.gpu_site}"
  shopt -s nullglob
  wheels=("$ABAW_RT_WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu_validate: ABAW_RT_WHEELS='$ABAW_RT_WHEELS' holds no .whl files" >&2; exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --upgrade --target "$site" "${wheels[@]}" \
    || { echo "gpu_validate: installing the wheels of '$ABAW_RT_WHEELS' into '$site' failed" >&2; exit 1; }
  export PYTHONPATH="$site:$PYTHONPATH"
fi

exec timeout --kill-after=10 "${ABAW_RT_VALIDATE_SECONDS:-480}" "$PY" benchmarks/bench_gpu.py "$@"
