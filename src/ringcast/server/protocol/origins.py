"""The browser origin allow-list (``http.allowed_origins``).

A browser sends ``Origin: <scheme>://<host>[:<port>]`` with every WebSocket handshake
and every cross-site POST; other clients usually send none. An allow-list stops pages
from other sites from opening WebSockets (or posting) with a visitor's browser: the
classic cross-site WebSocket hijacking, which matters as soon as anything ambient (a
cookie, a network position inside a LAN) stands in for authentication.

Entries:

- ``https://app.example.com``: exactly this origin, default port (browsers leave the
  default port out of ``Origin``, so this matches what they send).
- ``https://app.example.com:8443``: this origin on that port.
- ``https://*.example.com``: any subdomain, at any depth (``a.example.com``,
  ``a.b.example.com``), but not ``example.com`` itself: list it too if it is wanted.
- ``http://localhost:*``: any port, or none.

Scheme and host compare case-insensitively. ``Origin: null`` (sandboxed frames, files)
never matches. An empty list allows every origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["ENTRY", "OriginPolicy"]

ENTRY: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<wild>\*\.)?"
    r"(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}|\*))?",
    re.IGNORECASE,
)
"""The syntax of an entry (the config validates the same)."""


class OriginPolicy:
    """Decides whether an ``Origin`` header value is allowed."""

    __slots__ = ("_exact", "_regex", "allows_any")

    def __init__(self, entries: Iterable[str]) -> None:
        """Raises :exc:`ValueError` for an entry that is not ``scheme://host[:port]``."""
        exact: set[str] = set()
        patterns: list[str] = []
        for entry in entries:
            match = ENTRY.fullmatch(entry)
            if match is None:
                msg = (
                    f"allowed origin {entry!r} is not scheme://host[:port] "
                    "(the host may start with '*.', the port may be '*')"
                )
                raise ValueError(msg)
            scheme, wild, host, port = match.group("scheme", "wild", "host", "port")
            if not wild and port != "*":
                exact.add(entry.lower())
                continue
            pattern = re.escape(f"{scheme}://".lower())
            if wild:
                pattern += r"(?:[a-z0-9-]+\.)+"
            pattern += re.escape(host.lower())
            if port == "*":
                pattern += r"(?::[0-9]{1,5})?"
            elif port is not None:
                pattern += re.escape(f":{port}")
            patterns.append(pattern)
        self._exact = frozenset(exact)
        self._regex = re.compile("|".join(patterns)) if patterns else None
        #: True for an empty list: every origin is allowed.
        self.allows_any: Final = not self._exact and self._regex is None

    def allows(self, origin: str) -> bool:
        """Whether the value of an ``Origin`` header is allowed."""
        if self.allows_any:
            return True
        value = origin.strip().lower()
        if value in self._exact:
            return True
        return self._regex is not None and self._regex.fullmatch(value) is not None
