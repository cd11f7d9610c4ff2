#!/usr/bin/env bash
# The offline base images for the Docker demo (envoy/docker) on a machine
# that cannot pull from any image registry: minimal Debian bookworm root
# filesystems made with mmdebstrap from Debian's own package archive,
# imported into the engine and tagged. The tarballs are cached (git-ignored,
# under .cache/docker) so later runs only re-import them.
#
#   tokenhub/debian-base:bookworm  essential + ca-certificates: the base of
#                                  the offline setup, admin, echo and Envoy images
#   tokenhub/debian-curl:bookworm  the same + curl and openssl: the test and
#                                  admin-API client (stands in for curlimages/curl)
#   tokenhub/debian-redis:bookworm the same base + Debian's redis-server: the
#                                  global quota mode's counters (stands in for
#                                  the official redis image)
#
#   tools/docker-base.sh            # build missing tarballs, import missing tags
#   tools/docker-base.sh --rebuild  # build the tarballs again
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TOKENHUB_DOCKER_CACHE:-.cache/docker}
MIRROR=${TOKENHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump the -vN suffix when a package list changes: the tarball is keyed on it.
IMAGES=(
    "tokenhub/debian-base:bookworm debian-bookworm-base-v1.tar ca-certificates"
    "tokenhub/debian-curl:bookworm debian-bookworm-curl-v1.tar ca-certificates,curl,openssl"
    "tokenhub/debian-redis:bookworm debian-bookworm-redis-v1.tar ca-certificates,redis-server"
)

log() { echo "docker-base: $*" >&2; }

for spec in "${IMAGES[@]}"; do
    read -r tag file packages <<<"$spec"
    tarball=$CACHE/$file
    if [[ ${1:-} == --rebuild ]]; then
        rm -f "$tarball"
        docker image rm -f "$tag" >/dev/null 2>&1 || true
    fi
    if [[ ! -s $tarball ]]; then
        command -v mmdebstrap >/dev/null || {
            log "mmdebstrap missing: installing it (Debian package)"
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
        }
        mkdir -p "$CACHE"
        log "building $tarball with mmdebstrap (Debian bookworm, variant essential + $packages)"
        # essential: dpkg, dash, coreutils, libc, no apt; no docs or locales.
        # Written to a temp file and renamed: a broken run leaves no half
        # tarball behind to be imported next time.
        mmdebstrap --quiet --format=tar --variant=essential --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$tarball.tmp" "$MIRROR"
        mv -f "$tarball.tmp" "$tarball"
    fi
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        log "importing $tarball as $tag"
        docker import --change 'CMD ["/bin/sh"]' "$tarball" "$tag" >/dev/null
    fi
done
log "base images ready"
