#!/usr/bin/env bash
# Install RecPress into the active Python environment, choosing a PyTorch build that fits the
# machine: an existing torch is kept; with an NVIDIA GPU (or RECPRESS_TORCH=cuda) the default
# CUDA build from PyPI; otherwise a CPU-only build (a local CPU wheel where pip finds one
# offline, else PyTorch's CPU index). Then the package with its test/dev extras.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
want=${RECPRESS_TORCH:-auto}

local_cpu_wheel() {  # true when pip finds a CPU build of torch 2.13.0 without any index
  local out
  out=$("$PY" -m pip install --dry-run --no-deps --no-index "torch==2.13.0" 2>/dev/null || true)
  [[ "$out" == *"Would install torch-"*"+cpu"* ]]
}

if "$PY" -c "import torch" >/dev/null 2>&1 && [ "$want" = auto ]; then
  echo "install.sh: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif [ "$want" = cuda ] || { [ "$want" = auto ] && command -v nvidia-smi >/dev/null 2>&1 \
     && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "install.sh: GPU found: installing the default (CUDA) torch build"
  "$PY" -m pip install "torch>=2.1"
elif local_cpu_wheel; then
  echo "install.sh: no GPU: installing the local CPU build of torch 2.13.0"
  "$PY" -m pip install "torch==2.13.0"
else
  echo "install.sh: no GPU: installing a CPU-only torch build"
  "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -e ".[dev]"
