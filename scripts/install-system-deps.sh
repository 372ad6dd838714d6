#!/usr/bin/env bash
# The system packages the real-part tests need (Debian/Ubuntu, as root): the broker and its
# clients, the browser, openssl, the tools the network and container tests use, and the real
# cameras of the live-source tests (ffmpeg's MJPEG server; GStreamer's RTSP server, run by the
# system Python).
# Installs only what is missing; says what it does.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
hasfile() { compgen -G "$1" >/dev/null; }  # a path or a glob (multiarch library folders)
have ip || need+=(iproute2)
have unshare || need+=(util-linux)
have mosquitto || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
have mosquitto_passwd || [ -x /usr/bin/mosquitto_passwd ] || need+=(mosquitto)
have mosquitto_sub || need+=(mosquitto-clients)
have chromium || need+=(chromium)
have openssl || need+=(openssl)
have ffmpeg || need+=(ffmpeg)
# The NAT traversal tests (tests/netem/test_nat.py): a real TURN server and NAT rules.
have turnserver || [ -x /usr/bin/turnserver ] || need+=(coturn)
have nft || [ -x /usr/sbin/nft ] || need+=(nftables)
[ -x /usr/bin/python3 ] || need+=(python3)
hasfile /usr/lib/python3/dist-packages/gi/__init__.py || need+=(python3-gi)
hasfile '/usr/lib/*/girepository-1.0/GstRtspServer-1.0.typelib' || need+=(gir1.2-gst-rtsp-server-1.0)
hasfile '/usr/lib/*/gstreamer-1.0/libgstvideotestsrc.so' || need+=(gstreamer1.0-plugins-base)
hasfile '/usr/lib/*/gstreamer-1.0/libgstrtp.so' || need+=(gstreamer1.0-plugins-good)
hasfile '/usr/lib/*/gstreamer-1.0/libgstx264.so' || need+=(gstreamer1.0-plugins-ugly)
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
