"""``ringcast health``: ask a running server's ``GET /healthz``, for health checks and scripts.

A container's health check runs beside the server, not inside it: it must find the port the
server listens on. The server's own command line and environment say it (``--config``,
``--port``, ``RINGCAST_SERVER_PORT``...), and Linux shows both in ``/proc/<pid>`` to a process
of the same user: :func:`serve_invocation` reads them, so the check asks the right port
whether or not a config file was mounted, passed, or overridden.
"""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from pathlib import Path

from ringcast.config import ENV_PREFIX
from ringcast.errors import RingcastError

__all__ = ["Answer", "HealthError", "Invocation", "ask", "serve_invocation"]

# The wildcard addresses a server listens on, and the loopback address that reaches it there.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class HealthError(RingcastError):
    """The server to ask cannot be found or reached."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Invocation:
    """How a ``ringcast serve`` process was started."""

    args: list[str]
    """The arguments after ``ringcast``: ``["serve", "--config", ...]``."""
    env: dict[str, str]
    """Its ``RINGCAST_*`` environment."""
    cwd: str
    """Its working directory, against which a relative ``--config`` path was read."""


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as exc:
        raise HealthError(f"cannot read the command line of process {pid}: "
                          f"{exc.strerror}") from None
    return [arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")] if raw else []


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _ringcast_args(argv: list[str]) -> list[str] | None:
    """What follows ``ringcast`` in a command line (``.../bin/ringcast serve ...`` or
    ``python -m ringcast serve ...``), if it runs ``ringcast serve``."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "ringcast":
            rest = argv[i + 1:]
            return rest if rest[:1] == ["serve"] else None
    return None


def serve_invocation(pid: int) -> Invocation:
    """How the ``ringcast serve`` process ``pid`` was started, or its child when ``pid`` is an
    init that runs the server (``docker run --init``). Raises :class:`HealthError` saying why
    not."""
    argv = _argv(pid)
    args = _ringcast_args(argv)
    if args is None:
        for child in _children(pid):
            try:
                args = _ringcast_args(_argv(child))
            except HealthError:
                continue    # it exited meanwhile
            if args is not None:
                pid = child
                break
    if args is None:
        shown = " ".join(argv) or "(no command line: a kernel thread or a zombie)"
        raise HealthError(f"process {pid} runs `{shown}`, not `ringcast serve`, and neither does "
                          "any of its children: give the server's process id with --pid, or "
                          "--config/--port as the server has them")
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError as exc:
        raise HealthError(f"cannot read the environment of process {pid}: {exc.strerror} "
                          "(run the check as the server's user)") from None
    env = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.decode(errors="replace").partition("=")
        if sep and name.startswith(ENV_PREFIX):
            env[name] = value
    return Invocation(args, env, cwd)


def ask(host: str, port: int, timeout: float) -> Answer:
    """``GET /healthz`` from the server listening on ``host:port`` (a wildcard address is asked
    on loopback). Raises :class:`HealthError` when nothing answers."""
    if port == 0:
        raise HealthError("server.port is 0: the server picked a free port when it started "
                          "(its start-up line names it); pass that one with --port")
    target = _LOOPBACK.get(host, host)
    conn = http.client.HTTPConnection(target, port, timeout=timeout)
    where = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"
    try:
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        return Answer(response.status, response.read().decode(errors="replace"))
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise HealthError(f"no answer from {where}: {why} (is the server running, and "
                          "listening there?)") from None
    finally:
        conn.close()
