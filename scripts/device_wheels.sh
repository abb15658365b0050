#!/usr/bin/env bash
# The wheels a GPU machine with JAX but no TensorFlow lacks, for benchmarks/device.sh:
# downloaded into the git-ignored .whl/ (or $WHEEL_DIR), pinned, --no-deps, for CPython
# $PYTHON_VERSION (default 3.12) on manylinux x86_64, for a machine that has Python 3.12,
# JAX, PyTorch, timm, numpy, h5py, ml-dtypes, rich, absl-py, packaging and pillow, but no
# TensorFlow, keras or pydantic, and may not be able to download. So:
#   keras + namex, optree   Keras 3 and its two requirements missing there
#   pydantic + pydantic-core, annotated-types, typing-inspection   recipes.config's schema
#   tomli-w                  recipes' TOML writing
#   typing-extensions        pydantic needs >= 4.16; the machine's version is not known
# zoo/ itself imports nothing else that is missing there (the benchmarks build backbones
# with weights=None, so no checkpoint package travels). Prints each wheel and the total
# size, which must stay well under the 64 MiB a device call may carry.
#
#   bash scripts/device_wheels.sh                                   # .whl/ for the GPU
#   PYTHON_VERSION=3.11 WHEEL_DIR=/tmp/whl311 bash scripts/device_wheels.sh   # a CPU stand-in
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
WHEEL_DIR="${WHEEL_DIR:-.whl}"
# Pinned: the versions zoo is tested with (keras as in .venv), each one's requirements met.
WHEELS=(
  keras==3.15.1 namex==0.1.0 optree==0.20.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  tomli-w==1.2.0 typing-extensions==4.16.0
)
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done

rm -rf "$WHEEL_DIR"
mkdir -p "$WHEEL_DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp "${PLATFORMS[@]}" -d "$WHEEL_DIR" "${WHEELS[@]}"

count=$(find "$WHEEL_DIR" -type f -name '*.whl' | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
  echo "device_wheels.sh: expected ${#WHEELS[@]} wheels in $WHEEL_DIR, found $count" >&2
  exit 1
fi
ls -l "$WHEEL_DIR"
bytes=$(du -cb "$WHEEL_DIR"/*.whl | tail -1 | cut -f1)
echo "device_wheels.sh: $count wheels for cp${PYTHON_VERSION/./}, $((bytes / 1024)) KiB in $WHEEL_DIR"
if [ "$bytes" -gt $((16 * 1024 * 1024)) ]; then
  echo "device_wheels.sh: over 16 MiB; a device call carries 64 MiB in all" >&2
  exit 1
fi
