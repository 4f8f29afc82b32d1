#!/bin/sh
# A non-root default user. `runner` starts containers as the invoking user's UID:GID instead, so
# files written to mounted folders are theirs; HOME is writable for any UID.
set -eu
if ! id runner >/dev/null 2>&1; then
    if command -v useradd >/dev/null; then useradd --create-home --home-dir /home/runner --uid 1000 --user-group runner 2>/dev/null \
        || useradd --create-home --home-dir /home/runner runner
    else adduser --disabled-password --gecos "" --home /home/runner runner; fi
fi
chmod 1777 /home/runner
