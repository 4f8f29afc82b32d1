#!/bin/sh
# STAND-IN install hook (runner's CI test double), run by images/fetch-trainer.sh after copying this folder:
# puts the stand-in `deepspeed` launcher on PATH (the real one needs torch, a CUDA-only wheel).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${VIRTUAL_ENV:-/opt/venv}/bin
chmod 755 "$here/bin/deepspeed"
ln -sf "$here/bin/deepspeed" "$bin/deepspeed"
echo "STAND-IN diffusion-pipe installed: $bin/deepspeed -> $here/bin/deepspeed"
