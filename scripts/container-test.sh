#!/usr/bin/env bash
# The image and the compose fleet, built and run for real, with podman (no Docker engine needed).
#
#   sudo scripts/container-test.sh [options]
#
# 1. Installs what is missing (Debian/Ubuntu, apt): podman, runc, netavark, aardvark-dns,
#    iptables, debootstrap, iproute2; podman-compose from PyPI into its own venv
#    (/opt/podman-compose, override with PODMAN_COMPOSE_VENV).
# 2. Makes a local Debian bookworm base image with debootstrap (python3.11 and python3-venv from
#    Debian, and this host's extra CA certificates, so pip verifies TLS through an intercepting
#    egress proxy): localhost/mobieye-base:bookworm, reused when it exists.
# 3. Builds docker/Dockerfile from that base (podman build --network host: the build, and only
#    the build, reaches the package registries) with a torch source that this machine reaches:
#    --torch-index, and the local wheel stores (pip's file:// indexes) mounted read-only.
# 4. Builds a broker image from the same base and Debian's mosquitto, for compose's
#    MOSQUITTO_IMAGE (Docker Hub's eclipse-mosquitto:2 is not reachable here).
# 5. In a loopback-only network namespace (ip netns; nothing in it can reach a real network),
#    runs docker/compose.yaml with podman-compose and --scale worker=3 from a temporary copy of
#    docker/ with generated secrets (docker/.env is never written), checks that the broker and
#    all workers are healthy and online on MQTT, streams the clip from the compose edge service,
#    kills the worker that serves it and checks that the stream fails over.
# 6. Tears the fleet down (containers, network, namespace); the images stay cached unless
#    --clean. Prints a summary; the exit code is 0 only on PASS.
#
# Podman here, and what this script does about it:
# - runc, not crun (this kernel's hybrid cgroups), and lower nofile/nproc limits (setrlimit is
#   refused otherwise), netavark as the network backend: a containers.conf of our own
#   (CONTAINERS_CONF), so podman-compose's own podman calls get them too.
# - `ip netns exec` mounts a fresh /sys, which hides the cgroup mounts (runc: "no cgroup mount
#   found"): podman runs under `nsenter --net=/run/netns/NAME` instead, which only switches the
#   network namespace. Rootful netavark then makes the compose bridge inside that namespace;
#   aardvark-dns resolves the service names; the namespace has no route anywhere else.
# - Without systemd, podman schedules no health checks (its timers are systemd units) and
#   podman < 4.6 cannot wait for "healthy" (podman-compose then ignores depends_on:
#   condition: service_healthy): a loop of `podman healthcheck run` stands in for the timers,
#   and the script itself waits for a healthy broker and workers before it starts the edge.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${MOBIEYE_CT_DIR:-/var/tmp/mobieye-container-test}
DATA_DIR=${MOBIEYE_DATA_DIR:-$REPO/../shared/data}
PODMAN_COMPOSE_VENV=${PODMAN_COMPOSE_VENV:-/opt/podman-compose}
BASE_IMAGE=localhost/mobieye-base:bookworm
IMAGE=localhost/mobieye:latest
BROKER_IMAGE=localhost/mobieye-mosquitto:bookworm
PROJECT=mobieyect
WORKERS=3
DURATION=80
KILL_AFTER=20
MODEL=""
CLIP=""
TORCH_INDEX=""
WHEEL_STORES=()
MIRROR=""
CLEAN=0
REBUILD=0
MIN_RESULT_RATIO=0.8

usage() {
  cat <<EOF
usage: sudo $0 [options]

Builds the MobiEye image and a mosquitto image with podman from a local Debian base, runs the
compose fleet (broker + $WORKERS workers + the edge service) in a loopback-only network
namespace, kills the worker that serves the stream, checks the failover, tears it all down
and prints a summary (exit 0 only on PASS). Runs as root.

options:
  --workers N        workers to scale to (default $WORKERS; at least 2 for a failover)
  --duration S       how long the edge streams (default $DURATION s); the kill comes
                     --kill-after S (default $KILL_AFTER s) after the stream is being served
  --kill-after S
  --model FILE       detector the workers serve (default DATA/models/yolox_nano_dynamic_ultralytics.onnx)
  --clip FILE        clip the edge streams in a loop (default DATA/videos/TUD-Stadtmitte.mp4)
                     DATA is \$MOBIEYE_DATA_DIR, else ../shared/data beside the repository
  --torch-index URL  TORCH_INDEX_URL of the build. Default: the Dockerfile's (the PyTorch CPU
                     index) when no local wheel store is found; with one, https://pypi.org/simple
                     (PyPI's torch, which pip takes from the store)
  --wheel-store DIR  a local package index (DIR/simple/<name>/index.html, links into DIR),
                     mounted read-only into the build at the same path and added to
                     PIP_EXTRA_INDEX_URL; repeatable. Default: the file:// extra indexes of
                     this machine's pip configuration (pip config get global.extra-index-url)
  --mirror URL       Debian mirror for debootstrap (default: the one apt uses)
  --work-dir DIR     caches, logs and the fleet's temporary files (default $WORK_DIR)
  --rebuild          remake the base image and build both images without the layer cache
  --clean            at the end, also remove the three images and the base's rootfs
  -h, --help         this help

Installs, if missing: podman runc netavark aardvark-dns iptables debootstrap iproute2 (apt) and
podman-compose (pip, into $PODMAN_COMPOSE_VENV).
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
  --workers) WORKERS=$2; shift 2 ;;
  --duration) DURATION=$2; shift 2 ;;
  --kill-after) KILL_AFTER=$2; shift 2 ;;
  --model) MODEL=$2; shift 2 ;;
  --clip) CLIP=$2; shift 2 ;;
  --torch-index) TORCH_INDEX=$2; shift 2 ;;
  --wheel-store) WHEEL_STORES+=("$2"); shift 2 ;;
  --mirror) MIRROR=$2; shift 2 ;;
  --work-dir) WORK_DIR=$2; shift 2 ;;
  --rebuild) REBUILD=1; shift ;;
  --clean) CLEAN=1; shift ;;
  -h | --help) usage; exit 0 ;;
  *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

