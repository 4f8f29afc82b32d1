#!/bin/sh
# Container entrypoint: seed the mounted HF cache with the tokenizers baked into the image (so musubi
# runs offline), give any UID a writable HOME, then run the command.
set -eu
if [ -d /opt/hf-seed/hub ] && [ -n "${HF_HOME:-}" ] && [ -w "$HF_HOME" ]; then
    mkdir -p "$HF_HOME/hub"
    cp -Rn /opt/hf-seed/hub/. "$HF_HOME/hub/" 2>/dev/null || true
fi
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME=/home/runner
fi
exec "$@"
