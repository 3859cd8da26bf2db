"""``ringcast serve | check-config | probe | version | loadtest``.

Exit codes (documented in the README):
  0  success (serve: stopped cleanly after SIGTERM/SIGINT)
  1  runtime failure (cannot bind, backend unavailable, ...)
  2  usage error (bad arguments)
  3  invalid configuration
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ringcast import __version__
from ringcast.config import Config, load_config
from ringcast.errors import ConfigError, RingcastError
from ringcast.redact import mask_credentials
from ringcast.server import sdnotify

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3

log = logging.getLogger("ringcast")


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
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
    """One line per record; credentials in URLs masked, as in every log line."""

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


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    for opt, key in (("host", "SERVER_HOST"), ("port", "SERVER_PORT"),
                     ("backend", "SERVER_BACKEND")):
        value = getattr(args, opt, None)
        if value is not None:
            env[f"RINGCAST_{key}"] = str(value)
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    from ringcast.server.workers import supervise, worker_count

    # Flags act as environment overrides, so a SIGHUP reload and worker
    # processes see the same values.
    os.environ.update(_overrides(args))
    config = _load(args)
    count = worker_count(config.server.workers)
    if count == 1:
        setup_logging(config.logging.level, config.logging.format)
        return run_worker(config, args.config, index=0, count=1, token="", ready=lambda: None)
    setup_logging(config.logging.level, config.logging.format)
    srv = config.server
    # Resolve the port once for every worker: a bound, never-listening
    # SO_REUSEPORT socket holds it and receives no connections.
    family = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((srv.host, srv.port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s (is another process using the port? "
                  "change server.port)", srv.host, srv.port, exc.strerror)
        return EXIT_FAILURE
    port = holder.getsockname()[1]
    os.environ["RINGCAST_SERVER_PORT"] = str(port)
    config = load_config(args.config, os.environ)
    log.info("ringcast %s supervisor: %d workers on %s:%d", __version__, count, srv.host, port)

    def worker(index: int, token: str, ready: Callable[[], None]) -> int:
        holder.close()
        os.environ.pop("NOTIFY_SOCKET", None)   # the supervisor speaks to systemd
        setup_logging(config.logging.level, config.logging.format, worker=index)
        return run_worker(config, args.config, index=index, count=count, token=token,
                          ready=ready)

    code = supervise(count, worker, config.shutdown.drain_timeout,
                     on_ready=lambda: sdnotify.ready(f"{count} workers on {srv.host}:{port}"))
    log.info("stopped")
    return code


def run_worker(config: Config, path: str | None, *, index: int, count: int, token: str,
               ready: Callable[[], None]) -> int:
    """Serve in this process: the whole server, or one worker of several."""
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
        host, port = server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s (is another process using the port? "
                  "change server.port)", config.server.host, config.server.port, exc.strerror)
        server.close()
        return EXIT_FAILURE
    server.install_signal_handlers()
    log.info("ringcast %s listening on %s:%d, backend %s (%s)",
             __version__, host, port, backend.name, backend.reason)
    log.info("taking up to %d connections%s, bound by %s", capacity.connections,
             " in this worker" if count > 1 else "", capacity.bound)
    if count == 1:
        server.accept_clients()
        sdnotify.ready(f"listening on {host}:{port}, backend {backend.name}")
    try:
        server.run()
    except RingioError as exc:
        log.error("the event loop failed: %s; this worker stops (under `workers`, the "
                  "supervisor starts a new one)", exc)
        return EXIT_FAILURE
    log.info("stopped")
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
    parser = argparse.ArgumentParser(prog="ringcast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", "-c", help="TOML file (default: built-in defaults)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--backend", choices=["auto", "io_uring", "epoll"],
                       help="override server.backend")
    serve.set_defaults(fn=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("config", nargs="?", help="TOML file (default: built-in defaults)")
    check.set_defaults(fn=cmd_check_config)

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