MODEL=${MODEL:-$DATA_DIR/models/yolox_nano_dynamic_ultralytics.onnx}
CLIP=${CLIP:-$DATA_DIR/videos/TUD-Stadtmitte.mp4}
START_EPOCH=$(date +%s)
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$WORK_DIR/logs/$RUN_ID
NETNS=mobieyect-$$

# --- output --------------------------------------------------------------------------------

elapsed() { printf '%4ds' $(($(date +%s) - START_EPOCH)); }
step() { printf '\n==> [%s] %s\n' "$(elapsed)" "$*"; }
info() { printf '    [%s] %s\n' "$(elapsed)" "$*"; }
die() {
  printf '\n!!! %s\n' "$*" >&2
  FATAL="$*"
  exit 1
}

CHECKS=()  # "PASS|FAIL<TAB>what"
FAILED=0
FATAL=""
check() {  # check PASS|FAIL "what"
  CHECKS+=("$1	$2")
  [ "$1" = PASS ] || FAILED=1
  printf '    [%s] %s: %s\n' "$(elapsed)" "$1" "$2"
}

# --- 1. tools ------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || { echo "run as root (rootful podman, network namespaces, debootstrap)" >&2; exit 2; }
[ "$WORKERS" -ge 2 ] || { echo "--workers must be 2 or more (one is killed)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "no model at $MODEL (--model, or MOBIEYE_DATA_DIR)" >&2; exit 2; }
[ -f "$CLIP" ] || { echo "no clip at $CLIP (--clip, or MOBIEYE_DATA_DIR)" >&2; exit 2; }
mkdir -p "$WORK_DIR" "$LOGS"

step "tools (logs: $LOGS)"
need_apt=()
for pair in podman:podman runc:runc debootstrap:debootstrap iptables:iptables ip:iproute2 \
  nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
for pkg in netavark aardvark-dns catatonit; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  info "apt-get install ${need_apt[*]}"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}"; } \
    >"$LOGS/apt.log" 2>&1 || die "apt-get install failed: $LOGS/apt.log"
fi
PODMAN_COMPOSE=$PODMAN_COMPOSE_VENV/bin/podman-compose
if [ ! -x "$PODMAN_COMPOSE" ]; then
  info "podman-compose into $PODMAN_COMPOSE_VENV (pip)"
  { python3 -m venv "$PODMAN_COMPOSE_VENV" && "$PODMAN_COMPOSE_VENV/bin/pip" install podman-compose; } \
    >"$LOGS/pip-podman-compose.log" 2>&1 || die "podman-compose install failed: $LOGS/pip-podman-compose.log"
fi

# Our own podman configuration, read by every podman call, podman-compose's included.
export CONTAINERS_CONF=$WORK_DIR/containers.conf
cat >"$CONTAINERS_CONF" <<'EOF'
# scripts/container-test.sh: podman on this host (runc; setrlimit above 1024 is refused;
# no systemd, no journald).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
PODMAN_VERSION=$(podman version --format '{{.Client.Version}}' 2>/dev/null)
COMPOSE_VERSION=$("$PODMAN_COMPOSE" --version 2>/dev/null | sed -n 's/^podman-compose version //p')
info "podman $PODMAN_VERSION (runc, netavark), podman-compose $COMPOSE_VERSION"

# Podman's noise without systemd/syslog, dropped from what we show (the logs keep it).
quiet() { grep -vE 'systemd connection|connect to syslog|PIDs limit|Failed to add conmon to cgroupfs' || true; }

# --- teardown ------------------------------------------------------------------------------

HEALTH_LOOP_PID=""
FLEET_UP=0
inns() { nsenter --net="/run/netns/$NETNS" "$@"; }
compose() {
  (cd "$FLEET_DIR/docker" &&
    inns "$PODMAN_COMPOSE" -p "$PROJECT" -f compose.yaml --env-file .env "$@")
}
project_containers() {
  podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' 2>/dev/null
}

