"""Where a request's bearer token comes from.

Three places, one token at most per request (RFC 6750 section 2: a client uses one
method; more than one is a 400 ``invalid_request``):

1. the header ``Authorization: Bearer <token>`` (RFC 6750 section 2.1); the scheme is
   case-insensitive; an ``Authorization`` header with another scheme (``Basic ...``) is
   not a bearer token and is ignored; two ``Authorization`` headers are refused;
2. the query parameter ``token`` of the request target, ``/<channel>?token=<token>`` or
   ``/publish/<channel>?token=<token>`` (RFC 6750 section 2.3), percent-decoded;
3. on a WebSocket handshake only, the subprotocol ``ringcast.bearer.<token>`` in
   ``Sec-WebSocket-Protocol``: the one header a browser's ``new WebSocket(url,
   protocols)`` can set. The client must offer the plain subprotocol ``ringcast`` (or
   ``ringcast.v1``) too; the server selects that (RFC 6455 section 4.2.2 lets it select
   only a subprotocol the client offered, and browsers fail a handshake whose response
   selects none when they offered some). The token is never echoed back.

A client that offers ``ringcast.v1`` gets it selected (and speaks the client protocol of
:mod:`.ringcast_v1`); else one that offers ``ringcast`` gets ``ringcast``; other
subprotocols are never selected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from .auth import AuthError
from .refusals import Refusal

__all__ = [
    "BEARER_PREFIX",
    "QUERY_PARAMETER",
    "SUBPROTOCOL",
    "SUBPROTOCOL_V1",
    "Credentials",
    "read_credentials",
]

SUBPROTOCOL: Final = "ringcast"
"""The subprotocol the server selects when a client offers it (and not the next)."""
SUBPROTOCOL_V1: Final = "ringcast.v1"
"""The subprotocol of the ``ringcast.v1`` client protocol (see :mod:`.ringcast_v1`),
selected first when offered."""
BEARER_PREFIX: Final = "ringcast.bearer."
"""A subprotocol starting with this carries a token after the prefix."""
QUERY_PARAMETER: Final = "token"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request says about its client."""

    token: str | None
    """The bearer token, or ``None`` when the request carries none."""
    subprotocol: str | None
    """The subprotocol for the 101 response (``"ringcast.v1"`` or ``"ringcast"`` when
    offered), else ``None``."""


def read_credentials(
    headers: Iterable[tuple[bytes, bytes]], target: bytes, *, websocket: bool, tokens: bool
) -> Credentials:
    """Find the token of a request (``headers`` as h11 gives them, names in lower case).

    ``websocket``: the request is a handshake, so subprotocols count. ``tokens``: tokens
    matter (some token source is configured); when false, only the subprotocol is chosen.
    Raises :exc:`~.auth.AuthError` (400, ``bad_credentials``) for a bearer subprotocol
    offered without ``ringcast`` and, when ``tokens``, for two tokens or two
    ``Authorization`` headers.
    """
    found: list[str] = []
    authorizations: list[bytes] = []
    offered: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            authorizations.append(value)
        elif websocket and name == b"sec-websocket-protocol":
            offered.extend(p.strip() for p in value.decode("latin-1").split(","))
    bearers = [p[len(BEARER_PREFIX) :] for p in offered if p.startswith(BEARER_PREFIX)]
    subprotocol = (SUBPROTOCOL_V1 if SUBPROTOCOL_V1 in offered
                   else SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if bearers and subprotocol is None:
        raise _bad(
            f"offer the subprotocol {SUBPROTOCOL!r} (or {SUBPROTOCOL_V1!r}) along with "
            f"{BEARER_PREFIX}<token>: the server selects it"
        )
    if not tokens:
        return Credentials(None, subprotocol)

    if len(authorizations) > 1:
        raise _bad("more than one Authorization header")
    if authorizations:
        scheme, _, rest = authorizations[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer":
            found.append(rest.strip())

    _, question, query = target.partition(b"?")
    if question:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        values = [value for key, value in pairs if key == QUERY_PARAMETER]
        if len(values) > 1:
            raise _bad(f"more than one {QUERY_PARAMETER} query parameter")
        found.extend(values)

    if len(bearers) > 1:
        raise _bad(f"more than one {BEARER_PREFIX}<token> subprotocol")
    found.extend(bearers)

    if len(found) > 1:
        raise _bad(
            "more than one token: give it in one place only (the Authorization header, "
            f"the {QUERY_PARAMETER} query parameter or the {BEARER_PREFIX}<token> subprotocol)"
        )
    return Credentials(found[0] if found else None, subprotocol)


def _bad(message: str) -> AuthError:
    return AuthError(Refusal.BAD_CREDENTIALS, 400, message)
