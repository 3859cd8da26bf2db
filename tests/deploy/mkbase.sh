#!/bin/sh
# Test-only: build a local stand-in for python:3.11-slim-bookworm from Debian's mirror (no Docker
# Hub needed) and import it into podman's store as $TAG; nothing to do when it exists.
# Usage: mkbase.sh TAG ROOTFS_DIR. Adapted from the workplace's shared container recipe.
set -eu
TAG=$1
R=$2
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ "${FORCE:-0}" != 1 ] && podman image exists "$TAG"; then echo "$TAG already present"; exit 0; fi
rm -rf "$R"; mkdir -p "$R"
debootstrap --variant=minbase \
  --include=python3,python3-pip,python3-venv,python3-dev,ca-certificates \
  bookworm "$R" "$MIRROR" >"$R.log" 2>&1 || { tail -20 "$R.log"; exit 1; }
# apt sources like the official image (main + updates + security)
rm -f "$R/etc/apt/sources.list"
cat >"$R/etc/apt/sources.list.d/debian.sources" <<'S'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
S
# like the official image: `python`/`pip` on PATH, no PEP 668 marker
ln -sf /usr/bin/python3 "$R/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$R/usr/local/bin/pip"
rm -f "$R"/usr/lib/python3*/EXTERNALLY-MANAGED
# trust the machine's extra CA certificates (a TLS-re-signing proxy may sit in front of the
# package registries), so pip over https works in RUN steps; the Dockerfile stays clean
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
  chroot "$R" update-ca-certificates >/dev/null
fi
# slim like the official image: no .debs, no apt lists
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/tmp/* "$R.log"
tar -C "$R" --numeric-owner -c . | podman import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' - "$TAG"
rm -rf "$R"
