#!/usr/bin/env bash
# The whole suite: lint, types, then pytest inside a loopback-only network namespace when we
# can make one (root, or an unprivileged user namespace), so nothing can leave the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
# ultralytics must never reach the network or pip-install at run time in tests.
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false ORT_DISABLE_TELEMETRY=1 YOLO_VERBOSE=false
export MOBIEYE_CACHE_DIR=${MOBIEYE_CACHE_DIR:-$PWD/.pytest_cache/mobieye}
export YOLO_CONFIG_DIR=$MOBIEYE_CACHE_DIR/ultralytics MPLCONFIGDIR=$MOBIEYE_CACHE_DIR/matplotlib
mkdir -p "$YOLO_CONFIG_DIR" "$MPLCONFIGDIR" artifacts

if [ "${MOBIEYE_INSTALL_SYSTEM_DEPS:-0}" = 1 ]; then
  scripts/install-system-deps.sh
fi

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
PYTEST=(python -m pytest -ra --junitxml=artifacts/junit.xml "$@")
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${PYTEST[@]}"
elif unshare -rn true 2>/dev/null; then
  exec unshare -rn sh -c 'ip link set lo up && exec "$@"' sh "${PYTEST[@]}"
else
  echo "warning: cannot create a network namespace; running on the host network" >&2
  exec "${PYTEST[@]}"
fi
