#!/usr/bin/env bash
# Regenerate the locked requirements from the .in files beside them.
#   images/lock.sh [diffpipe|musubi|musubi-blackwell|caption ...]   (default: all four)
# Needs uv (pip install uv) and access to PyPI. uv resolves for the target platform
# (Linux x86_64, glibc >= 2.28) without downloading the big wheels.
# torch.lock is compiled first; requirements.lock is constrained by it (-c torch.lock),
# so torch and its CUDA libraries keep the same versions and hashes in both files.
# Unpinned names resolve as of the day after the trainer's pinned commit (--exclude-newer),
# i.e. what upstream's own `pip install -r requirements.txt` got at that commit, and the
# result does not drift when the locks are regenerated later.
set -euo pipefail
cd "$(dirname "$0")"
PLATFORM=x86_64-manylinux_2_28


compile() {  # compile OUT IN... ; runs in the trainer's folder
  local out=$1; shift
  uv pip compile --quiet --generate-hashes --exclude-newer "$cut" \
    --python-version "$py" --python-platform "$PLATFORM" \
    --custom-compile-command "images/lock.sh $target" \
    "$@" -o "$out"
}

one() {
  target=$1
  case "$target" in
    diffpipe)         py=3.12; d=diffpipe; t=torch;           r=requirements;           cut=2026-08-21T00:00:00Z ;;
    musubi)           py=3.10; d=musubi;   t=torch;           r=requirements;           cut=2026-06-25T00:00:00Z ;;
    musubi-blackwell) py=3.12; d=musubi;   t=torch-blackwell; r=requirements-blackwell; cut=2026-06-25T00:00:00Z ;;
    caption)          py=3.10; d=caption;  t=torch;           r=requirements;           cut=2026-11-30T00:00:00Z ;;
    *) echo "unknown target: $target" >&2; exit 2 ;;
  esac
  cd "$d"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  # 1. Resolve torch and the rest together, so shared dependencies (numpy, fsspec, ...) get
  #    versions that satisfy both sides.
  grep -v '^-c ' "$r.in" > "$tmp/rest.in"
  compile "$tmp/all.lock" "$t.in" "$tmp/rest.in"
  # 2. torch.lock: torch.in's closure, at the versions chosen in step 1.
  compile "$t.lock" "$t.in" -c "$tmp/all.lock"
  # 3. requirements.lock: everything, constrained by torch.lock (its "-c torch.lock" line).
  compile "$r.lock" "$r.in"
  # drop the temporary file's name from the "# via" notes so reruns give identical files
  sed -i "\\#-c $tmp/all.lock#d" "$t.lock"
  cd - >/dev/null
}

if [ $# -eq 0 ]; then set -- diffpipe musubi musubi-blackwell caption; fi
for t in "$@"; do one "$t"; done
