#!/usr/bin/env bash
# Bring up the "laptop" Docker engine on /var/run/docker.sock: install Debian's
# docker.io if dockerd is missing, start dockerd in the background if no daemon
# answers, wait for `docker info`. Idempotent.
set -euo pipefail
LOG_TAG=docker-engine
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOCK=/var/run/docker.sock
PIDFILE=/var/run/docker.pid
LOG=${RUNNER_TEST_DOCKERD_LOG:-/var/log/dockerd-runner.log}

command -v dockerd >/dev/null || apt_install docker.io

if docker -H "unix://$SOCK" info >/dev/null 2>&1; then
  log "daemon already answers on $SOCK"
else
  if ! alive "$PIDFILE" dockerd; then
    clean_stale "$PIDFILE" /var/run/docker
    driver=$(storage_driver /var/lib/docker)
    log "starting dockerd (storage driver $driver), log: $LOG"
    echo "=== $(date -Is) docker-engine.sh starting dockerd" >>"$LOG"
    setsid nohup dockerd --host "unix://$SOCK" --pidfile "$PIDFILE" \
      --storage-driver="$driver" "${DOCKERD_FLAGS[@]}" >>"$LOG" 2>&1 </dev/null &
    started=$!
  fi
  wait_docker "$SOCK" "$LOG" "${started:-}"
fi
docker -H "unix://$SOCK" version --format \
  "[$LOG_TAG] ready: server {{.Server.Version}} API {{.Server.APIVersion}}, client {{.Client.Version}} API {{.Client.APIVersion}}" >&2
