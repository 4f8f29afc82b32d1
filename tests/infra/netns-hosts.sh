#!/usr/bin/env bash
# shellcheck disable=SC2016  # sh -c '...' and remote commands expand later, on purpose
# Fake remote GPU hosts gpu01 / gpu02, each a network namespace with:
#   - a veth to the bridge rtbr0 in the root namespace (root side 10.231.7.1/24),
#     gpu01 = 10.231.7.11, gpu02 = 10.231.7.12 (no route anywhere else);
#   - its own OpenSSH server on :22 (host key under /var/lib/runner-test/<host>/),
#     key-only login for user runnertest (member of group docker);
#   - its own dockerd (data root /var/lib/runner-test/<host>/docker, socket
#     /run/runner-test/<host>/docker.sock), exported to SSH sessions as DOCKER_HOST,
#     so images on the laptop engine are not on the host until transferred;
#   - per-host dirs /srv/runner-test/<host>/{models,data,cache,outputs};
#     gpu02 also has a 4 MiB tmpfs at /srv/runner-test/gpu02/small ("disk full").
# Client: ssh -F /var/lib/runner-test/ssh_config gpu01   (key: /var/lib/runner-test/client_key)
#
# Usage: netns-hosts.sh up|down|purge|status
#        netns-hosts.sh link-down|link-up HOST  # partition: packets silently dropped, TCP hangs
#        netns-hosts.sh kill-sessions HOST      # kill sshd session processes: connections get EOF
# Other faults by hand: remote engine down:
#   kill "$(cat /run/runner-test/gpu01/docker.pid)"
set -euo pipefail
LOG_TAG=netns-hosts
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

declare -A ADDR=([gpu01]=10.231.7.11 [gpu02]=10.231.7.12)
HOSTS=(gpu01 gpu02)
BRIDGE=rtbr0 BRIDGE_ADDR=10.231.7.1/24
USER_NAME=runnertest
STATE=/var/lib/runner-test RUNDIR=/run/runner-test SRV=/srv/runner-test
SMALL_DISK_HOST=gpu02 SMALL_DISK_SIZE=4m

pid_of() { cat "$RUNDIR/$1/$2.pid" 2>/dev/null || true; }

