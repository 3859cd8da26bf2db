"""The ``ringcast`` command: serve, health, check-config, probe, version, loadtest.

Exit codes (documented in the README):
  0  success (serve: stopped cleanly after SIGTERM/SIGINT)
  1  runtime failure (cannot bind, backend unavailable, ...)
  2  usage error (bad arguments)
  3  invalid configuration
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ringcast import __version__
from ringcast.config import ENV_PREFIX, Config, load_config
from ringcast.errors import ConfigError, ListenError, RingcastError
from ringcast.redact import mask_credentials
from ringcast.server import sdnotify

if TYPE_CHECKING:
    from ringcast.server.runtime import Server

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3

log = logging.getLogger("ringcast")


def rfc3339(created: float) -> str:
    """A log record's time as RFC 3339 in UTC with milliseconds: ``2026-12-03T10:00:00.123Z``."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (RFC 3339, UTC), ``pid``, ``worker``, ``level``,
    ``logger``, ``msg`` and, for an exception, ``exc``; credentials in URLs masked."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "pid": record.process,
            "worker": self.worker,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_credentials(record.getMessage()),
        }
        if record.exc_info:
            doc["exc"] = mask_credentials(self.formatException(record.exc_info))
        return json.dumps(doc)


class TextFormatter(logging.Formatter):
    """One line per record, timed as the JSON lines are (RFC 3339, UTC, so that the logs of
    several hosts line up); credentials in URLs masked, as in every log line."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


def setup_logging(level: str, fmt: str, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s {tag}%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _load(args: argparse.Namespace) -> Config:
    """Load and check a configuration, including what only the server can check
    (JWT algorithms against keys, key files that parse)."""
    from ringcast.server.settings import protocol_settings

    config = load_config(args.config, os.environ)
    try:
        protocol_settings(config)
    except ValueError as exc:
        raise ConfigError(mask_credentials(f"{args.config or '<defaults>'}: {exc}")) from exc
    return config


# serve's flags, each an override of one key: (option, the key's environment variable).
_FLAGS = (("host", "RINGCAST_SERVER_HOST"), ("port", "RINGCAST_SERVER_PORT"),
          ("backend", "RINGCAST_SERVER_BACKEND"))


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """The flags given, as the environment variables they stand for."""
    return {var: str(getattr(args, opt)) for opt, var in _FLAGS
            if getattr(args, opt, None) is not None}


def describe_sources(path: str | None, env: Mapping[str, str], flags: Sequence[str] = ()) -> str:
    """What a configuration is made of, for the start-up line: the file (or ``built-in
    defaults``), then the ``RINGCAST_*`` variables and the flags over it, by name only: their
    values may be secrets.

    >>> describe_sources("ringcast.toml", {"RINGCAST_SERVER_PORT": "9000"}, ["--backend"])
    'ringcast.toml with RINGCAST_SERVER_PORT, --backend'
    """
    over = [*sorted(name for name in env if name.startswith(ENV_PREFIX)), *flags]
    base = path or "built-in defaults"
    return f"{base} with {', '.join(over)}" if over else base


def _cluster(config: Config) -> str:
    """The cluster a node joins, for the start-up line, credentials masked."""
    url = config.cluster.redis_url
    return mask_credentials(url) if url else "none"


def cmd_serve(args: argparse.Namespace) -> int:
    from ringcast.server.port import hold_port
    from ringcast.server.workers import supervise, worker_count

    sources = describe_sources(args.config, os.environ,
                               [f"--{opt}" for opt, _ in _FLAGS if getattr(args, opt) is not None])
    # Flags act as environment overrides, so a SIGHUP reload and worker
    # processes see the same values.
    os.environ.update(_overrides(args))
    config = _load(args)
    count = worker_count(config.server.workers)
    setup_logging(config.logging.level, config.logging.format)
    if count == 1:
        return run_worker(config, args.config, index=0, count=1, token="", ready=lambda: None,
                          sources=sources)
    srv = config.server
    # The supervisor holds the port for its workers (and resolves port 0 once for all).
    try:
        holder = hold_port(srv.host, srv.port)
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    port = holder.getsockname()[1]
    os.environ["RINGCAST_SERVER_PORT"] = str(port)
    config = load_config(args.config, os.environ)
    log.info("ringcast %s supervisor: %d workers on %s:%d; config: %s; cluster: %s",
             __version__, count, srv.host, port, sources, _cluster(config))

    def worker(index: int, token: str, ready: Callable[[], None]) -> int:
        holder.close()
        os.environ.pop("NOTIFY_SOCKET", None)   # the supervisor speaks to systemd
        setup_logging(config.logging.level, config.logging.format, worker=index)
        return run_worker(config, args.config, index=index, count=count, token=token,
                          ready=ready, sources=sources)

    code = supervise(count, worker, config.shutdown.lame_duck + config.shutdown.drain_timeout,
                     on_ready=lambda: sdnotify.ready(f"{count} workers on {srv.host}:{port}"))
    log.info("stopped")
    return code


def _listen(server: Server) -> tuple[str, int]:
    """``server.start()``, the address it listens on; raises ListenError saying why not.

    A server alone (not a worker of a supervisor, which holds the port for its workers)
    listens without SO_REUSEPORT, so its bind fails while another process listens there;
    ``listen_error`` says so (see :mod:`ringcast.server.port`).
    """
    from ringcast.server.port import listen_error

    srv = server.config.server
    try:
        return server.start()
    except OSError as exc:
        raise listen_error(srv.host, srv.port, exc) from None


def run_worker(config: Config, path: str | None, *, index: int, count: int, token: str,
               ready: Callable[[], None], sources: str) -> int:
    """Serve in this process: the whole server, or one worker of several. ``sources``: what
    the configuration was made of (`describe_sources`), for the start-up line."""
    from ringcast.ringio import RingioError
    from ringcast.server.backend import open_backend
    from ringcast.server.capacity import plan_capacity
    from ringcast.server.runtime import build_server

    # Before the ring exists: it sizes its file table by the open-files limit.
    capacity = plan_capacity(config)
    if capacity.files_short:
        log.warning("the open-files limit is %d, below what limits.max_connections = %d "
                    "needs: connections past it will be refused; raise the hard limit "
                    "(LimitNOFILE= in the systemd unit, docker run --ulimit nofile=, ulimit -Hn) "
                    "or lower limits.max_connections", capacity.nofile, capacity.connections)
    try:
        backend = open_backend(config, capacity.loop_ids)
    except RingcastError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    on_linked = ready if count > 1 else lambda: None
    server = build_server(config, backend, max_connections=capacity.connections,
                          config_path=path, worker=index, workers=count, token=token,
                          on_linked=on_linked)
    try:
        host, port = _listen(server)
    except ListenError as exc:
        log.error("%s", exc)
        server.close()
        return EXIT_FAILURE
    server.install_signal_handlers()
    # Tests and operators' scripts read the start of this line, up to the backend's reason.
    log.info("ringcast %s listening on %s:%d, backend %s (%s); config: %s; workers: %d; "
             "cluster: %s", __version__, host, port, backend.name, backend.reason, sources,
             count, _cluster(config))
    log.info("taking up to %d connections%s, bound by %s", capacity.connections,
             " in this worker" if count > 1 else "", capacity.bound)
    if count == 1:
        server.accept_clients()
        sdnotify.ready(f"listening on {host}:{port}, backend {backend.name}")
    _collect_for_serving()
    try:
        server.run()
    except RingioError as exc:
        log.error("the event loop failed: %s; this worker stops (under `workers`, the "
                  "supervisor starts a new one)", exc)
        return EXIT_FAILURE
    log.info("stopped")
    return EXIT_OK


# Allocations (net) between two collections of the youngest generation, instead of
# Python's 700 (see _collect_for_serving).
GC_YOUNGEST: Final = 10_000


def _collect_for_serving() -> None:
    """Set the cyclic garbage collector for a server's life, once it is about to serve:
    the youngest generation collected every GC_YOUNGEST allocations.

    A connection storm allocates a few dozen objects per handshake, almost none of them
    in cycles. With Python's 700, 10,000 handshakes and then their closes made 110
    collections of the youngest generation, 9 of the middle one and a full one (15-19
    ms, in which nothing is served): 25-31 ms in all. At 10,000: 8 collections, 6-10 ms
    (``bench/gc_serve.py``, docs/benchmarks.md). What it costs: cyclic garbage waits
    for at most that many allocations more before it is freed. (Freezing the start-up
    objects, as some servers do, made it worse here: with nothing counted as long-lived,
    a storm's first sessions soon trigger a full collection.)
    """
    gc.collect()
    gc.set_threshold(GC_YOUNGEST, 10, 10)


def cmd_health(args: argparse.Namespace) -> int:
    from ringcast.health import HealthError, ask, serve_invocation

    if args.pid is not None and (args.config or args.host or args.port is not None):
        print("ringcast health: --pid takes the server's own settings; leave out --config, "
              "--host and --port", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.pid is not None:
            # The server's own flags and environment, as it read them.
            server = serve_invocation(args.pid)
            served = build_parser().parse_args(server.args)
            path = served.config and os.path.join(server.cwd, served.config)
            config = load_config(path, {**server.env, **_overrides(served)})
        else:
            config = load_config(args.config, {**os.environ, **_overrides(args)})
        answer = ask(config.server.host, config.server.port, args.timeout)
    except HealthError as exc:
        print(f"ringcast health: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(answer.body)
    if answer.status != 200:
        why = "draining: the server is stopping" if answer.status == 503 else "not serving"
        print(f"ringcast health: /healthz answered {answer.status} ({why})", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    sys.stdout.write(config.to_toml())
    print(f"# {args.config or 'built-in defaults'}: configuration is valid", file=sys.stderr)
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    from ringcast.ringio import probe

    result = probe()
    print(result if not isinstance(result, Exception) else f"io_uring unavailable: "
          f"{result.cause}\nremedy: {result.remedy}\nringcast will use the epoll backend")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"ringcast {__version__}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringcast",
        description="A high fan-out WebSocket server over io_uring (epoll where io_uring is "
                    "blocked).",
        epilog="exit codes: 0 success, 1 runtime failure (port in use, backend unavailable), "
               "2 usage error, 3 invalid configuration")
    parser.add_argument("--version", action="version", version=f"ringcast {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server",
                           description="Run the server until SIGTERM or SIGINT (SIGHUP reloads "
                                       "the config file). Flags override the file and the "
                                       "RINGCAST_<SECTION>_<KEY> environment.")
    serve.add_argument("--config", "-c", help="TOML file (default: built-in defaults)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--backend", choices=["auto", "io_uring", "epoll"],
                       help="override server.backend")
    serve.set_defaults(fn=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and print it",
                           description="Validate a config file with the RINGCAST_* environment "
                                       "over it, and print the configuration in effect.")
    check.add_argument("config", nargs="?", help="TOML file (default: built-in defaults)")
    check.set_defaults(fn=cmd_check_config)

    health = sub.add_parser(
        "health", help="ask a running server's /healthz (exit 0 when it answers 200)",
        description="GET /healthz from a running server and print the answer; exit 0 on 200 "
                    "(serving), 1 otherwise (draining, not running). The server is found from "
                    "the same config file, environment and flags as `ringcast serve` has, or "
                    "from those of the running server process --pid (what the container "
                    "image's HEALTHCHECK does).")
    health.add_argument("--config", "-c", help="TOML file (default: built-in defaults)")
    health.add_argument("--host", help="override server.host")
    health.add_argument("--port", type=int, help="override server.port")
    health.add_argument("--pid", type=int,
                        help="instead, read the config file, flags and RINGCAST_* environment "
                             "of this `ringcast serve` process (or of its child, under an init)")
    health.add_argument("--timeout", type=float, default=4.0,
                        help="seconds to wait for the answer (default: 4)")
    health.set_defaults(fn=cmd_health)

    sub.add_parser("probe", help="report what io_uring offers here").set_defaults(fn=cmd_probe)
    sub.add_parser("version", help="print the version").set_defaults(fn=cmd_version)

    try:
        from ringcast.loadtest.cli import add_parser as add_loadtest
    except ImportError:
        pass
    else:
        add_loadtest(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"ringcast: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
