#!/usr/bin/env bash
# One-step set-up on a fresh Linux machine: system libraries for Qt/OpenGL/Xvfb (when run as root with apt),
# a virtual environment in .venv, the CPU build of torch, then this project with its test extras.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libglx-mesa0 \
    libfontconfig1 fonts-dejavu-core libglib2.0-0 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 \
    libxcb-xkb1 libxcb-sync1 libx11-xcb1 libusb-1.0-0 libgomp1 xvfb xauth >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: where a local CPU build of this version exists pip takes it, and the project's own
# pin then keeps it (an unpinned torch would pull a multi-GB CUDA build).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "m2hmx installed in $(pwd)/.venv"
