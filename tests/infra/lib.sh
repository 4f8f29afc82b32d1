# shellcheck shell=bash disable=SC2034
# Helpers shared by the tests/infra scripts (sourced, not executed).

log() { echo "[${LOG_TAG:-infra}] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# alive PIDFILE NAME: the pid in PIDFILE is a running (non-zombie) NAME process.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && running "$pid"
}

# apt_install PKG...: install Debian packages without starting their services.
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; added=1; fi
  local apt=(apt-get install -y -q --no-install-recommends "${missing[@]}")
  # Index lists may be missing or stale on a fresh machine: update and retry once.
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/dev/null; }
  if [[ -n $added ]]; then rm -f "$policy"; fi
}

# storage_driver DATA_ROOT: overlay2 when the kernel has it and DATA_ROOT is not
# itself on overlayfs, else vfs (slow but works anywhere). Override with
# RUNNER_TEST_STORAGE_DRIVER.
storage_driver() {
  if [[ -n ${RUNNER_TEST_STORAGE_DRIVER:-} ]]; then echo "$RUNNER_TEST_STORAGE_DRIVER"; return; fi
  mkdir -p "$1"
  if grep -qw overlay /proc/filesystems && [[ $(stat -f -c %T "$1") != overlayfs ]]; then
    echo overlay2
  else
    echo vfs
  fi
}

# Flags every test dockerd gets: we run nested (no systemd, no NAT wanted),
# containers use network_mode=host, so no bridge and no iptables rules.
DOCKERD_FLAGS=(--iptables=false --ip6tables=false --bridge=none
               --exec-opt native.cgroupdriver=cgroupfs)

# clean_stale PIDFILE EXEC_ROOT: drop pid files of a killed dockerd and of its
# managed containerd; dockerd refuses to start (or waits 40s for a containerd
# that is a zombie) when they still name a pid that exists.
clean_stale() {
  alive "$1" dockerd || rm -f "$1"
  alive "$2/containerd/containerd.pid" containerd || rm -f "$2/containerd/containerd.pid"
}

# running PID: PID exists and is not a zombie.
running() {
  local state
  state=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)
  [[ -n $state && $state != Z ]]
}

# wait_docker SOCK LOG [PID]: wait up to 30s for `docker info` (less if the
# dockerd we just started as PID exits); dump LOG on failure.
wait_docker() {
  local _
  for _ in $(seq 1 60); do
    docker -H "unix://$1" info >/dev/null 2>&1 && return 0
    if [[ -n ${3:-} ]] && ! running "$3"; then break; fi
    sleep 0.5
  done
  log "dockerd on $1 did not answer; last lines of $2:"
  tail -n 40 "$2" >&2
  return 1
}

# sshd settings every test SSH server shares: one user, keys only, SFTP, room for the tests' parallel sessions
sshd_common() {
  cat <<CFG
AllowUsers $1
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
Subsystem sftp internal-sftp
MaxStartups 64
MaxSessions 64
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
CFG
}
