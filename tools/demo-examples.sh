# shellcheck shell=bash
# The curl examples `make demo` (tools/demo.sh) and the Docker demo
# (envoy/docker/up.sh) both print: one text for both. Sourced; the caller
# sets C (curl with the demo's CA), URL (the chat completions URL), KEY and
# US_KEY (the demo keys), GONE (a deleted key) and TYPO (a mistyped one).
demo_examples() {
    cat <<MSG
Allowed: the upstream sees the provider credential and the authoritative tenant headers, not your key:
  $C $URL -H 'Authorization: Bearer $KEY' -d '{}'

Data localization: each tenant reaches its own region's upstream only (see x-tokenhub-region in the echo);
a client-sent x-tokenhub-region is replaced by the tenant's:
  $C $URL -H 'Authorization: Bearer $US_KEY' -H 'x-tokenhub-region: eu' -d '{}'

TLS 1.2 is refused (handshake alert "protocol version"):
  $C -S --tlsv1.2 --tls-max 1.2 $URL

Denials need no body (curl 7.x over HTTP/2 may report "(92) Stream error" when the
gateway refuses a request before reading its body; add --http1.1 to see the reply then).

Wrong key (401): a deleted key, then a mistyped one (its checksum fails before any lookup):
  $C $URL -H 'Authorization: Bearer $GONE'
  $C $URL -H 'Authorization: Bearer $TYPO'

MSG
}
