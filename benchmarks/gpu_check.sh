#!/usr/bin/env bash
# GPU check (see benchmarks/gpu_check.py): installs what it needs, then runs the checks on
# CUDAExecutionProvider. Run by hand on a GPU machine from the repository root; arguments are
# passed on (e.g. --quick, --models mlp,gpt_mini). Exit status: 0 all equal, 1 a mismatch,
# 2 no usable CUDA provider.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
pip() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
"$PY" -c "import lbdl_graph" 2>/dev/null || pip -e .
"$PY" -c "import threadpoolctl" 2>/dev/null || pip threadpoolctl
if ! "$PY" -c "import onnxruntime as o, sys; \
sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
  "$PY" -m pip uninstall -q -y onnxruntime || true
  pip onnxruntime-gpu
fi
# the CUDA/cuDNN libraries onnxruntime-gpu loads, from pip when the system lacks them
if ! ldconfig -p 2>/dev/null | grep -q libcudnn; then
  pip nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12 nvidia-cufft-cu12 \
    nvidia-curand-cu12 || true
  export GPU_CHECK_PRELOAD=1
fi
exec "$PY" benchmarks/gpu_check.py "$@"
