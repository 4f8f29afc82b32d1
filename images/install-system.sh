#!/bin/sh
# Install the Debian/Ubuntu packages given as arguments, only those missing, and trust the extra CA
# bundle (runner copies the user's RUNNER_CA_BUNDLE to images/ca/runner-extra.crt; empty otherwise).
set -eu
if [ -s /usr/local/share/ca-certificates/runner/runner-extra.crt ] && command -v update-ca-certificates >/dev/null; then
    update-ca-certificates >/dev/null
fi
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    rm -rf /var/lib/apt/lists/*
fi
