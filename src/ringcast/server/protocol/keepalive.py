"""What a runtime's loop needs to keep WebSockets alive without the session's help.

RFC 6455 section 5.5.2: a ping may be sent at any time, and the peer answers with a pong.
A fan-out server pings idle subscribers so that proxies and NATs keep their connections
and dead peers are found; with many subscribers that is many pings a second, and waking
a session for each ping and each pong costs more than the connection itself. So the
runtime hands the work to its loop (ringio's heartbeats, csrc/ringio_api.h): the loop
sends :data:`PING` to each connection quiet for ``ping_interval`` and reports one that
stays silent for ``ping_timeout`` after it (the runtime then closes it with 1011, as
:class:`~.session.Session` would), and :func:`pong_absorber` recognises in C the pong
that answers an outstanding ping, so it never reaches a session. Everything else a client
sends still goes to its session, which checks every rule (and charges an unsolicited pong
to the control-frame budget).

A connection quiet in either direction for the interval is pinged (silence from the client
may be a dead peer; silence towards it lets a proxy's read timeout expire), and any byte
from the client counts as alive.
"""

from __future__ import annotations

from typing import Final

from ._headscan import ffi, lib
from .frames import ping_frame

__all__ = ["PING", "pong_absorber"]

PING: Final = ping_frame(b"")
"""The keepalive ping, framed once (an empty payload: any pong answers it)."""


def pong_absorber() -> int:
    """The address of ``hs_absorb_pongs`` (csrc/headscan.c), for the loop to call."""
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, "hs_absorb_pongs")))
