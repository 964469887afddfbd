#!/bin/sh
# One-shot set-up of the broker's credentials, run by the `mosquitto-init`
# compose service before mosquitto starts (and again at every `docker compose up`).
#
# Writes into AUTH_DIR (the `mosquitto-auth` volume), owned by the mosquitto user
# and readable by it alone:
#   passwords       hashed passwords: the app (user `app`, MQTT_PASSWORD), the
#                   health check (a random password made here) and every device of
#                   DEVICES_FILE (already hashed lines `device_id:$7$...` written by
#                   `mosquitto_passwd`; plain-text passwords are refused)
#   acl             a copy of ACL_FILE
#   healthcheck.pw  the health check's password (made once, then kept)
#   server.crt/.key copies of the TLS certificate and key (docker/make-certs.sh)
#
# Every failure stops with one line naming the file or variable to fix.
set -eu

AUTH_DIR=${AUTH_DIR:-/mosquitto/auth}
ACL_FILE=${ACL_FILE:-/mosquitto/config/acl}
DEVICES_FILE=${DEVICES_FILE:-/secrets/mqtt-devices}
CERT_DIR=${CERT_DIR:-/certs}
APP_USER=app  # the `user app` section of the ACL
HEALTH_USER=healthcheck

fail() { echo "mosquitto-init: $*" >&2; exit 1; }
# The broker drops root for the mosquitto user: hand it the files (when we are root).
to_broker() {
    if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto:mosquitto "$@"; fi
}

[ -n "${MQTT_PASSWORD:-}" ] || fail "MQTT_PASSWORD is empty: set the app's broker password in .env"
[ "${#MQTT_PASSWORD}" -ge 12 ] || fail "MQTT_PASSWORD is shorter than 12 characters"
[ -f "$ACL_FILE" ] || fail "$ACL_FILE is missing"
for file in server.crt server.key; do
    [ -s "$CERT_DIR/$file" ] || fail "$CERT_DIR/$file is missing: run docker/make-certs.sh (README, Deployment)"
done

umask 077
mkdir -p "$AUTH_DIR"
chmod 750 "$AUTH_DIR"
to_broker "$AUTH_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

: > "$work/passwords"
if [ -f "$DEVICES_FILE" ]; then
    line_no=0
    while IFS= read -r line || [ -n "$line" ]; do
        line_no=$((line_no + 1))
        case "$line" in ''|'#'*) continue ;; esac
        user=${line%%:*}
        hash=${line#*:}
        case "$user" in
            "$APP_USER"|"$HEALTH_USER")
                fail "$DEVICES_FILE line $line_no: '$user' is reserved, pick another device id" ;;
            ''|*[!A-Za-z0-9_.-]*)
                fail "$DEVICES_FILE line $line_no: device id must be letters, digits, '_', '.' or '-'" ;;
        esac
        case "$hash" in
            '$6$'*|'$7$'*) ;;
            *) fail "$DEVICES_FILE line $line_no ($user) is not hashed: add devices with mosquitto_passwd" ;;
        esac
        printf '%s\n' "$line" >> "$work/passwords"
    done < "$DEVICES_FILE"
fi

# Kept across runs: a running broker knows only the password it loaded last.
if [ -s "$AUTH_DIR/healthcheck.pw" ]; then
    health_password=$(cat "$AUTH_DIR/healthcheck.pw")
else
    health_password=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
mosquitto_passwd -b "$work/passwords" "$APP_USER" "$MQTT_PASSWORD"
mosquitto_passwd -b "$work/passwords" "$HEALTH_USER" "$health_password"
printf '%s' "$health_password" > "$work/healthcheck.pw"
cp "$ACL_FILE" "$work/acl"
cp "$CERT_DIR/server.crt" "$CERT_DIR/server.key" "$work/"

for file in passwords acl healthcheck.pw server.crt server.key; do
    cp "$work/$file" "$AUTH_DIR/$file.new"
    chmod 600 "$AUTH_DIR/$file.new"
    to_broker "$AUTH_DIR/$file.new"
    mv "$AUTH_DIR/$file.new" "$AUTH_DIR/$file"
done
devices=$(grep -c . "$work/passwords")
echo "mosquitto-init: wrote credentials for $((devices - 2)) devices, $APP_USER and $HEALTH_USER"
