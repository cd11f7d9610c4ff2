#!/usr/bin/env bash
# Makes the certificates of the control plane's xDS channel (mTLS) with
# openssl: a private CA, the control plane's server certificate, and one
# client certificate per gateway. Keys are 0600; the CA key never leaves
# this directory (keep it offline; it signs new gateways).
#
#   tools/xds-certs.sh DIR [--server-name NAME] [--server-ip IP] GATEWAY...
#   tools/xds-certs.sh xds --server-name tokenhub-control-plane gateway-0 gateway-1 gateway-2
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/server.crt, DIR/server.key and
# DIR/GATEWAY.crt, DIR/GATEWAY.key. Existing files are kept (re-run to add
# gateways). The gateways pin NAME (SNI + SAN, default
# tokenhub-control-plane); the server accepts any client certificate the CA
# signed.
set -euo pipefail
umask 077

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
dir=$1; shift
server_name=tokenhub-control-plane
server_ip=127.0.0.1
gateways=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --server-name) server_name=$2; shift 2 ;;
        --server-ip) server_ip=$2; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "xds-certs: unknown option $1" >&2; usage ;;
        *) gateways+=("$1"); shift ;;
    esac
done
command -v openssl >/dev/null || { echo "xds-certs: needs openssl (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"

key() { [[ -s $1 ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS
sign() {
    local name=$1 subject=$2 ext=$3
    [[ -s $dir/$name.crt ]] && return
    key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 365 -sha256 -extfile <(printf '%s\n' "$ext") -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr"
    echo "xds-certs: $dir/$name.crt ($subject)" >&2
}

if [[ ! -s $dir/ca.crt ]]; then
    key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=TokenHub xDS CA" -days 1825 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.crt" 2>/dev/null
    echo "xds-certs: new CA $dir/ca.crt" >&2
fi
sign server "/CN=$server_name" "$(printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,IP:%s' "$server_name" "$server_ip")"
for g in "${gateways[@]}"; do
    sign "$g" "/CN=$g" "$(printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://tokenhub/gateway/%s' "$g")"
done
chmod 0644 "$dir"/*.crt
