"""Who owns each connection id of the loop: the table the runtime dispatches through.

Every id the loop hands out — a listener, a client connection, a link to another worker,
a connection to the broker, the signal wake-up socket — belongs to exactly one
:class:`Owner`, recorded here when the id is made (``listen``, ``adopt``, an ACCEPT) and
forgotten when ringio reports it free (CLOSED) or the owner closes a listener. The
runtime's dispatch is then a lookup: ``table.owner(event.conn)`` (for an ACCEPT, the
listener's owner decides who owns the new id).

An owner implements the events it can receive; the defaults do nothing, so a wake-up
socket's owner is an empty subclass.
"""

from __future__ import annotations

import socket

from ringcast.ringio import ConnId, Loop

__all__ = ["ConnectionTable", "Owner"]


class Owner:
    """The handler of some of the loop's connection ids. ``now`` is the runtime's clock."""

    def accepted(self, conn: ConnId, fd: int, listener: ConnId, now: float) -> Owner:
        """A connection arrived on one of this owner's listeners (``fd`` is its socket,
        which the loop owns); return the owner of the new id, which may have closed it
        at once (a refusal) and is then told when it is `released`."""
        return self

    def data_received(self, conn: ConnId, data: bytes, now: float) -> None:
        """Bytes arrived on ``conn``."""

    def hung_up(self, conn: ConnId, err: int, now: float) -> None:
        """The peer closed (``err`` 0) or the connection failed (an errno)."""

    def overflowed(self, conn: ConnId, now: float) -> None:
        """A capped send to ``conn`` was refused: its queue is full."""

    def heartbeat_timeout(self, conn: ConnId, now: float) -> None:
        """Nothing arrived on ``conn`` within the timeout after a heartbeat (its heartbeats
        are off now)."""

    def accept_failed(self, listener: ConnId, err: int, now: float) -> None:
        """Accepting on ``listener`` failed with ``err``; it is paused until resumed."""

    def refused(self, listener: ConnId, now: float) -> None:
        """A connection arrived on ``listener`` while the id table was full; it was closed."""

    def released(self, conn: ConnId) -> None:
        """``conn``, which this owner closed, is free: its id may be handed out again."""


class ConnectionTable:
    """Connection id -> its :class:`Owner`, kept beside the loop that makes the ids."""

    __slots__ = ("_owners", "loop")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self._owners: dict[ConnId, Owner] = {}

    def owner(self, conn: ConnId) -> Owner | None:
        """Who owns ``conn``; None for an id nobody owns (its event is stale)."""
        return self._owners.get(conn)

    def own(self, conn: ConnId, owner: Owner) -> None:
        self._owners[conn] = owner

    def forget(self, conn: ConnId) -> None:
        self._owners.pop(conn, None)

    def listen(self, sock: socket.socket, owner: Owner) -> ConnId:
        """Hand a listening socket to the loop; ``owner`` decides about what arrives."""
        conn = self.loop.listen(sock)
        self._owners[conn] = owner
        return conn

    def adopt(self, sock: socket.socket, owner: Owner) -> ConnId:
        """Hand a connected socket to the loop, owned by ``owner``."""
        conn = self.loop.adopt(sock)
        self._owners[conn] = owner
        return conn

    def close_listener(self, conn: ConnId) -> None:
        """Stop a listener (listeners are not reported CLOSED: it is forgotten now)."""
        self.loop.close_connection(conn)
        self._owners.pop(conn, None)

    def count(self, owner: Owner) -> int:
        """How many ids ``owner`` holds (for tests and statistics, not the hot path)."""
        return sum(1 for o in self._owners.values() if o is owner)