# run_in HOST CMD...: run in HOST's network namespace with its own hostname.
run_in() {
  local h=$1; shift
  nsenter --net="/run/netns/$h" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

setup_common() {
  apt_install openssh-server docker.io rsync  # rsync: runner syncs datasets with it when both sides have it
  groupadd -f docker
  if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd -m -s /bin/bash -G docker "$USER_NAME"
  fi
  usermod -aG docker -p '*' "$USER_NAME"  # '*': no password, but not "locked" for pubkey login
  mkdir -p "$STATE" "$RUNDIR" /run/sshd
  chmod 755 "$STATE" "$RUNDIR"
  [[ -s $STATE/client_key ]] || ssh-keygen -q -t ed25519 -N '' -C runner-test-client -f "$STATE/client_key"
  local home; home=$(getent passwd "$USER_NAME" | cut -d: -f6)
  install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "$home/.ssh"
  install -m 600 -o "$USER_NAME" -g "$USER_NAME" "$STATE/client_key.pub" "$home/.ssh/authorized_keys"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then ip link add "$BRIDGE" type bridge; fi
  ip addr replace "$BRIDGE_ADDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

setup_net() { # HOST
  local h=$1
  # /run/netns/HOST survives killed processes, but is a dead file after a reboot.
  if [[ -e /run/netns/$h ]] && ! mountpoint -q "/run/netns/$h"; then rm -f "/run/netns/$h"; fi
  [[ -e /run/netns/$h ]] || ip netns add "$h"
  if ! ip link show "rt-$h" >/dev/null 2>&1; then
    ip -n "$h" link del eth0 2>/dev/null || true
    ip link add "rt-$h" type veth peer name eth0 netns "$h"
  fi
  ip link set "rt-$h" master "$BRIDGE" up
  ip -n "$h" addr replace "${ADDR[$h]}/24" dev eth0
  ip -n "$h" link set lo up
  ip -n "$h" link set eth0 up
}

setup_dirs() { # HOST
  local h=$1 d
  for d in models data cache outputs; do
    install -d -o "$USER_NAME" -g "$USER_NAME" "$SRV/$h/$d"
  done
  if [[ $h == "$SMALL_DISK_HOST" ]] && ! mountpoint -q "$SRV/$h/small"; then
    install -d "$SRV/$h/small"
    mount -t tmpfs -o "size=$SMALL_DISK_SIZE,uid=$(id -u "$USER_NAME"),gid=$(id -g "$USER_NAME"),mode=755" \
      "runner-test-$h-small" "$SRV/$h/small"
  fi
}

start_dockerd() { # HOST
  local h=$1 run=$RUNDIR/$1 lg=/var/log/runner-test-$1-dockerd.log
  if docker -H "unix://$run/docker.sock" info >/dev/null 2>&1; then return 0; fi
  mkdir -p "$run"
  if ! alive "$run/docker.pid" dockerd; then
    clean_stale "$run/docker.pid" "$run/exec"
    local driver started; driver=$(storage_driver "$STATE/$h/docker")
    # own key.json, else every engine here reports the same ID (/etc/docker/key.json)
    echo "{\"deprecated-key-path\": \"$STATE/$h/key.json\"}" >"$STATE/$h/daemon.json"
    log "$h: starting dockerd ($driver), log: $lg"
    echo "=== $(date -Is) netns-hosts.sh starting dockerd for $h" >>"$lg"
    setsid nohup nsenter --net="/run/netns/$h" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$h" \
      dockerd --host "unix://$run/docker.sock" --pidfile "$run/docker.pid" \
      --data-root "$STATE/$h/docker" --exec-root "$run/exec" \
      --containerd-namespace "$h" --containerd-plugins-namespace "$h-plugins" \
      --config-file "$STATE/$h/daemon.json" \
      --storage-driver="$driver" "${DOCKERD_FLAGS[@]}" >>"$lg" 2>&1 </dev/null &
    started=$!
  fi
  wait_docker "$run/docker.sock" "$lg" "${started:-}"
}

start_sshd() { # HOST
  local h=$1 dir=$STATE/$1 cfg=$STATE/$1/sshd_config lg=/var/log/runner-test-$1-sshd.log
  mkdir -p "$dir"
  [[ -s $dir/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$dir/ssh_host_ed25519_key"
  cat >"$cfg" <<CFG
# generated by tests/infra/netns-hosts.sh
ListenAddress ${ADDR[$h]}:22
HostKey $dir/ssh_host_ed25519_key
PidFile $RUNDIR/$h/sshd.pid
SetEnv DOCKER_HOST=unix://$RUNDIR/$h/docker.sock RUNNER_TEST_HOST=$h
$(sshd_common "$USER_NAME")
CFG
  /usr/sbin/sshd -t -f "$cfg" || die "$h: bad sshd config $cfg"
  if alive "$RUNDIR/$h/sshd.pid" sshd; then
    kill -HUP "$(pid_of "$h" sshd)"  # re-read the (re)generated config
  else
    log "$h: starting sshd on ${ADDR[$h]}:22, log: $lg"
    run_in "$h" /usr/sbin/sshd -f "$cfg" -E "$lg"
  fi
}

write_client_config() {
  local h key
  : >"$STATE/known_hosts.tmp"
  for h in "${HOSTS[@]}"; do
    key=$(cut -d' ' -f1,2 "$STATE/$h/ssh_host_ed25519_key.pub")
    echo "$h,${ADDR[$h]} $key" >>"$STATE/known_hosts.tmp"
  done
  mv "$STATE/known_hosts.tmp" "$STATE/known_hosts"
  {
    for h in "${HOSTS[@]}"; do printf 'Host %s\n  HostName %s\n' "$h" "${ADDR[$h]}"; done
    cat <<CFG
Host ${HOSTS[*]} 10.231.7.*
  User $USER_NAME
  IdentityFile $STATE/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/known_hosts
  StrictHostKeyChecking yes
  ConnectTimeout 10
CFG
  } >"$STATE/ssh_config"
  chmod 644 "$STATE/ssh_config" "$STATE/known_hosts"
  # so plain `ssh gpu01` (and docker's ssh:// with use_ssh_client=True) work too
  if [[ -d /etc/ssh/ssh_config.d ]]; then echo "Include $STATE/ssh_config" >/etc/ssh/ssh_config.d/runner-test.conf; fi
}

check() { # HOST: log in and ask the host's engine for its name
  local h=$1 name
  for _ in $(seq 1 20); do
    name=$(ssh -F "$STATE/ssh_config" -o BatchMode=yes "$h" 'docker info --format "{{.Name}}"' 2>/dev/null) && break
    sleep 0.5
  done
  [[ ${name:-} == "$h" ]] || { ssh -F "$STATE/ssh_config" -o BatchMode=yes "$h" 'docker info' >&2 || true
                               tail -n 20 "/var/log/runner-test-$h-sshd.log" >&2; die "$h: ssh + docker check failed"; }
  log "$h: ok (ssh runnertest@${ADDR[$h]}, DOCKER_HOST=unix://$RUNDIR/$h/docker.sock)"
}

up() {
  setup_common
  local h
  for h in "${HOSTS[@]}"; do
    setup_net "$h"; setup_dirs "$h"; start_dockerd "$h"; start_sshd "$h"
  done
  write_client_config
  for h in "${HOSTS[@]}"; do check "$h"; done
  log "client key: $STATE/client_key  ssh config: $STATE/ssh_config  known_hosts: $STATE/known_hosts"
}

stop_host() { # HOST: stop dockerd gracefully, then every process left in the netns
  local h=$1 pid _
  pid=$(pid_of "$h" docker)
  if alive "$RUNDIR/$h/docker.pid" dockerd; then
    kill "$pid"
    for _ in $(seq 1 40); do alive "$RUNDIR/$h/docker.pid" dockerd || break; sleep 0.5; done
  fi
  if [[ -e /run/netns/$h ]] && mountpoint -q "/run/netns/$h"; then
    for sig in TERM KILL; do
      ip netns pids "$h" | xargs -r kill -s "$sig" 2>/dev/null || true
      sleep 0.5
    done
    ip netns del "$h"
  fi
  rm -f "/run/netns/$h"
  # mounts a killed dockerd may have left behind (overlay layers, tmpfs small disk)
  findmnt -rn -o TARGET | grep -E "^($STATE/$h/docker|$RUNDIR/$h|$SRV/$h)(/|$)" | sort -r | xargs -r umount -l || true
}

down() {
  local h
  for h in "${HOSTS[@]}"; do stop_host "$h"; done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  log "down"
}

status() {
  local h
  for h in "${HOSTS[@]}"; do
    printf '%s %s netns:%s sshd:%s dockerd:%s\n' "$h" "${ADDR[$h]}" \
      "$(mountpoint -q "/run/netns/$h" 2>/dev/null && echo up || echo down)" \
      "$(alive "$RUNDIR/$h/sshd.pid" sshd && echo up || echo down)" \
      "$(alive "$RUNDIR/$h/docker.pid" dockerd && echo up || echo down)"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  purge) down; rm -rf "${STATE:?}" "${RUNDIR:?}" "${SRV:?}" /etc/ssh/ssh_config.d/runner-test.conf; log "purged $STATE $RUNDIR $SRV" ;;
  status) status ;;
  link-down) ip -n "${2:?host}" link set eth0 down ;;
  link-up) ip -n "${2:?host}" link set eth0 up ;;
  kill-sessions) pkill -P "$(pid_of "${2:?host}" sshd)" || true ;;
  *) echo "usage: $0 up|down|purge|status|link-down HOST|link-up HOST|kill-sessions HOST" >&2; exit 2 ;;
esac
