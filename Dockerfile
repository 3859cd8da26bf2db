# ringcast container image. Build:   docker build -t ringcast .
# Run (epoll; io_uring is blocked by the engine's default seccomp profile):
#   docker run -p 8080:8080 ringcast
# Run with io_uring (profile derived by deploy/seccomp/make-profile.py; see docs/deploy.md):
#   docker run -p 8080:8080 --security-opt seccomp=seccomp-io_uring.json ringcast
# Config from a mounted file (env RINGCAST_<SECTION>_<KEY> still wins over it):
#   docker run -v ./ringcast.toml:/etc/ringcast/ringcast.toml:ro -p 8080:8080 ringcast \
#     serve --config /etc/ringcast/ringcast.toml
# (`ringcast serve ...` after the image name works too; so does any command of the image, e.g. sh.)
# BASE is the official image; tests pass --build-arg BASE=<a locally made equivalent>.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# ---- build: compile the cffi extension against liburing-dev into /opt/venv ----
FROM ${BASE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev liburing-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A regular (non-editable) install from a wheel, refused if the wheel lacks the compiled _ringio.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/python -c "import glob, sys, zipfile; \
whl = glob.glob('/tmp/wheels/ringcast-*.whl'); \
names = zipfile.ZipFile(whl[0]).namelist() if len(whl) == 1 else []; \
so = [n for n in names if n.startswith('ringcast/ringio/_ringio') and n.endswith('.so')]; \
sys.exit(0 if so else f'no compiled ringcast/ringio/_ringio*.so in {whl}')" \
 && /opt/venv/bin/pip install /tmp/wheels/ringcast-*.whl \
 && /opt/venv/bin/python -c "import ringcast.ringio._ringio" \
 && rm -rf /tmp/wheels

# ---- runtime: the venv and liburing2, no compiler ----
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends liburing2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --no-log-init --uid 10001 --user-group --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin ringcast \
 && mkdir -p /etc/ringcast
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RINGCAST_SERVER_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# GET /healthz (200 while serving, 503 while draining) on the port the server uses: `ringcast
# health --pid 1` reads the config file, flags and RINGCAST_* environment the server (PID 1,
# or its child under `docker run --init`) was started with, mounted file or not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["ringcast", "health", "--pid", "1", "--timeout", "4"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["ringcast", "serve"]
