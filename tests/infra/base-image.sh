#!/usr/bin/env bash
# Build a minimal Debian bookworm image (python3, pip, venv, git, CA certs) from
# the host's Debian mirror and `docker import` it as TAG (default
# runner-test-base:bookworm). Skips if TAG exists with the same packages. The rootfs tarball is cached
# under /var/cache/runner-test/ so a rebuild on the same machine is a few seconds.
# Bootstrapper: mmdebstrap (default, faster; adds -updates and -security) or
# debootstrap (RUNNER_TEST_BOOTSTRAP=debootstrap; main suite only).
# Mirror: the host apt's, or RUNNER_TEST_MIRROR.
# The image does NOT contain the host's TLS-intercepting CA: builds must pass it in.
# Nor libGL/libglib (opencv's system libraries): the trainer Dockerfiles must install them, and the
# stand-in images' cv2 import check fails the CI build if one does not.
set -euo pipefail
LOG_TAG=base-image
HERE=$(dirname "${BASH_SOURCE[0]}")
source "$HERE/lib.sh"

TAG=${1:-runner-test-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-pip,python3-venv,python3-dev,build-essential,ca-certificates,git
BOOTSTRAP=${RUNNER_TEST_BOOTSTRAP:-mmdebstrap}
CACHE_DIR=/var/cache/runner-test

"$HERE/docker-engine.sh"
if docker image inspect "$TAG" >/dev/null 2>&1; then
  built_with=$(docker image inspect -f '{{ index .Config.Labels "org.runner.test-base-packages" }}' "$TAG")
  [[ $built_with != "$PACKAGES" ]] || { log "$TAG already present, nothing to do"; exit 0; }
  log "$TAG was built with other packages (${built_with:-unrecorded}): rebuilding it"
fi

# The host's Debian mirror (deb822 .sources or one-line .list), first match wins.
host_mirror() { # $1 = suite
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$1" '
      /^[ \t]*deb[ \t]/ { sub(/\[[^]]*\][ \t]*/, ""); if ($3 == suite) { print $2; exit } }
      /^URIs:/   { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
      /^[ \t]*$/ { uri = "" }' "$f"
  done | head -n1
}
MIRROR=${RUNNER_TEST_MIRROR:-$(host_mirror "$SUITE")}
[[ -n $MIRROR ]] || die "no Debian $SUITE mirror in /etc/apt/sources.list*; set RUNNER_TEST_MIRROR"
SECURITY=$(host_mirror "$SUITE-security")

# An apt proxy configured on the host (apt.conf.d) is used by the bootstrap too;
# http_proxy/https_proxy from the environment pass through to apt and wget as is.
eval "$(apt-config shell APT_HTTP_PROXY Acquire::http::Proxy)"
if [[ -n ${APT_HTTP_PROXY:-} && ${APT_HTTP_PROXY,,} != direct ]]; then
  export http_proxy=${http_proxy:-$APT_HTTP_PROXY}
fi

key=$(printf '%s\n' "$BOOTSTRAP" "$SUITE" "$PACKAGES" "$MIRROR" "$SECURITY" | sha256sum | cut -c1-12)
TARBALL=$CACHE_DIR/rootfs-$SUITE-$key.tar
mkdir -p "$CACHE_DIR"
start=$SECONDS

if [[ ! -s $TARBALL ]]; then
  log "bootstrapping $SUITE ($BOOTSTRAP) from $MIRROR"
  tmp=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  blog=$CACHE_DIR/bootstrap.log
  case $BOOTSTRAP in
    mmdebstrap)
      command -v mmdebstrap >/dev/null || apt_install mmdebstrap
      sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
      if [[ -n $SECURITY ]]; then sources+=("deb $SECURITY $SUITE-security main"); fi
      opts=(--variant=minbase --mode=root --format=tar --include="$PACKAGES")
      if [[ -n ${http_proxy:-} ]]; then opts+=(--aptopt="Acquire::http::Proxy \"$http_proxy\""); fi
      # No docs/man/locales: smaller and faster to unpack.
      for p in man doc info locale; do opts+=(--dpkgopt="path-exclude=/usr/share/$p/*"); done
      opts+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
      mmdebstrap "${opts[@]}" "$SUITE" "$tmp/rootfs.tar" "${sources[@]}" >"$blog" 2>&1 \
        || { tail -n 40 "$blog" >&2; die "mmdebstrap failed (log: $blog)"; }
      ;;
    debootstrap)
      command -v debootstrap >/dev/null || apt_install debootstrap
      mkdir -p "$CACHE_DIR/debs" "$tmp/rootfs"
      debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE_DIR/debs" \
        "$SUITE" "$tmp/rootfs" "$MIRROR" >"$blog" 2>&1 \
        || { tail -n 40 "$blog" >&2; die "debootstrap failed (log: $blog)"; }
      rm -rf "$tmp"/rootfs/var/lib/apt/lists/* "$tmp"/rootfs/var/cache/apt/archives/*.deb
      tar -C "$tmp/rootfs" --numeric-owner -cf "$tmp/rootfs.tar" .
      ;;
    *) die "unknown RUNNER_TEST_BOOTSTRAP=$BOOTSTRAP" ;;
  esac
  mv "$tmp/rootfs.tar" "$TARBALL"
  log "rootfs tarball $TARBALL ($(du -h "$TARBALL" | cut -f1)) built in $((SECONDS - start))s"
else
  log "using cached rootfs $TARBALL"
fi

# PIP_BREAK_SYSTEM_PACKAGES: Debian's python is PEP 668 "externally managed";
# trainer images install with plain `pip install`, so allow it here as well.
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'LABEL org.runner.test-base=1' \
  --change "LABEL org.runner.test-base-packages=$PACKAGES" \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$TAG" >/dev/null
docker run --rm --network host "$TAG" sh -c \
  'python3 --version && pip --version && python3 -m venv /tmp/v && git --version' >&2 \
  || die "smoke test of $TAG failed"
log "$TAG ready in $((SECONDS - start))s"
