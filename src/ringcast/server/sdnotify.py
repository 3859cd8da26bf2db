"""A tiny client for systemd's notification protocol (``sd_notify(3)``), no dependency.

A service started with ``Type=notify`` finds the path of a datagram socket in
``$NOTIFY_SOCKET`` and sends it newline-separated ``KEY=VALUE`` assignments:
``READY=1`` once it serves, ``STOPPING=1`` when it begins to shut down,
``RELOADING=1`` while it re-reads its configuration (followed by ``READY=1``),
``STATUS=...`` as a one-line status shown by ``systemctl status``.

A path starting with ``@`` names a socket in the abstract namespace (the ``@``
stands for the leading NUL byte). Outside systemd (no ``NOTIFY_SOCKET``) every
call is a no-op that returns ``False``; so is a failed send: notification is
best effort and never raises.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "status", "stopping"]

ENV_VAR = "NOTIFY_SOCKET"


def _address(value: str) -> bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names, or None if it is not a Unix socket."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None  # e.g. systemd 254's "vsock:" addresses, which a service on a host never gets


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``; True if it was sent."""
    value = os.environ.get(ENV_VAR, "")
    address = _address(value) if value else None
    if address is None or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).replace("\r", " ")


def ready(status_text: str | None = None) -> bool:
    """``READY=1``: start-up finished (or a reload did), the service serves."""
    return notify("READY=1" if status_text is None else f"READY=1\nSTATUS={_one_line(status_text)}")


def stopping(status_text: str | None = None) -> bool:
    """``STOPPING=1``: the service begins to shut down (drain)."""
    if status_text is None:
        return notify("STOPPING=1")
    return notify(f"STOPPING=1\nSTATUS={_one_line(status_text)}")


def reloading() -> bool:
    """``RELOADING=1``: re-reading the configuration; send `ready()` when done.

    ``MONOTONIC_USEC`` (the CLOCK_MONOTONIC time of the request) is what systemd 253+
    expects from ``Type=notify-reload`` services; older versions ignore it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def status(text: str) -> bool:
    """``STATUS=text``: a one-line status for ``systemctl status`` (newlines become spaces)."""
    return notify(f"STATUS={_one_line(text)}")
