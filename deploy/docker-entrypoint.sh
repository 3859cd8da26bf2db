#!/bin/sh
# The container image's entry point (the Dockerfile runs it with /bin/sh: no exec bit needed).
# `docker run IMAGE serve --config F` and `docker run IMAGE ringcast serve --config F` both run
# ringcast; a command that exists in the image (sh, python) runs as given. exec: the server is
# PID 1, gets the stop signal itself, and is where the HEALTHCHECK (`ringcast health --pid 1`)
# finds its settings.
set -e
if ! command -v "$1" >/dev/null 2>&1; then
  set -- ringcast "$@"
fi
exec "$@"
