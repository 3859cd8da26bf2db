"""Messages between the processes of one run (`team`): ``(op, value)`` pairs, pickled
and length-prefixed on a stream socket (a socketpair made before the fork, so both
ends are this program; nothing from outside is unpickled).

One side sends blocking (the lead: what it sends must be there before the server can
deliver what it describes); the other queues what the socket does not take at once and
never blocks (the followers: so the two can never wait on each other).
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

__all__ = ["Wire", "WireClosed"]

_LEN = struct.Struct("!I")
_BUF = 4 << 20


class WireClosed(Exception):
    """The other process closed its end (it ended, or died)."""


class Wire:
    def __init__(self, sock: socket.socket, *, blocking_send: bool) -> None:
        self.sock = sock
        self.blocking_send = blocking_send
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUF)   # capped by net.core.*mem_max
        sock.setblocking(False)
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, op: str, value: Any = None) -> None:
        body = pickle.dumps((op, value), protocol=pickle.HIGHEST_PROTOCOL)
        self._out += _LEN.pack(len(body))
        self._out += body
        self.flush()

    def flush(self) -> None:
        """Write what is queued: all of it (blocking side) or what the socket takes."""
        try:
            while self._out:
                try:
                    n = self.sock.send(self._out)
                except BlockingIOError:
                    if not self.blocking_send:
                        return
                    self.sock.setblocking(True)
                    try:
                        self.sock.sendall(self._out)
                    finally:
                        self.sock.setblocking(False)
                    n = len(self._out)
                del self._out[:n]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WireClosed(str(exc)) from None

    def receive(self) -> list[tuple[str, Any]]:
        """Every whole message that has arrived (never blocks). `WireClosed` once the
        other end closed and every message it sent was returned."""
        while not self._eof:
            try:
                chunk = self.sock.recv(_BUF)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self._eof = True
            self._in += chunk
        out = []
        pos = 0
        while len(self._in) - pos >= _LEN.size:
            (n,) = _LEN.unpack_from(self._in, pos)
            if len(self._in) - pos - _LEN.size < n:
                break
            start = pos + _LEN.size
            out.append(pickle.loads(self._in[start:start + n]))
            pos = start + n
        del self._in[:pos]
        if self._eof and not out:
            raise WireClosed("closed in the middle of a message" if self._in else "closed")
        return out

    def close(self) -> None:
        self.sock.close()
