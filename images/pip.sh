#!/bin/sh
# pip, for the image builds. A pip index URL with credentials is never a build arg (docker history keeps build args):
# runner serves it to the build at a one-time address on 127.0.0.1 (PIP_INDEX_FROM), read here into this process only.
set -eu
if [ -n "${PIP_INDEX_FROM:-}" ]; then
    PIP_INDEX_URL=$(python3 -c 'import sys, urllib.request as u; print(u.build_opener(u.ProxyHandler({})).open(sys.argv[1]).read().decode())' "$PIP_INDEX_FROM")
    export PIP_INDEX_URL
fi
exec pip "$@"
