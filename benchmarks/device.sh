#!/usr/bin/env bash
# zoo on Keras-JAX beside timm on one GPU, without TensorFlow.
#
# Run from the repository root on a GPU machine with JAX (CUDA), PyTorch and timm; TensorFlow
# is not needed. keras and the few pure-Python packages zoo needs beyond those come as the
# wheels of scripts/device_wheels.sh, in .whl/:
#
#   bash benchmarks/device.sh            # the GPU run: under 8 minutes
#   bash benchmarks/device.sh --quick    # tiny sizes, the same code paths (a CPU check)
#
# It installs the wheels in .whl/ into /tmp/site (pip --no-index --no-deps: nothing is
# downloaded, so the GPU machine needs no network), sets KERAS_BACKEND=jax and runs
# `python -m benchmarks.run --device gpu --peer timm` (benchmarks/run.py: device_settings):
# the bf16 matmul peak (8192^3), then for
# efficientnet_lite0, mobilenet_v2, resnet50 and inception_v3 at their native input sizes,
# batch 32: zoo's forward (mixed bfloat16, XLA) and top-2-blocks fine-tune (bfloat16, XLA)
# beside timm's (AMP bfloat16, channels-last, on CUDA), then zoo's head stage against plain
# Keras. Measurements still to start after BUDGET seconds (default 330) are skipped with the
# reason (the timm peer still runs wherever zoo ran). Writes <gpu>-<cores>c-<date>.{json,md,
# png,log} to $OUT when set, else benchmarks/results/.
#
# Environment: PYTHON (default python3), WHEEL_DIR (.whl), SITE (/tmp/site), BUDGET (330),
# TIMEOUT (per measurement, 180). Further arguments go to benchmarks.run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
WHEEL_DIR="${WHEEL_DIR:-.whl}"
SITE="${SITE:-/tmp/site}"
start=$(date +%s)

quick=()
if [ "${1:-}" = "--quick" ]; then
  quick=(--quick)
  shift
fi

if ! compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
  echo "device.sh: no wheels in $WHEEL_DIR; run scripts/device_wheels.sh where pip can download" >&2
  exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEEL_DIR"/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3

# Fails here, in seconds, if the environment is not what the run needs.
"$PYTHON" - <<'PY'
import importlib.util
import jax, keras, timm, torch

import zoo  # noqa: F401

assert keras.backend.backend() == "jax", keras.backend.backend()
tf = importlib.util.find_spec("tensorflow") is not None
print(f"device.sh: jax {jax.__version__} {jax.devices()}, keras {keras.__version__}, "
      f"torch {torch.__version__} (cuda: {torch.cuda.is_available()}), timm {timm.__version__}, "
      f"tensorflow {'installed' if tf else 'absent'}")
PY

out="${OUT:-benchmarks/results}"
"$PYTHON" -m benchmarks.run --device gpu --peer timm --backend jax "${quick[@]}" \
  --budget "${BUDGET:-330}" --timeout "${TIMEOUT:-180}" --out "$out" "$@" || status=$?
echo "device.sh: $(($(date +%s) - start)) s in all; results in $out"
exit "${status:-0}"
