#!/usr/bin/env bash
# shellcheck disable=SC2016  # remote commands expand on the remote side
# Smoke test of the whole test infrastructure: brings everything up (idempotent)
# and checks what runner's tests rely on. Prints "verify: N passed, M failed".
# Python checks use $RUNNER_TEST_PYTHON if set, else a venv with docker+fabric
# at /var/lib/runner-test/venv (created on first use).
set -euo pipefail
LOG_TAG=verify
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"

BASE=runner-test-base:bookworm
CA=${RUNNER_TEST_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
SSH=(ssh -F /var/lib/runner-test/ssh_config -o BatchMode=yes)
pass=0 fail=0
check() { # NAME CMD...
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then pass=$((pass + 1)); log "PASS $name"
  else fail=$((fail + 1)); log "FAIL $name"; tail -n 20 "$tmp/out" >&2; fi
}

"$HERE/docker-engine.sh"
"$HERE/base-image.sh" "$BASE"
"$HERE/netns-hosts.sh" up

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; docker rmi -f runner-test-verify:cli runner-test-verify:bk runner-test-verify:sdk >/dev/null 2>&1 || true
      "${SSH[@]}" gpu01 docker rmi -f runner-test-verify:cli >/dev/null 2>&1 || true' EXIT
PY=${RUNNER_TEST_PYTHON:-/var/lib/runner-test/venv/bin/python}
if [[ ! -x $PY ]] || ! "$PY" -c 'import docker, fabric' 2>/dev/null; then
  log "creating $PY with docker + fabric"
  python3 -m venv /var/lib/runner-test/venv
  /var/lib/runner-test/venv/bin/pip install -q docker fabric
  PY=/var/lib/runner-test/venv/bin/python
fi

# Build context: fixture + the host's CA bundle; proxy settings passed through.
cp "$HERE"/fixtures/pip-ca/Dockerfile* "$tmp/" && cp "$CA" "$tmp/ca-bundle.crt"
proxy_args=()
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [[ -n ${!v:-} ]] && proxy_args+=(--build-arg "$v")
done

mkdir -p "$tmp/mnt" && echo in >"$tmp/mnt/in"
check "docker run --network host + bind mount" \
  sh -c "docker run --rm --network host -v '$tmp/mnt:/m' $BASE sh -c 'cat /m/in >/m/out' && grep -qx in '$tmp/mnt/out'"
check "legacy build (docker CLI, --network host, CA via COPY)" \
  env DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE_IMAGE=$BASE "${proxy_args[@]}" \
    -t runner-test-verify:cli "$tmp"
check "BuildKit build (20.10 CLI /usr/bin/docker, CA via --secret)" \
  env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host --build-arg BASE_IMAGE=$BASE "${proxy_args[@]}" \
    --secret id=ca,src="$CA" -f "$tmp/Dockerfile.buildkit" -t runner-test-verify:bk "$tmp"
check "docker SDK build (legacy builder, network_mode=host)" "$PY" - "$tmp" "$BASE" <<'PY'
import os, sys, docker
c = docker.from_env()
args = {"BASE_IMAGE": sys.argv[2]}
args.update({k: os.environ[k] for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "http_proxy", "https_proxy", "no_proxy") if os.environ.get(k)})
img, _ = c.images.build(path=sys.argv[1], buildargs=args, network_mode="host",
                        tag="runner-test-verify:sdk", rm=True, forcerm=True)
print(c.api.api_version, img.tags)
PY
check "gpu01 engine is separate (built image absent there)" \
  "${SSH[@]}" gpu01 'docker info >/dev/null && ! docker image inspect runner-test-verify:cli >/dev/null 2>&1'
check "image transfer laptop -> gpu01 (docker save | ssh docker load) and run there" \
  sh -c "docker save runner-test-verify:cli | ${SSH[*]} gpu01 docker load &&
         ${SSH[*]} gpu01 'docker run --rm --network host -v /srv/runner-test/gpu01/outputs:/out runner-test-verify:cli python3 -c \"import six\"'"
check "fabric: docker version on gpu01 and gpu02" "$PY" - <<'PY'
import fabric, paramiko
for host in ("gpu01", "gpu02"):
    c = fabric.Connection(host, config=fabric.Config(runtime_ssh_path="/var/lib/runner-test/ssh_config"))
    c.client.load_host_keys("/var/lib/runner-test/known_hosts")
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    r = c.run("docker version --format '{{.Server.APIVersion}}' && docker info --format '{{.Name}}'", hide=True)
    assert r.stdout.split()[1] == host, r.stdout
PY
check "gpu02 small disk fills up (ENOSPC)" \
  "${SSH[@]}" gpu02 'f=/srv/runner-test/gpu02/small/fill; dd if=/dev/zero of=$f bs=1M count=8 2>&1 | grep "No space left"; rc=$?; rm -f $f; exit $rc'

echo "verify: $pass passed, $fail failed"
((fail == 0))
