#!/bin/sh
# Put the trainer at DEST: the pinned commit from git (with pinned submodules), or, when the build
# context carries trainer-src/ (a local checkout given by a pins file), that folder.
set -eu
dest=$1
if [ -n "$(ls -A /tmp/trainer-src)" ] && [ ! -f /tmp/trainer-src/.keep ]; then
    cp -a /tmp/trainer-src "$dest"
    # a local trainer folder may bring an install hook (the CI stand-ins link their launchers onto PATH)
    if [ -f "$dest/.runner-install.sh" ]; then sh "$dest/.runner-install.sh"; fi
else
    git init -q "$dest"
    git -C "$dest" remote add origin "$TRAINER_GIT_URL"
    git -C "$dest" fetch -q --depth 1 origin "$TRAINER_COMMIT"
    git -C "$dest" checkout -q FETCH_HEAD
    for pin in $TRAINER_SUBMODULES; do
        path=${pin%%=*} sha=${pin#*=}
        git -C "$dest" submodule update --init --depth 1 -- "$path" || git -C "$dest" submodule update --init -- "$path"
        actual=$(git -C "$dest/$path" rev-parse HEAD)
        [ "$actual" = "$sha" ] || { echo "submodule $path is at $actual, pinned $sha" >&2; exit 1; }
    done
    rm -rf "$dest/.git/objects/pack"/*.pack.tmp 2>/dev/null || true
fi
rm -rf /tmp/trainer-src