TEARDOWN_OK=""
teardown() {
  set +e
  if [ -n "$HEALTH_LOOP_PID" ]; then
    kill "$HEALTH_LOOP_PID" 2>/dev/null
    wait "$HEALTH_LOOP_PID" 2>/dev/null
    HEALTH_LOOP_PID=""
  fi
  if [ "$FLEET_UP" = 1 ]; then
    step "teardown"
    for c in $(project_containers); do
      [ -n "${LOG_SAVED:-}" ] || podman logs "$c" >"$LOGS/container-$c.log" 2>&1
    done
    compose --profile edge down -t 5 >"$LOGS/compose-down.log" 2>&1
    [ -z "${EDGE_CTR:-}" ] || inns podman rm -f -t 2 "$EDGE_CTR" >/dev/null 2>&1
    for c in $(project_containers); do inns podman rm -f -t 2 "$c" >/dev/null 2>&1; done
    for n in $(podman network ls --format '{{.Name}}' | grep "^${PROJECT}_"); do
      inns podman network rm -f "$n" >/dev/null 2>&1
    done
    podman pod rm -f "pod_$PROJECT" >/dev/null 2>&1
    FLEET_UP=0
  fi
  if ip netns list 2>/dev/null | grep -q "^$NETNS\b"; then
    ip netns del "$NETNS"
  fi
  local left nets
  left=$(project_containers | wc -l)
  nets=$(podman network ls --format '{{.Name}}' 2>/dev/null | grep -c "^${PROJECT}_")
  if [ "$left" = 0 ] && [ "$nets" = 0 ] && ! ip netns list | grep -q "^$NETNS\b"; then
    TEARDOWN_OK=1
    info "no container, network or namespace of the test left"
  else
    TEARDOWN_OK=0
    info "left behind: $left containers, $nets networks"
  fi
  if [ "$CLEAN" = 1 ]; then
    info "--clean: removing $IMAGE $BROKER_IMAGE $BASE_IMAGE and $WORK_DIR/rootfs"
    podman rmi -f "$IMAGE" "$BROKER_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
    podman image prune -f >/dev/null 2>&1
    rm -rf "$WORK_DIR/rootfs"
  fi
  [ -z "${FLEET_DIR:-}" ] || rm -rf "$FLEET_DIR"
}

IMAGE_SIZE="?"
BUILD_S="?"
CACHED_STEPS="?"
summary() {
  local rc=$1 result=PASS
  teardown
  if [ "$TEARDOWN_OK" = 1 ]; then
    CHECKS+=("PASS	teardown: containers, network and namespace removed")
  else
    CHECKS+=("FAIL	teardown: something was left behind"); FAILED=1
  fi
  if [ "$rc" != 0 ] || [ "$FAILED" != 0 ] || [ -n "$FATAL" ]; then result=FAIL; fi
  local cpu mem os
  cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
  mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
  os=$(. /etc/os-release && echo "$PRETTY_NAME")
  {
    echo
    echo "==================== MobiEye container test: $result ===================="
    echo "date          $STARTED_AT ($(($(date +%s) - START_EPOCH)) s in all)"
    echo "machine       $cpu, $(nproc) cores, $mem, kernel $(uname -r), $os"
    echo "tools         podman $PODMAN_VERSION (runc, netavark, rootful), podman-compose $COMPOSE_VERSION"
    echo "base image    $BASE_IMAGE: debootstrap --variant=minbase bookworm, Debian's python3 ${BASE_PYTHON:-?} ${BASE_NOTE:-}"
    echo "image         $IMAGE: $IMAGE_SIZE, ${TORCH_NOTE:-}"
    echo "build time    ${BUILD_S} s this run ($CACHED_STEPS); broker image ${BROKER_BUILD_S:-?} s"
    echo "broker image  $BROKER_IMAGE: ${BROKER_VERSION:-?} (MOSQUITTO_IMAGE for compose)"
    echo "fleet         docker/compose.yaml, podman-compose up --scale worker=$WORKERS, in the"
    echo "              network namespace $NETNS (loopback and the compose bridge only)"
    echo "model, clip   $(basename "$MODEL"), $(basename "$CLIP") (looped, ${DURATION} s)"
    [ -z "${EDGE_LINE:-}" ] || echo "edge report   $EDGE_LINE"
    [ -z "${VICTIM_AFTER:-}" ] || echo "killed worker ${VICTIM#"${PROJECT}"_} after the run: $VICTIM_AFTER"
    echo "checks:"
    local c
    for c in "${CHECKS[@]}"; do printf '  %s  %s\n' "${c%%	*}" "${c#*	}"; done
    [ -z "$FATAL" ] || echo "  FAIL  stopped: $FATAL"
    echo "logs          $LOGS"
    echo "RESULT        $result"
  } | tee "$LOGS/summary.txt"
  cp "$LOGS/summary.txt" "$WORK_DIR/summary-latest.txt"
  [ "$result" = PASS ]
}
trap 'rc=$?; trap - EXIT ERR; set +e; summary $rc; exit $?' EXIT
trap 'exit 130' INT TERM
# Whatever stops the script unannounced (set -e) is named in the summary.
trap 'FATAL=${FATAL:-"line $LINENO: \"$BASH_COMMAND\" failed"}' ERR

# --- 2. base image -------------------------------------------------------------------------

