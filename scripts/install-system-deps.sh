#!/usr/bin/env bash
# The system packages the real-part tests need (Debian/Ubuntu, as root): the broker and its
# clients, the browser, openssl, and the tools the network and container tests use.
# Installs only what is missing; says what it does.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have unshare || need+=(util-linux)
have mosquitto || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
have mosquitto_passwd || [ -x /usr/bin/mosquitto_passwd ] || need+=(mosquitto)
have mosquitto_sub || need+=(mosquitto-clients)
have chromium || need+=(chromium)
have openssl || need+=(openssl)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages for the tests: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]}; as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages for the tests: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${need[@]}"
