#!/bin/sh
# Container entrypoint: take the secrets runner writes to stdin, seed the mounted HF cache with the tokenizers
# baked into the image (so musubi runs offline), give any UID a writable HOME, then run the command.
set -eu
if [ -n "${RUNNER_SECRET_ENV:-}" ]; then
    # one NAME=value line per name in RUNNER_SECRET_ENV, written by runner after the start (runner/executors/container.py):
    # the values live in this process's environment only, never in the container's configuration or on disk
    expected=$(printf '%s\n' $RUNNER_SECRET_ENV | wc -l)
    lines=$(timeout "${RUNNER_STDIN_WAIT_S:-120}" head -n "$expected") || true
    got=0
    saved_ifs=$IFS
    IFS='
'
    set -f
    for line in $lines; do
        name=${line%%=*}
        case " $RUNNER_SECRET_ENV " in
            *" $name "*) export "$line"; got=$((got + 1)) ;;
        esac
    done
    set +f
    IFS=$saved_ifs
    if [ "$got" -ne "$expected" ]; then
        echo "runner: this container expects its secrets ($RUNNER_SECRET_ENV) on stdin and got $got of $expected;" \
             "runner writes them at every start, so start the job with runner (\`runner train\`), not \`docker start\`." >&2
        exit 125
    fi
    unset RUNNER_SECRET_ENV lines line
    exec </dev/null
fi
if [ -d /opt/hf-seed/hub ] && [ -n "${HF_HOME:-}" ] && [ -w "$HF_HOME" ]; then
    mkdir -p "$HF_HOME/hub"
    cp -Rn /opt/hf-seed/hub/. "$HF_HOME/hub/" 2>/dev/null || true
fi
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME=/home/runner
fi
exec "$@"
