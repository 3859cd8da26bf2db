"""Handshakes held until the broker confirms their channel.

With the broker bridge up, a subscriber's handshake completes only once the broker has
confirmed its channel's subscription: its 101 and whatever follows it wait here, and it
joins the channel's subscribers only then. So a message published on another node after
the client saw its 101 cannot miss it. When the bridge goes down there is nothing to wait
for: everything held is released.
"""

from __future__ import annotations

from ringcast.ringio import ConnId
from ringcast.server.protocol.actions import Subscribe

__all__ = ["Held", "HeldHandshakes"]

Held = tuple[ConnId, Subscribe, list[bytes]]
"""A released handshake: (connection, its subscription, the bytes held back for it, in
order)."""


class HeldHandshakes:
    """Connections whose handshake waits for the broker, with the bytes held back."""

    def __init__(self) -> None:
        self._held: dict[ConnId, tuple[Subscribe, list[bytes]]] = {}

    def __len__(self) -> int:
        """Handshakes held (falsy when none: the common case, checked first)."""
        return len(self._held)

    def hold(self, conn: ConnId, subscription: Subscribe) -> None:
        self._held[conn] = (subscription, [])

    def held_bytes(self, conn: ConnId) -> list[bytes] | None:
        """Where the bytes for ``conn`` go while it is held; None when it is not."""
        entry = self._held.get(conn)
        return None if entry is None else entry[1]

    def is_held(self, conn: ConnId) -> bool:
        return conn in self._held

    def waits_for(self, channel: str) -> bool:
        """Whether a held handshake needs ``channel`` (so its subscription must stay)."""
        return any(sub.channel == channel for sub, _ in self._held.values())

    def forget(self, conn: ConnId) -> None:
        """``conn`` went away while held: nothing to send."""
        self._held.pop(conn, None)

    def confirmed(self, channel: str) -> list[Held]:
        """The broker confirmed ``channel``: the handshakes waiting for it, released."""
        done = [conn for conn, (sub, _) in self._held.items() if sub.channel == channel]
        return [(conn, *self._held.pop(conn)) for conn in done]

    def release_all(self) -> list[Held]:
        """The bridge went down: every handshake, released."""
        released = [(conn, sub, data) for conn, (sub, data) in self._held.items()]
        self._held.clear()
        return released
