#!/bin/sh
# STAND-IN install hook (runner's CI test double), run by images/fetch-trainer.sh after copying this folder:
# puts the stand-in `accelerate` launcher on PATH (the real one needs torch, a CUDA-only wheel).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${VIRTUAL_ENV:-/opt/venv}/bin
chmod 755 "$here/bin/accelerate"
ln -sf "$here/bin/accelerate" "$bin/accelerate"
echo "STAND-IN musubi-tuner installed: $bin/accelerate -> $here/bin/accelerate"
