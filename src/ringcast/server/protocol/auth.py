"""Who may subscribe to and publish on which channel: static tokens and JWTs, sans-I/O.

A request carries at most one bearer token (see :mod:`.credentials` for where). The
:class:`Authenticator` turns it into a :class:`Grant`, the channels its holder may
subscribe to and publish on, and decides each request:

- Static tokens (``auth.publish_tokens`` and ``http.publish_token``; ``auth.subscribe_tokens``)
  are compared as SHA-256 digests with :func:`hmac.compare_digest`, each against all. A
  publish token may publish on and subscribe to every channel; a subscribe token may
  subscribe to every channel.
- A JWT is verified with PyJWT, its algorithm pinned: the token's ``alg`` header must be
  one of ``jwt_algorithms`` (which can never hold ``none``), and only that algorithm's own
  key verifies it (the HMAC secret for ``HS*``, the public key for the others), so an
  ``HS256`` token signed with the public key as the secret cannot pass. ``exp`` is
  required; ``nbf`` is honoured; ``aud`` and ``iss`` are checked when configured. The
  claims ``subscribe`` and ``publish`` (a list of strings, or one string) name channels
  or glob patterns (:class:`ChannelPatterns`). Time comes from the caller (``unix_now``):
  PyJWT's own clock-based checks are switched off.
- A channel one may publish on, one may also subscribe to: a WebSocket publishes on the
  channel it is subscribed to.

The ``require_*`` switches say what clients without a token may do; a token only ever
adds rights. When no token source is configured at all, tokens are not even looked at.

PyJWT is imported only when a JWT key is configured: importing it pulls in its JWKS
client (``urllib.request``, which imports ``socket``), never used here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .refusals import Refusal

if TYPE_CHECKING:
    from jwt import PyJWS, PyJWT

__all__ = [
    "JWT_ALGORITHMS",
    "Access",
    "AuthError",
    "Authenticator",
    "ChannelPatterns",
    "Grant",
]

JWT_ALGORITHMS: Final = frozenset(
    {
        *("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
        *("ES256", "ES384", "ES512", "EdDSA"),
    }
)
"""The algorithms :class:`Authenticator` accepts in ``jwt_algorithms``."""

_TOKEN: Final = re.compile(r"[!-~]+")
_REALM: Final = b'Bearer realm="ringcast"'
_CHALLENGES: Final = {  # RFC 6750 section 3
    Refusal.MISSING_TOKEN: _REALM,
    Refusal.BAD_CREDENTIALS: _REALM + b', error="invalid_request"',
    Refusal.INVALID_TOKEN: _REALM + b', error="invalid_token"',
    Refusal.EXPIRED_TOKEN: _REALM + b', error="invalid_token"',
    Refusal.CHANNEL_FORBIDDEN: _REALM + b', error="insufficient_scope"',
    Refusal.PUBLISH_FORBIDDEN: _REALM + b', error="insufficient_scope"',
}


class AuthError(Exception):
    """A request's credentials are refused: answer ``status`` with ``str(error)``."""

    def __init__(self, refusal: Refusal, status: int, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.status = status

    @property
    def challenge(self) -> bytes:
        """The ``WWW-Authenticate`` value of the answer (RFC 6750 section 3)."""
        return _CHALLENGES.get(self.refusal, _REALM)


class ChannelPatterns:
    """A set of channels, given as names and glob patterns (``fnmatch``, case-sensitive).

    ``*`` matches any run of characters, including none and including ``.`` and ``:``;
    ``?`` one character; ``[abc]``, ``[a-z]`` and ``[!abc]`` one character of (not of) a
    set. So ``chat.*`` matches ``chat.1`` and ``chat.a.b`` but not ``chat``; ``*`` matches
    every channel. A channel name never holds ``*``, ``?``, ``[`` or ``]``, so a name
    without them is matched exactly.
    """

    __slots__ = ("_everything", "_names", "_regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        names: set[str] = set()
        globs: list[str] = []
        everything = False
        for pattern in patterns:
            if pattern == "*":
                everything = True
            elif any(c in pattern for c in "*?["):
                globs.append(fnmatch.translate(pattern))
            else:
                names.add(pattern)
        self._everything = everything
        self._names = frozenset(names)
        self._regex = re.compile("|".join(globs)) if globs else None

    def __contains__(self, channel: object) -> bool:
        if self._everything or channel in self._names:
            return True
        return (
            isinstance(channel, str)
            and self._regex is not None
            and self._regex.match(channel) is not None
        )

    def __bool__(self) -> bool:
        """Whether any channel matches."""
        return self._everything or bool(self._names) or self._regex is not None

    def __repr__(self) -> str:
        if self._everything:
            return "ChannelPatterns(['*'])"
        globs = [] if self._regex is None else [self._regex.pattern]
        return f"ChannelPatterns({sorted(self._names) + globs!r})"


EVERY_CHANNEL: Final = ChannelPatterns(["*"])
NO_CHANNEL: Final = ChannelPatterns([])


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    subscribe: ChannelPatterns
    publish: ChannelPatterns
    expires: float | None
    """Unix time of the token's ``exp`` plus the leeway; ``None`` for a static token."""
    subject: str
    """The JWT's ``sub`` (``""`` when absent), or ``"static publish token"`` /
    ``"static subscribe token"``."""

    def may_subscribe(self, channel: str) -> bool:
        return channel in self.subscribe or channel in self.publish

    def may_publish(self, channel: str) -> bool:
        return channel in self.publish


_PUBLISHER: Final = Grant(EVERY_CHANNEL, EVERY_CHANNEL, None, "static publish token")
_SUBSCRIBER: Final = Grant(EVERY_CHANNEL, NO_CHANNEL, None, "static subscribe token")


@dataclass(frozen=True, slots=True)
class Access:
    """What an accepted WebSocket may do besides receiving its channel."""

    may_publish: bool
    """Whether its messages are published (if clients may publish at all)."""
    publish_expires: float | None = None
    """Unix time from which publishing stops being allowed (the token expired), or
    ``None``: publishing never expires (no token needed, or a static one)."""


_MAY_PUBLISH: Final = Access(may_publish=True)
_MAY_NOT_PUBLISH: Final = Access(may_publish=False)


class Authenticator:
    """The token configuration of a worker, and the decisions that follow from it.

    Built once per :class:`~.settings.ProtocolSettings`; raises :exc:`ValueError` for a
    configuration that cannot work (a malformed token, an algorithm without its key, a
    key without an algorithm, a weak or unreadable key).
    """

    __slots__ = (
        "_audience",
        "_decoder",
        "_headers",
        "_issuer",
        "_jwt_errors",
        "_keys",
        "_leeway",
        "_publish",
        "_subscribe",
        "enabled",
        "publish_configured",
        "require_publish",
        "require_subscribe",
    )

    def __init__(
        self,
        *,
        publish_tokens: Iterable[str] = (),
        subscribe_tokens: Iterable[str] = (),
        require_subscribe: bool = False,
        require_publish: bool = False,
        jwt_secret: str = "",
        jwt_public_key: str = "",
        jwt_algorithms: Iterable[str] = ("HS256",),
        jwt_audience: str = "",
        jwt_issuer: str = "",
        jwt_leeway: float = 0.0,
    ) -> None:
        self._publish = tuple(_digest(t, "publish token") for t in publish_tokens)
        self._subscribe = tuple(_digest(t, "subscribe token") for t in subscribe_tokens)
        self._audience = jwt_audience or None
        self._issuer = jwt_issuer or None
        self._leeway = jwt_leeway
        self._keys: dict[str, Any] = {}
        self._decoder: PyJWT | None = None
        self._headers: PyJWS | None = None
        self._jwt_errors: tuple[type[Exception], ...] = ()  # what a bad token may raise
        if jwt_secret or jwt_public_key:
            self._load_jwt_keys(jwt_secret, jwt_public_key, tuple(jwt_algorithms))
        self.require_subscribe = require_subscribe
        self.require_publish = require_publish
        self.enabled = bool(self._publish or self._subscribe or self._keys)
        """Whether any token source is configured (tokens are ignored otherwise)."""
        self.publish_configured = bool(self._publish or self._keys)
        """Whether a token can allow publishing: POST /publish then needs one (so it does
        whenever ``require_publish`` is set, which is refused without a publish source)."""
        if require_subscribe and not self.enabled:
            msg = "require_subscribe_auth is set, but no token or JWT key could allow it"
            raise ValueError(msg)
        if require_publish and not self.publish_configured:
            msg = "require_publish_auth is set, but no publish token or JWT key could allow it"
            raise ValueError(msg)

    # -- decisions -----------------------------------------------------------------------

    def authenticate(
        self, token: str | None, unix_now: float | None, *, required: bool, action: str
    ) -> Grant | None:
        """The grant of a request's token, ``None`` for none (or when tokens are off).

        Raises :exc:`AuthError`: 401 ``missing_token`` when ``required`` and there is no
        token (``action`` names what needs one, for the message), 401 ``invalid_token`` or
        ``expired_token`` for a token given but not valid, whether required or not.
        """
        if not self.enabled:
            return None
        if token is None:
            if required:
                raise AuthError(Refusal.MISSING_TOKEN, 401, f"{action} needs a token")
            return None
        return self.verify(token, unix_now)

    def subscriber_access(self, grant: Grant | None, channel: str) -> Access:
        """Decide a WebSocket handshake on ``channel`` (after :meth:`authenticate` with
        ``required=self.require_subscribe``); raise :exc:`AuthError` 403 to refuse."""
        if self.require_subscribe and (grant is None or not grant.may_subscribe(channel)):
            msg = f"the token may not subscribe to {channel}"
            raise AuthError(Refusal.CHANNEL_FORBIDDEN, 403, msg)
        if not self.require_publish:
            return _MAY_PUBLISH
        if grant is None or not grant.may_publish(channel):
            return _MAY_NOT_PUBLISH
        if grant.expires is None:
            return _MAY_PUBLISH
        return Access(may_publish=True, publish_expires=grant.expires)

    def check_http_publish(self, grant: Grant | None, channel: str) -> None:
        """Decide a ``POST /publish/<channel>`` (after :meth:`authenticate` with
        ``required=self.publish_configured``); raise :exc:`AuthError` 403 to refuse."""
        if self.publish_configured and (grant is None or not grant.may_publish(channel)):
            msg = f"not allowed to publish on {channel}"
            raise AuthError(Refusal.PUBLISH_FORBIDDEN, 403, msg)

    def check_status_viewer(self, grant: Grant | None) -> None:
        """Decide a request for the status page (after :meth:`authenticate` with
        ``required=self.publish_configured``): when publishing needs a token, the page
        needs one that may publish somewhere; raise :exc:`AuthError` 403 to refuse."""
        if self.publish_configured and (grant is None or not grant.publish):
            raise AuthError(Refusal.PUBLISH_FORBIDDEN, 403,
                            "the status page needs a token that may publish")

    # -- verification --------------------------------------------------------------------

    def verify(self, token: str, unix_now: float | None) -> Grant:
        """The grant of ``token``, or :exc:`AuthError` (401) when it is not valid now."""
        digest = hashlib.sha256(token.encode()).digest()
        publisher = subscriber = False
        for known in self._publish:  # every comparison runs: no early exit
            publisher |= hmac.compare_digest(digest, known)
        for known in self._subscribe:
            subscriber |= hmac.compare_digest(digest, known)
        if publisher:
            return _PUBLISHER
        if subscriber:
            return _SUBSCRIBER
        if self._decoder is None or self._headers is None:
            raise AuthError(Refusal.INVALID_TOKEN, 401, "invalid token")
        return self._verify_jwt(self._headers, self._decoder, token, unix_now)

    def _verify_jwt(
        self, headers: PyJWS, decoder: PyJWT, token: str, unix_now: float | None
    ) -> Grant:
        try:
            header = headers.get_unverified_header(token)
        except self._jwt_errors:
            raise _invalid("malformed token") from None
        algorithm = header.get("alg")
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise _invalid(f"token algorithm {str(algorithm)[:20]!r} is not accepted")
        assert isinstance(algorithm, str)
        options: Any = {
            "verify_signature": True,
            "verify_exp": False,  # checked below against unix_now, not PyJWT's clock
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
            "require": ["exp"],
            "enforce_minimum_key_length": True,
        }
        try:
            claims = decoder.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=options,
            )
        except self._jwt_errors as exc:
            raise _invalid(f"invalid token: {str(exc)[:80]}") from None
        if unix_now is None:  # a runtime that did not give Session its unix_offset
            raise _invalid("the server cannot check the token's expiry")
        exp = _number(claims, "exp")
        assert exp is not None  # required above
        if unix_now >= exp + self._leeway:
            raise AuthError(Refusal.EXPIRED_TOKEN, 401, "token expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and unix_now + self._leeway < nbf:
            raise _invalid("token not valid yet (nbf)")
        subject = claims.get("sub")
        return Grant(
            subscribe=_patterns(claims, "subscribe"),
            publish=_patterns(claims, "publish"),
            expires=exp + self._leeway,
            subject=subject if isinstance(subject, str) else "",
        )

    def _load_jwt_keys(self, secret: str, public_pem: str, algorithms: tuple[str, ...]) -> None:
        import jwt  # noqa: PLC0415 (only when a JWT key is configured: see the module doc)
        from jwt.algorithms import get_default_algorithms  # noqa: PLC0415

        unknown = [a for a in algorithms if a not in JWT_ALGORITHMS]
        if unknown:
            allowed = ", ".join(sorted(JWT_ALGORITHMS))
            msg = f"jwt_algorithms: {unknown[0]!r} is not one of {allowed}"
            raise ValueError(msg)
        if not algorithms:
            msg = "a JWT key is set, but jwt_algorithms is empty"
            raise ValueError(msg)
        hmac_algorithms = [a for a in algorithms if a.startswith("HS")]
        public_algorithms = [a for a in algorithms if not a.startswith("HS")]
        if secret and not hmac_algorithms:
            msg = "jwt_secret is set, but jwt_algorithms lists no HS256/HS384/HS512"
            raise ValueError(msg)
        if public_pem and not public_algorithms:
            msg = "a JWT public key is set, but jwt_algorithms lists no RS*, PS*, ES* or EdDSA"
            raise ValueError(msg)
        if hmac_algorithms and not secret:
            msg = f"jwt_algorithms lists {hmac_algorithms[0]}, but jwt_secret is empty"
            raise ValueError(msg)
        if public_algorithms and not public_pem:
            msg = f"jwt_algorithms lists {public_algorithms[0]}, but no JWT public key is set"
            raise ValueError(msg)
        if "PRIVATE KEY" in public_pem:
            msg = "the JWT public key file holds a private key: give the public key only"
            raise ValueError(msg)
        implementations = get_default_algorithms()
        for name in algorithms:
            implementation = implementations[name]
            material = secret if name.startswith("HS") else public_pem
            try:
                key = implementation.prepare_key(material)
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                msg = f"the key for {name} is not usable: {exc}"
                raise ValueError(msg) from None
            weak = implementation.check_key_length(key)
            if weak:
                msg = f"the key for {name} is too weak: {weak}"
                raise ValueError(msg)
            self._keys[name] = key
        self._decoder = jwt.PyJWT()
        self._headers = jwt.PyJWS()
        # RecursionError: JSON nested deeper than the parser goes (PyJWT >= 2.15 wraps it).
        self._jwt_errors = (jwt.PyJWTError, ValueError, TypeError, RecursionError)


def _digest(token: str, what: str) -> bytes:
    if not _TOKEN.fullmatch(token):
        msg = f"a {what} must be printable ASCII without spaces, and not empty"
        raise ValueError(msg)
    return hashlib.sha256(token.encode()).digest()


def _invalid(message: str) -> AuthError:
    return AuthError(Refusal.INVALID_TOKEN, 401, message)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f'the "{name}" claim must be a number')
    return float(value)


def _patterns(claims: Mapping[str, Any], name: str) -> ChannelPatterns:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _invalid(f'the "{name}" claim must be a list of channel names or patterns')
    return ChannelPatterns(value)