step "base image $BASE_IMAGE"
OLD_BASE_ID=""
if [ "$REBUILD" = 1 ]; then
  # Remade under the same name; the old one goes once the images built on it are replaced.
  OLD_BASE_ID=$(podman image inspect "$BASE_IMAGE" --format '{{.Id}}' 2>/dev/null || true)
fi
if [ -z "$OLD_BASE_ID" ] && podman image exists "$BASE_IMAGE"; then
  info "cached: reusing it (--rebuild remakes it)"
  BASE_NOTE="(cached)"
else
  if [ -z "$MIRROR" ]; then
    MIRROR=$({ grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources \
      /etc/apt/sources.list.d/*.list /etc/apt/sources.list || true; } |
      grep -oE 'https?://[^ ]*/debian/?( |$)' | awk '!/security/ {print $1; exit}' || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
  fi
  info "debootstrap bookworm from $MIRROR (python3, python3-venv, passwd, ca-certificates)"
  t0=$(date +%s)
  rm -rf "$WORK_DIR/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    bookworm "$WORK_DIR/rootfs" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $LOGS/debootstrap.log"
  # This host's own CAs (an egress proxy that intercepts TLS, a company CA): Debian's pip uses
  # the system bundle, so pip inside the build verifies PyPI through them.
  n_ca=0
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    cp "$crt" "$WORK_DIR/rootfs/usr/local/share/ca-certificates/"
    n_ca=$((n_ca + 1))
  done
  [ "$n_ca" = 0 ] || chroot "$WORK_DIR/rootfs" update-ca-certificates >>"$LOGS/debootstrap.log" 2>&1
  rm -rf "$WORK_DIR"/rootfs/var/cache/apt/archives/*.deb "$WORK_DIR"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK_DIR/rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >>"$LOGS/debootstrap.log" 2>&1 ||
    die "podman import failed: $LOGS/debootstrap.log"
  BASE_NOTE="(made in $(($(date +%s) - t0)) s; $n_ca host CA certificates added)"
  info "made $BASE_IMAGE $BASE_NOTE"
fi
BASE_PYTHON=$(podman run --rm --network none "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())' 2>/dev/null) ||
  die "the base image does not run python3"
info "python3 $BASE_PYTHON"

# --- 3. the MobiEye image ------------------------------------------------------------------

# Shows a build's STEP lines as they come, and a heartbeat while a long step runs.
build_with_progress() {  # LOG podman-build-args...
  local log=$1 shown=0 last_beat
  shift
  last_beat=$(date +%s)
  podman build "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    local n
    n=$(grep -c '^STEP ' "$log" || true)
    if [ "$n" -gt "$shown" ]; then
      grep '^STEP ' "$log" | sed -n "$((shown + 1)),${n}p" | cut -c1-110 | sed "s/^/    [$(elapsed)] /"
      shown=$n
      last_beat=$(date +%s)
    elif [ $(($(date +%s) - last_beat)) -ge 30 ]; then
      info "... STEP $n still running; last output: $(tail -n 1 "$log" | tr -d '\r' | cut -c1-70)"
      last_beat=$(date +%s)
    fi
  done
  wait "$pid"
}

# A rebuild leaves the image it replaces without a name: remove it (not its shared layers).
drop_replaced() {  # IMAGE OLD_ID
  local new
  new=$(podman image inspect "$1" --format '{{.Id}}' 2>/dev/null || true)
  if [ -n "$2" ] && [ "$2" != "$new" ]; then
    podman rmi "$2" >/dev/null 2>&1 && info "removed the image this build replaced (${2:0:12})" || true
  fi
}

step "image $IMAGE (docker/Dockerfile; build log: $LOGS/build-mobieye.log)"
old_id=$(podman image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ ${#WHEEL_STORES[@]} -eq 0 ]; then
  for url in $(pip config get global.extra-index-url 2>/dev/null || true); do
    case $url in
    file://*/simple | file://*/simple/) WHEEL_STORES+=("$(dirname "${url#file://}")") ;;
    esac
  done
fi
extra_index=""
for store in "${WHEEL_STORES[@]}"; do
  [ -d "$store/simple" ] || die "wheel store $store has no simple/ index"
  build_args+=(-v "$store:$store:ro")
  extra_index="${extra_index:+$extra_index }file://$store/simple"
done
if [ -n "$extra_index" ]; then
  build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra_index")
  TORCH_INDEX=${TORCH_INDEX:-https://pypi.org/simple}
  info "local wheel stores, read-only in the build: ${WHEEL_STORES[*]}"
fi
if [ -n "$TORCH_INDEX" ]; then
  build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX")
  info "torch from $TORCH_INDEX${extra_index:+ and the stores}"
else
  info "torch from the Dockerfile's default index (the PyTorch CPU wheels)"
fi
[ "$REBUILD" = 0 ] || build_args+=(--no-cache)
t0=$(date +%s)
# --format docker: the OCI format has no HEALTHCHECK. --network host: the build reaches the
# package registries; nothing else runs on the host network.
build_with_progress "$LOGS/build-mobieye.log" --network host --format docker \
  -f "$REPO/docker/Dockerfile" -t "$IMAGE" "${build_args[@]}" "$REPO" ||
  die "podman build failed (tail of $LOGS/build-mobieye.log: $(tail -n 3 "$LOGS/build-mobieye.log" | tr '\n' ' '))"
BUILD_S=$(($(date +%s) - t0))
drop_replaced "$IMAGE" "$old_id"
n_steps=$(grep -c '^STEP ' "$LOGS/build-mobieye.log" || true)
n_cached=$(grep -c -- '--> Using cache' "$LOGS/build-mobieye.log" || true)
CACHED_STEPS="$n_cached of $n_steps steps from the layer cache"
[ "$n_cached" != 0 ] || CACHED_STEPS="no layer cache: a full build"
size_bytes=$(podman image inspect "$IMAGE" --format '{{.Size}}')
IMAGE_SIZE=$(awk -v b="$size_bytes" 'BEGIN {printf "%.2f GB (%.1f GiB)", b/1e9, b/2^30}')
info "built in $BUILD_S s ($CACHED_STEPS), $IMAGE_SIZE"

# The image itself: what it runs, as whom, and that its Python stack imports offline.
hc=$(podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')
if echo "$hc" | grep -q '/healthz'; then check PASS "image has the /healthz HEALTHCHECK"; else check FAIL "image HEALTHCHECK: $hc"; fi
probe=$(podman run --rm --network none -e YOLO_OFFLINE=1 --entrypoint sh "$IMAGE" -c '
  echo "user=$(id -u) mobieye=$(command -v mobieye) python=$(command -v python)"
  python - <<EOF
import importlib.metadata as md, torch, torchvision, cv2, ultralytics, onnxruntime, aiortc
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10]], dtype=torch.float32)
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
print("nms", keep.tolist())
print("torch %s (%s), torchvision %s, OpenCV %s, ultralytics %s, onnxruntime %s" % (
      torch.__version__, "a CUDA build" if torch.version.cuda else "CPU build",
      torchvision.__version__, cv2.__version__, ultralytics.__version__, onnxruntime.__version__))
EOF
  mobieye --help >/dev/null && echo "help=ok"' 2>&1 | quiet) || true
echo "$probe" >"$LOGS/image-probe.log"
info "$(echo "$probe" | grep -E '^(user|torch)' | tr '\n' ' ' | cut -c1-200)"
if echo "$probe" | grep -q 'user=10001 mobieye=/opt/mobieye/bin/mobieye python=/opt/mobieye/bin/python' &&
  echo "$probe" | grep -q 'nms \[0\]' && echo "$probe" | grep -q 'help=ok'; then
  check PASS "image: mobieye and python from the venv /opt/mobieye, uid 10001, torch/torchvision NMS/OpenCV/ultralytics import offline, mobieye --help"
else
  check FAIL "image probe (see $LOGS/image-probe.log)"
fi
torch_line=$(echo "$probe" | grep '^torch ' | head -1 || true)
TORCH_NOTE="${torch_line:-torch ?}"
case $torch_line in *"CUDA build"*)
  TORCH_NOTE="$TORCH_NOTE; torch is PyPI's default (CUDA) build, not the CPU index's" ;;
esac

# --- 4. the broker image -------------------------------------------------------------------

step "broker image $BROKER_IMAGE (Debian's mosquitto on the same base)"
mkdir -p "$WORK_DIR/mosquitto"
cat >"$WORK_DIR/mosquitto/Containerfile" <<EOF
# Made by scripts/container-test.sh: eclipse-mosquitto:2's layout (/mosquitto/config, the
# broker at /usr/sbin/mosquitto, mosquitto_passwd, mosquitto_sub for the health check) from
# Debian's packages, for docker/compose.yaml's MOSQUITTO_IMAGE.
FROM $BASE_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \\
 && chown -R mosquitto:mosquitto /mosquitto/data /mosquitto/log
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
EOF
t0=$(date +%s)
old_id=$(podman image inspect "$BROKER_IMAGE" --format '{{.Id}}' 2>/dev/null || true)
broker_args=(--network host --format docker -t "$BROKER_IMAGE")
[ "$REBUILD" = 0 ] || broker_args+=(--no-cache)
build_with_progress "$LOGS/build-mosquitto.log" "${broker_args[@]}" "$WORK_DIR/mosquitto" ||
  die "broker image build failed: $LOGS/build-mosquitto.log"
BROKER_BUILD_S=$(($(date +%s) - t0))
drop_replaced "$BROKER_IMAGE" "$old_id"
drop_replaced "$BASE_IMAGE" "$OLD_BASE_ID"
BROKER_VERSION=$(podman run --rm --network none "$BROKER_IMAGE" sh -c 'dpkg-query -W -f "mosquitto \${Version}" mosquitto' 2>/dev/null || echo "?")
info "built in $BROKER_BUILD_S s: $BROKER_VERSION"

# --- 5. the fleet ---------------------------------------------------------------------------

step "fleet files: a temporary copy of docker/ with generated secrets"
FLEET_DIR=$(mktemp -d "$WORK_DIR/fleet.XXXXXX")
chmod 755 "$FLEET_DIR"  # the containers' users (mobieye 10001, mosquitto) read the mounts
mkdir -p "$FLEET_DIR/docker"/{models,videos,config} "$FLEET_DIR/out"
cp "$REPO"/docker/{compose.yaml,mosquitto.conf,mosquitto.acl,mosquitto-passwd.sh} "$FLEET_DIR/docker/"
cp "$MODEL" "$FLEET_DIR/docker/models/"
cp "$CLIP" "$FLEET_DIR/docker/videos/clip.mp4"
chmod -R a+rX "$FLEET_DIR/docker"
chmod 777 "$FLEET_DIR/out"  # the edge (uid 10001) writes its report here
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
umask_old=$(umask); umask 077
cat >"$FLEET_DIR/docker/.env" <<EOF
MQTT_WORKER_PASSWORD=$(secret)
MQTT_EDGE_PASSWORD=$(secret)
MQTT_DASHBOARD_PASSWORD=$(secret)
WORKER_TOKEN=$(secret)$(secret)
MODEL_FILE=$(basename "$MODEL")
MOSQUITTO_IMAGE=$BROKER_IMAGE
EOF
umask "$umask_old"
EDGE_PASSWORD=$(sed -n 's/^MQTT_EDGE_PASSWORD=//p' "$FLEET_DIR/docker/.env")
info "$FLEET_DIR/docker (.env: 3 MQTT passwords, WORKER_TOKEN, MODEL_FILE, MOSQUITTO_IMAGE)"

step "loopback-only network namespace $NETNS"
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
routes=$(ip -n "$NETNS" route show default; ip -n "$NETNS" -6 route show default)
links=$(ip -n "$NETNS" -br link | awk '{print $1}' | tr '\n' ' ')
if [ -z "$routes" ] && [ "$links" = "lo " ]; then
  check PASS "namespace $NETNS: only lo and no default route before the fleet"
else
  check FAIL "namespace $NETNS has links '$links' and default routes '$routes'"
fi

step "podman-compose up --scale worker=$WORKERS (broker + $WORKERS workers)"
FLEET_UP=1
compose up -d --no-build --scale "worker=$WORKERS" >"$LOGS/compose-up.log" 2>&1 ||
  die "podman-compose up failed: $(quiet <"$LOGS/compose-up.log" | tail -n 5 | tr '\n' ' ')"
grep -i "ignored" "$LOGS/compose-up.log" | sort -u | cut -c1-140 |
  sed "s/^/    [$(elapsed)] podman-compose: /" || true
# Stand-in for podman's systemd health-check timers (none without systemd).
(
  while :; do
    for c in $(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
    sleep 3
  done
) &
HEALTH_LOOP_PID=$!
mapfile -t WORKER_CTRS < <(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=worker" --format '{{.Names}}' | sort)
BROKER_CTR=$(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=mosquitto" --format '{{.Names}}' | head -1)
info "broker $BROKER_CTR, workers ${WORKER_CTRS[*]}"
# The namespace now holds the compose bridge and the containers' veths, and still no way out.
routes=$(ip -n "$NETNS" route show default; ip -n "$NETNS" -6 route show default)
nets=$(ip -n "$NETNS" -4 -br addr | awk '$1 != "lo" {print $1 " " $3}' | paste -sd, -)
other=$(ip -n "$NETNS" -br link | awk '{sub(/@.*/, "", $1); print $1}' | grep -vE '^(lo|podman[0-9]+|veth[0-9]+)$' || true)
if [ -z "$routes" ] && [ -z "$other" ] && [ -n "$nets" ]; then
  check PASS "fleet network: the compose bridge in $NETNS ($nets), no default route, no other link"
else
  check FAIL "fleet network in $NETNS: bridges '$nets', default routes '$routes', other links '$other'"
fi
[ "${#WORKER_CTRS[@]}" = "$WORKERS" ] || die "expected $WORKERS worker containers, got ${#WORKER_CTRS[@]}"

health() { podman inspect "$1" --format '{{.State.Health.Status}}' 2>/dev/null || echo gone; }
healthz() {  # the worker's /healthz body, from inside its container
  podman exec "$1" python -c "import os, urllib.request as u
try:
    r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('MOBIEYE_WORKER__PORT', '8000'), timeout=4)
    print(r.read().decode())
except Exception as e:
    body = getattr(e, 'read', lambda: b'')()
    print(body.decode() or '{\"error\": \"%s\"}' % e)" 2>/dev/null || echo '{}'
}
jfield() { python3 -c 'import json,sys
try: d = json.loads(sys.stdin.read() or "{}")
except ValueError: d = {}
print(d.get(sys.argv[1], ""))' "$1"; }

step "waiting for a healthy broker and $WORKERS healthy workers (health checks: $LOGS)"
deadline=$(($(date +%s) + 300))
while :; do
  states=""
  all=1
  for c in "$BROKER_CTR" "${WORKER_CTRS[@]}"; do
    s=$(health "$c")
    states="$states ${c#"${PROJECT}"_}=$s"
    [ "$s" = healthy ] || all=0
  done
  if [ "$all" = 1 ]; then info "all healthy:$states"; break; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then
    info "not all healthy after 300 s:$states"
    break
  fi
  info "$states"
  sleep 10
done
if [ "$(health "$BROKER_CTR")" = healthy ]; then
  check PASS "broker healthy (its compose health check: mosquitto_sub as edge)"
else
  check FAIL "broker is $(health "$BROKER_CTR")"
fi
n_ok=0
ids=()
for c in "${WORKER_CTRS[@]}"; do
  body=$(healthz "$c")
  echo "$c $body" >>"$LOGS/healthz.log"
  st=$(echo "$body" | jfield status)
  id=$(echo "$body" | jfield worker_id)
  if [ "$(health "$c")" = healthy ] && [ "$st" = ok ]; then
    n_ok=$((n_ok + 1))
    ids+=("$id")
  fi
done
n_ids=$(printf '%s\n' "${ids[@]}" | sort -u | grep -c . || true)
if [ "$n_ok" = "$WORKERS" ] && [ "$n_ids" = "$WORKERS" ]; then
  check PASS "$WORKERS workers healthy (compose health check) and /healthz status ok, $n_ids distinct ids (${ids[*]})"
else
  check FAIL "$n_ok of $WORKERS workers healthy with /healthz ok, $n_ids distinct ids (see $LOGS/healthz.log)"
fi

# What the edges see: the retained worker states on the broker, read as the edge account.
mqtt_states() {
  podman exec -e P="$EDGE_PASSWORD" "$BROKER_CTR" sh -c \
    'mosquitto_sub -h 127.0.0.1 -p 1883 -u edge -P "$P" -t "mobieye/workers/+/state" -v -W 2 2>/dev/null' || true
}
mqtt_states >"$LOGS/mqtt-states-before.log"
n_online=$(python3 - "$LOGS/mqtt-states-before.log" <<'EOF'
import json, sys
urls = set()
for line in open(sys.argv[1]):
    topic, _, payload = line.partition(" ")
    try:
        state = json.loads(payload)
    except ValueError:
        continue
    if state.get("status") == "online":
        urls.add(state.get("url"))
print(len(urls), " ".join(sorted(str(u) for u in urls)))
EOF
)
if [ "${n_online%% *}" = "$WORKERS" ]; then
  check PASS "$WORKERS workers online on MQTT (retained states read as the edge), URLs ${n_online#* }"
else
  check FAIL "workers online on MQTT: $n_online (see $LOGS/mqtt-states-before.log)"
fi

step "the edge service streams the clip (--worker auto, ${DURATION} s)"
EDGE_CTR=${PROJECT}_edge_test
LOG_SAVED=""
compose --profile edge run -d --no-deps --name "$EDGE_CTR" -v "$FLEET_DIR/out:/out" edge \
  edge --worker auto --source /videos/clip.mp4 --loop --duration "$DURATION" \
  --report /out/edge-report.json >"$LOGS/compose-run-edge.log" 2>&1 ||
  die "podman-compose run edge failed: $(quiet <"$LOGS/compose-run-edge.log" | tail -n 5 | tr '\n' ' ')"
serving() {  # the worker containers with a stream, "name=streams ..."
  local c n out=""
  for c in "${WORKER_CTRS[@]}"; do
    [ "$(podman inspect "$c" --format '{{.State.Running}}' 2>/dev/null)" = true ] || continue
    n=$(healthz "$c" | jfield streams)
    [ "${n:-0}" -gt 0 ] 2>/dev/null && out="$out $c=$n"
  done
  echo "$out"
}
SERVING=""
deadline=$(($(date +%s) + 90))
while [ -z "$SERVING" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || break
  [ "$(podman inspect "$EDGE_CTR" --format '{{.State.Running}}' 2>/dev/null)" = true ] || break
  sleep 3
  SERVING=$(serving)
done
if [ -z "$SERVING" ]; then
  podman logs "$EDGE_CTR" >"$LOGS/container-edge.log" 2>&1 || true
  die "no worker serves the edge's stream within 90 s (edge log: $LOGS/container-edge.log)"
fi
VICTIM=$(echo "$SERVING" | awk '{print $1}' | cut -d= -f1)
VICTIM_ID=$(healthz "$VICTIM" | jfield worker_id)
check PASS "the edge's stream is served by ${VICTIM#"${PROJECT}"_}, worker $VICTIM_ID (its /healthz: streams 1)"
info "streaming; killing ${VICTIM#"${PROJECT}"_} in ${KILL_AFTER} s"
sleep "$KILL_AFTER"

step "podman kill ${VICTIM#"${PROJECT}"_}: the worker that serves the stream (SIGKILL)"
KILLED_AT=$(date +%s)
podman kill "$VICTIM" >/dev/null
AFTER=""
deadline=$(($(date +%s) + 45))
while [ "$(date +%s)" -lt "$deadline" ]; do
  sleep 2
  AFTER=$(serving | tr ' ' '\n' | grep -v "^$VICTIM=" | grep . | head -1 || true)
  [ -z "$AFTER" ] || break
done
AFTER_CTR=""
if [ -n "$AFTER" ]; then
  moved_s=$(($(date +%s) - KILLED_AT))
  AFTER_CTR=${AFTER%%=*}
  AFTER_ID=$(healthz "$AFTER_CTR" | jfield worker_id)
  AFTER=${AFTER#"${PROJECT}"_}
  check PASS "the stream moved to ${AFTER%%=*}, worker $AFTER_ID: its /healthz said streams ${AFTER#*=} ${moved_s} s after the kill (polled)"
else
  check FAIL "no surviving worker took the stream within 45 s of the kill"
fi

# The graceful way out: `podman stop` sends SIGTERM, the worker drains (tells the edge to move,
# waits for it to leave), and compose's stop_grace_period keeps SIGKILL away meanwhile.
DRAINED_ID=""
if [ -n "$AFTER_CTR" ] && [ "$WORKERS" -ge 3 ]; then
  sleep 8
  step "podman stop ${AFTER_CTR#"${PROJECT}"_}: SIGTERM, the worker that serves the stream now drains"
  STOP_AT=$(date +%s)
  podman stop -t 40 "$AFTER_CTR" >"$LOGS/podman-stop.log" 2>&1 || true
  stop_s=$(($(date +%s) - STOP_AT))
  DRAINED_ID=$AFTER_ID
  code=$(podman inspect "$AFTER_CTR" --format '{{.State.ExitCode}}' 2>/dev/null || echo '?')
  NEXT=$(serving | tr ' ' '\n' | grep -v "^$VICTIM=" | grep -v "^$AFTER_CTR=" | grep . | head -1 || true)
  podman logs "$AFTER_CTR" >"$LOGS/drained-worker.log" 2>&1 || true
  drained=$(grep -o 'drained in [0-9.]* s: [0-9]* of [0-9]* stream(s) left before the deadline' "$LOGS/drained-worker.log" | tail -n 1 || true)
  if [ "$code" = 0 ] && [ -n "$drained" ] && [ -n "$NEXT" ]; then
    check PASS "drain: ${AFTER_CTR#"${PROJECT}"_} exited 0 after ${stop_s} s ($drained); ${NEXT%%=*} serves the stream"
  else
    check FAIL "drain: exit code $code after ${stop_s} s, '${drained:-no drain in its log}', next worker '${NEXT:-none}'"
  fi
fi

step "waiting for the edge to finish its ${DURATION} s"
inns podman wait "$EDGE_CTR" >"$LOGS/edge-exit-code.log" 2>&1 || true
EDGE_RC=$(tail -n 1 "$LOGS/edge-exit-code.log")
podman logs "$EDGE_CTR" >"$LOGS/container-edge.log" 2>&1 || true
mqtt_states >"$LOGS/mqtt-states-after.log"
VICTIM_AFTER=$(podman inspect "$VICTIM" --format '{{.State.Status}}, exit code {{.State.ExitCode}}, restarts {{.RestartCount}}' 2>/dev/null || echo gone)
info "the killed worker now: $VICTIM_AFTER"
REPORT=$FLEET_DIR/out/edge-report.json
if [ -f "$REPORT" ]; then
  cp "$REPORT" "$LOGS/edge-report.json"
  read -r failovers captured with_result ratio gap fps worker moves bare <<<"$(python3 - "$REPORT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(r.get("failovers"), r.get("frames_captured"), r.get("frames_with_result"),
      r.get("result_ratio"), r.get("max_result_gap_ms"), r.get("fps"), r.get("worker_id"),
      r.get("moves"), r.get("bare_frames_after_first_boxes"))
EOF
)"
  EDGE_LINE="exit $EDGE_RC, failovers $failovers, moves $moves, frames_with_result/frames_captured $with_result/$captured = $ratio, frames without boxes after the first $bare, longest gap without a result ${gap} ms, ${fps} fps, last worker $worker"
  if [ -n "$DRAINED_ID" ]; then
    if [ "${moves:-0}" -ge 1 ] 2>/dev/null && [ "$worker" != "$DRAINED_ID" ] && [ "$bare" = 0 ]; then
      check PASS "edge report: moves $moves (the drain), no frame without boxes, last worker $worker"
    else
      check FAIL "edge report: moves $moves (expected >= 1), bare frames $bare, last worker $worker (drained: $DRAINED_ID)"
    fi
  fi
  info "$EDGE_LINE"
  if [ "${failovers:-0}" -ge 1 ] 2>/dev/null && [ "$worker" != "$VICTIM_ID" ]; then
    check PASS "edge report: failovers $failovers (>= 1), last worker $worker, not the killed $VICTIM_ID"
  else
    check FAIL "edge report: failovers $failovers (expected >= 1), last worker $worker (killed: $VICTIM_ID)"
  fi
  if python3 -c "import sys; sys.exit(0 if float('$ratio') >= $MIN_RESULT_RATIO else 1)" 2>/dev/null; then
    check PASS "edge report: $with_result of $captured frames had a result ($ratio >= $MIN_RESULT_RATIO) across the kill"
  else
    check FAIL "edge report: result ratio $ratio < $MIN_RESULT_RATIO"
  fi
  [ "$EDGE_RC" = 0 ] && check PASS "edge exited 0 after --duration $DURATION" || check FAIL "edge exit code $EDGE_RC"
else
  check FAIL "the edge wrote no report (exit $EDGE_RC; log $LOGS/container-edge.log)"
fi

# Save every container's log before the teardown removes them.
for c in $(project_containers); do podman logs "$c" >"$LOGS/container-$c.log" 2>&1 || true; done
LOG_SAVED=1
