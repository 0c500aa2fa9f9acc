#!/usr/bin/env bash
# The one provisioning path of the course. `./course`, .ci/run, the Dockerfile
# and the Vagrantfile all call this script. Every step is idempotent: a second
# run checks and skips in a few seconds.
#
#   scripts/provision.sh            everything (needs root)
#   scripts/provision.sh --image    what a container/VM image can hold: packages,
#                                   venv, kernelspec (no mounts, no headers:
#                                   those belong to the kernel it will run on)
#   scripts/provision.sh --runtime  mounts and headers only (container start)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EBPF_TUTOR_VENV:-$ROOT/.venv}
MODE=${1:-all}
log() { printf '\033[1m[provision]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "provisioning installs packages and mounts filesystems: run it as root (sudo $0)" >&2
  exit 1
fi

# ---------------------------------------------------------------- packages --
APT_PACKAGES=(
  python3 python3-venv python3-dev python3-bpfcc libbpfcc bpfcc-tools bpftrace
  clang llvm libbpf-dev bpftool iproute2 iputils-ping procps sudo
  make gcc libc6-dev flex bison bc libssl-dev libelf-dev xz-utils ca-certificates
)
install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "system packages: all present"; return; fi
  log "installing ${#missing[@]} system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The real tools that chapters compare the course's programs with (promtool
# and prometheus for chapter 13...), listed in scripts/peer-packages.txt: on
# the host only, not in the course VM image, whose inputs this list is not
# part of. A service a package would start on install (prometheus) is stopped
# and disabled: the chapters start their own, on 127.0.0.1, and remove it after.
install_peers() {
  local missing=() p
  for p in $(grep -v '^#' "$ROOT/scripts/peer-packages.txt"); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "peer tools: all present"; return; fi
  log "installing ${#missing[@]} peer tools: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -d /run/systemd/system ]; then
    for p in "${missing[@]}"; do systemctl disable --now "$p" >/dev/null 2>&1 || true; done
  fi
}

# JupyterHub's proxy (workshop mode, docs/instructor.md) comes from npm:
# configurable-http-proxy, into the venv, on the host only. 4.6.x runs on
# Debian's Node.js 18 as well as on newer ones.
CHP_VERSION=4.6.3
install_proxy() {
  local chp="$VENV/node_modules/.bin/configurable-http-proxy"
  if [ -x "$chp" ] && "$chp" --version 2>/dev/null | grep -qx "$CHP_VERSION"; then
    log "configurable-http-proxy: $CHP_VERSION present"; return
  fi
  if ! command -v npm >/dev/null; then
    log "installing nodejs and npm (for JupyterHub's proxy)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  log "installing configurable-http-proxy $CHP_VERSION into $VENV"
  npm install --silent --no-audit --no-fund --prefix "$VENV" "configurable-http-proxy@$CHP_VERSION" >/dev/null
}

# Python packages for the host only (scripts/host-requirements.txt: the
# browser test's Playwright), into the same venv.
install_host_python() {
  local want
  want=$(cat "$ROOT/scripts/host-requirements.txt" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.host-provisioned" 2>/dev/null)" = "$want" ]; then
    log "host python tools: up to date"; return
  fi
  log "installing the host's python tools (scripts/host-requirements.txt)"
  pipq install -r "$ROOT/scripts/host-requirements.txt" -c "$ROOT/constraints.txt"
  echo "$want" > "$VENV/.host-provisioned"
}

# ------------------------------------------------------------- python venv --
pipq() {  # pip, quiet: only real problems reach the terminal
  "$VENV/bin/pip" -q "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }
  return "${PIPESTATUS[0]}"
}
setup_venv() {
  local stamp="$VENV/.provisioned"
  local want
  want=$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    log "python venv: up to date ($VENV)"
  else
    log "python venv: creating/updating $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    pipq install --upgrade pip
    pipq install -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt"
    pipq install --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
  # BCC comes from the distribution: link only its module into the venv,
  # not the whole of dist-packages (whose numpy etc. would shadow ours).
  local site bccdir
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  bccdir=$(/usr/bin/python3 -c 'import bcc, os; print(os.path.dirname(bcc.__file__))')
  mkdir -p "$VENV/distro-bcc"
  ln -sfn "$bccdir" "$VENV/distro-bcc/bcc"
  echo "$VENV/distro-bcc" > "$site/distro_bcc.pth"
  "$VENV/bin/python" -c 'import bcc' || { echo "bcc is not importable in the venv" >&2; exit 1; }
}

# ------------------------------------------------------------------ mounts --
mount_if_missing() {  # fstype dir
  if ! mountpoint -q "$2" 2>/dev/null; then
    mkdir -p "$2"
    mount -t "$1" "$1" "$2" && log "mounted $1 on $2" || log "WARNING: could not mount $1 on $2"
  fi
}
setup_mounts() {
  mount_if_missing debugfs /sys/kernel/debug
  mount_if_missing tracefs /sys/kernel/tracing
  mount_if_missing bpf /sys/fs/bpf
  if ! grep -q " cgroup2 " /proc/mounts; then
    mount_if_missing cgroup2 /sys/fs/cgroup/unified
  fi
  log "mounts: debugfs, tracefs, bpffs, cgroup2 present"
}

# ----------------------------------------------------------------- headers --
setup_headers() {
  "$VENV/bin/python" -m ebpf_tutor headers
}

# -------------------------------------------------------------- kernelspec --
setup_kernelspec() {
  "$VENV/bin/python" -m ebpf_tutor kernelspec --install
  # A non-root learner who provisioned with sudo may start the root kernel
  # with `sudo -n` (that is what the kernelspec does when not root).
  local user=${SUDO_USER:-}
  if [ -n "$user" ] && [ "$user" != root ] && [ -d /etc/sudoers.d ]; then
    local rule="/etc/sudoers.d/ebpf-tutor"
    # Only this command, and no SETENV: the one variable the kernel needs
    # (JPY_PARENT_PID, so it exits with its server) is kept by env_keep.
    { echo "Cmnd_Alias EBPF_TUTOR_KERNEL = $VENV/bin/python -m ipykernel_launcher *"
      echo "Defaults!EBPF_TUTOR_KERNEL env_keep += \"JPY_PARENT_PID\""
      echo "$user ALL=(root) NOPASSWD: EBPF_TUTOR_KERNEL"; } > "$rule.tmp"
    visudo -cq -f "$rule.tmp" || { echo "sudoers rule rejected by visudo" >&2; rm -f "$rule.tmp"; exit 1; }
    chmod 0440 "$rule.tmp" && mv "$rule.tmp" "$rule"
    log "sudoers: $user may start the eBPF (root) kernel without a password ($rule)"
  fi
}

case "$MODE" in
  all|--all)   install_packages; install_peers; setup_venv; install_host_python; install_proxy
               setup_mounts; setup_headers
               setup_kernelspec ;;
  --image)     install_packages; setup_venv; setup_kernelspec ;;
  --runtime)   setup_mounts; setup_headers ;;
  *) echo "usage: $0 [--image|--runtime]" >&2; exit 2 ;;
esac
log "done"
