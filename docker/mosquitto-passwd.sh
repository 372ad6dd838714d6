#!/bin/sh
# Makes mosquitto's password file from the environment, then runs COMMAND (the broker), so the
# fleet's credentials live in one place (docker/.env, or a Kubernetes Secret) and nobody needs
# mosquitto_passwd on the host. docs/fleet.md, "Broker security".
#
#   mosquitto-passwd.sh PASSWORD_FILE COMMAND [ARG...]
#
# Accounts (docker/mosquitto.acl gives each its rights):
#   worker     MQTT_WORKER_PASSWORD     required
#   edge       MQTT_EDGE_PASSWORD       required
#   dashboard  MQTT_DASHBOARD_PASSWORD  optional: without it there is no dashboard account
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 PASSWORD_FILE COMMAND [ARG...]" >&2
    exit 2
fi
file=$1
shift

fail() {
    echo "mosquitto-passwd.sh: $*" >&2
    exit 2
}

# Plain "user:password" lines first, hashed in place by mosquitto_passwd -U below: the
# passwords never appear on a command line (printf is a shell builtin).
umask 077
tmp="$file.new"
: >"$tmp"
trap 'rm -f "$tmp"' EXIT  # a refused password leaves nothing behind (exec skips it)

add() {
    case $2 in
    *:* | *"
"*) fail "the password of '$1' must not contain ':' or a line break" ;;
    esac
    # The broker is the fleet's only gate: no short passwords.
    if [ "${#2}" -lt 12 ]; then
        fail "the password of '$1' is shorter than 12 characters"
    fi
    printf '%s:%s\n' "$1" "$2" >>"$tmp"
}

[ -n "${MQTT_WORKER_PASSWORD:-}" ] || fail "set MQTT_WORKER_PASSWORD (docker/.env)"
[ -n "${MQTT_EDGE_PASSWORD:-}" ] || fail "set MQTT_EDGE_PASSWORD (docker/.env)"
add worker "$MQTT_WORKER_PASSWORD"
add edge "$MQTT_EDGE_PASSWORD"
if [ -n "${MQTT_DASHBOARD_PASSWORD:-}" ]; then
    add dashboard "$MQTT_DASHBOARD_PASSWORD"
fi

mosquitto_passwd -U "$tmp"
# The image's broker drops root for the mosquitto user; let that user read the file.
chown mosquitto:mosquitto "$tmp" 2>/dev/null || true
mv "$tmp" "$file"
exec "$@"
