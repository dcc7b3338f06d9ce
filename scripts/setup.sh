#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: system packages, a venv, torch (CPU wheel first), requirements.
#   bash scripts/setup.sh          app needs (ffmpeg)
#   bash scripts/setup.sh --test   also what the tests need (chromium for Playwright, postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# 1. System packages (Debian/Ubuntu). Only what is missing; nothing when all is present.
apt_pkgs=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || apt_pkgs+=(ffmpeg)
if [ "$want_test" = 1 ]; then
  [ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_pkgs+=(postgresql)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing system packages: ${apt_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# 2. Python venv. torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -r requirements.txt
echo "setup done: $(.venv/bin/python -c 'import torch, diffusers, gradio; print("torch", torch.__version__, "diffusers", diffusers.__version__, "gradio", gradio.__version__)')"
