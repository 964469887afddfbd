#!/bin/sh
# Make a private CA, a server certificate and a client certificate for TLS.
#
#   docker/make-certs.sh [OUT_DIR] [EXTRA_NAME ...]      (OUT_DIR defaults to docker/certs)
#
# Writes into OUT_DIR:
#   ca.crt                 the CA certificate: give it to devices and clients (MQTT_TLS_CA ...)
#   ca.key                 the CA's private key: move it off the server once you are done
#   server.crt server.key  the broker's certificate, valid for localhost, 127.0.0.1, the
#                          compose service names (mosquitto, redis, mariadb) and EXTRA_NAMEs
#                          (a DNS name, or an IP address); mounted by docker-compose.yml
#   client.crt client.key  a client certificate (CN=app) for servers that demand one
#
# An existing CA in OUT_DIR is reused, so certificates can be re-issued (new EXTRA_NAMEs)
# without redistributing ca.crt. Needs the openssl command. Keys are RSA 2048 and readable
# by their owner only; certificates last CERT_DAYS days (default 825).
set -eu

out=${1:-$(dirname "$0")/certs}
[ $# -gt 0 ] && shift
days=${CERT_DAYS:-825}

mkdir -p "$out"
cd "$out"
umask 077

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
        -keyout ca.key -out ca.crt -subj "/CN=mqtt-jobs private CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
fi

names="DNS:localhost,IP:127.0.0.1,DNS:mosquitto,DNS:redis,DNS:mariadb"
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) names="$names,DNS:$name" ;;
        *) names="$names,IP:$name" ;;
    esac
done

# issue NAME CN EXTENDED_USAGE [SUBJECT_ALT_NAMES]
issue() {
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$2" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid,issuer"
        if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
    } > "$1.ext"
    openssl x509 -req -sha256 -days "$days" -in "$1.csr" -CA ca.crt -CAkey ca.key \
        -CAcreateserial -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

issue server "${CERT_SERVER_CN:-mosquitto}" serverAuth "$names"
issue client "${CERT_CLIENT_CN:-app}" clientAuth
chmod 644 ca.crt server.crt client.crt
echo "certificates written to $(pwd): ca.crt (distribute), ca.key (keep offline)," \
    "server.crt/server.key, client.crt/client.key"
