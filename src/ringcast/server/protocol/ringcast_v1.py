"""The ``ringcast.v1`` client protocol: several channels on one connection, positions,
resume (the wire format is docs/history.md's; this module is its one implementation).

A client opts in by offering the subprotocol ``ringcast.v1``. Every frame both ways is a
text frame holding one JSON object with a ``"type"``, except the server's messages,
which have none (a small envelope: bytes are most of what a delivery costs).
:class:`Commands` reads the client's (``subscribe``, ``unsubscribe``, ``publish``),
checks them against the connection's token and the server's switches, and emits the
actions the runtime carries out (:class:`~.actions.Join`, :class:`~.actions.Leave`,
:class:`~.actions.PublishCommand`) or answers an ``error`` itself. The frames the server
sends are built here too: each is encoded once — a message frame once per message and
channel, whatever the number of subscribers.

Sans-I/O: bytes and the time in, actions out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from ringcast.errors import ChannelNameError

from .actions import Action, Join, Leave, PublishCommand, SendBytes
from .auth import Access, AuthError, Grant
from .channels import validate_channel
from .credentials import SUBPROTOCOL_V1
from .frames import data_frame
from .settings import ProtocolSettings

__all__ = [
    "SUBPROTOCOL_V1",
    "V1_ACCESS",
    "Commands",
    "error_frame",
    "message_frame",
    "published_frame",
    "subscribed_frame",
    "unsubscribed_frame",
]

_Position = tuple[str, int]  # (epoch, offset), as .history's Position is

V1_ACCESS: Final = Access(may_publish=True)
"""What a ``ringcast.v1`` connection may do as a WebSocket: its messages are commands,
and what it may publish where is decided per command (:class:`Commands`)."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_MAX_REF = 128  # an echoed id longer than this (as JSON) is refused: it is echoed per reply


def _text(obj: dict[str, Any]) -> bytes:
    return data_frame(_dumps(obj).encode(), True)


def _with_ref(ref: bytes | None, head: bytes) -> bytes:
    """``{"type":...,"id":<ref>,`` — the id as the client sent it (already JSON)."""
    return head + b'"id":' + ref + b"," if ref is not None else head


def _position_fields(position: _Position) -> bytes:
    """``,"epoch":"...","offset":N`` (an epoch is URL-safe base64: no escaping)."""
    return b',"epoch":"' + position[0].encode() + b'","offset":%d' % position[1]


def _message_position(position: _Position) -> bytes:
    """A message's position fields: ``,"offset":N``, with ``,"epoch":"..."`` before it
    only at offset 1. An epoch only ever begins at offset 1, a message every live
    subscriber gets, and the ``subscribed`` reply names the epoch a subscription starts
    in, so a client always knows the epoch of a message that does not say it: it is the
    one its subscription is in (docs/history.md, "Server to client")."""
    if position[1] == 1:
        return _position_fields(position)
    return b',"offset":%d' % position[1]


def message_frame(channel: str, payload: bytes, text: bool,
                  position: _Position | None) -> bytes:
    """A published message as its frame, encoded once per message and channel:
    ``{"channel":C[,"epoch":E][,"offset":N],"data":S}`` (``"base64"`` instead of
    ``"data"`` for a binary payload). It has no ``"type"``, unlike every other frame the
    server sends: that is how a client tells a message. ``offset`` is there when the
    channel keeps history (``position`` given); ``epoch`` only when ``offset`` is 1 (the
    first message of an epoch), see :func:`_message_position`."""
    head = b'{"channel":"' + channel.encode() + b'"'
    if position is not None:
        head += _message_position(position)
    if text:
        body = _dumps(payload.decode())  # valid UTF-8: the publish path checked it
        return data_frame(head + b',"data":' + body.encode() + b"}", True)
    return data_frame(head + b',"base64":"' + base64.b64encode(payload) + b'"}', True)


def subscribed_frame(ref: bytes | None, channel: str, position: _Position | None,
                     recovered: bool | None) -> bytes:
    """The reply to ``subscribe``; ``recovered`` None when no ``since`` was given."""
    out = _with_ref(ref, b'{"type":"subscribed",') + b'"channel":"' + channel.encode() + b'"'
    if position is not None:
        out += _position_fields(position)
    if recovered is not None:
        out += b',"recovered":' + (b"true" if recovered else b"false")
    return data_frame(out + b"}", True)


def unsubscribed_frame(ref: bytes | None, channel: str) -> bytes:
    out = _with_ref(ref, b'{"type":"unsubscribed",') + b'"channel":"' + channel.encode()
    return data_frame(out + b'"}', True)


def published_frame(ref: bytes | None, channel: str, position: _Position | None) -> bytes:
    out = _with_ref(ref, b'{"type":"published",') + b'"channel":"' + channel.encode() + b'"'
    if position is not None:
        out += _position_fields(position)
    return data_frame(out + b"}", True)


def error_frame(ref: bytes | None, channel: str | None, code: str, reason: str) -> bytes:
    """An ``error`` reply. Channel names never need escaping (see .channels); an
    unchecked one from the client goes through the JSON encoder."""
    obj: dict[str, Any] = {"type": "error"}
    if ref is not None:
        obj["id"] = json.loads(ref)
    if channel is not None:
        obj["channel"] = channel
    obj["code"] = code
    obj["reason"] = reason
    return _text(obj)


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Commands:
    """The ``ringcast.v1`` side of one WebSocket: reads its commands, knows its channels.

    ``grant``: what the connection's token allows (None: no token); ``unix_offset``: Unix
    time minus the session's clock (tokens expire in Unix time)."""

    __slots__ = ("_grant", "_settings", "_unix_offset", "channels")

    def __init__(self, settings: ProtocolSettings, grant: Grant | None,
                 unix_offset: float | None) -> None:
        self._settings = settings
        self._grant = grant
        self._unix_offset = unix_offset
        self.channels: set[str] = set()
        """The channels this connection is subscribed to (the runtime unsubscribes them
        at the end)."""

    def join(self, channel: str, out: list[Action]) -> None:
        """The channel of the handshake's path (checked there): subscribed at once."""
        self.channels.add(channel)
        out.append(Join(channel, None, None))

    def receive(self, payload: bytes, text: bool, now: float, out: list[Action]) -> None:
        """One complete message from the client."""
        ref: bytes | None = None
        channel: str | None = None
        try:
            if not text:
                raise _Refused("bad_request", "ringcast.v1 frames are JSON text frames")
            try:
                command = json.loads(payload)
            except ValueError as exc:
                raise _Refused("bad_request", f"not JSON: {exc}") from None
            if not isinstance(command, dict):
                raise _Refused("bad_request", "a command is a JSON object")
            if "id" in command:
                ref = _ref(command["id"])
            raw_channel = command.get("channel")
            if isinstance(raw_channel, str):
                channel = raw_channel
            kind = command.get("type")
            if kind == "subscribe":
                self._subscribe(command, ref, out)
            elif kind == "unsubscribe":
                self._unsubscribe(command, ref, out)
            elif kind == "publish":
                self._publish(command, ref, now, out)
            else:
                raise _Refused("bad_request", f"unknown command type {kind!r}"[:200])
        except _Refused as refused:
            out.append(SendBytes(error_frame(ref, channel, refused.code, refused.reason)))

    def _channel(self, command: dict[str, Any]) -> str:
        name = command.get("channel")
        if not isinstance(name, str):
            raise _Refused("bad_request", 'a "channel" string is required')
        try:
            return validate_channel(name, self._settings.max_channel_name)
        except ChannelNameError as exc:
            raise _Refused("bad_channel", str(exc)) from None

    def _subscribe(self, command: dict[str, Any], ref: bytes | None,
                   out: list[Action]) -> None:
        channel = self._channel(command)
        since = _since(command.get("since"))
        if channel in self.channels:
            raise _Refused("bad_request", f"already subscribed to {channel}")
        if len(self.channels) >= self._settings.max_subscriptions:
            raise _Refused("too_many_subscriptions",
                           f"at most {self._settings.max_subscriptions} channels per "
                           "connection (limits.max_subscriptions)")
        try:
            self._settings.authenticator.subscriber_access(self._grant, channel)
        except AuthError as exc:
            raise _Refused("forbidden", str(exc)) from None
        self.channels.add(channel)
        out.append(Join(channel, since, ref))

    def _unsubscribe(self, command: dict[str, Any], ref: bytes | None,
                     out: list[Action]) -> None:
        channel = self._channel(command)
        if channel not in self.channels:
            raise _Refused("not_subscribed", f"not subscribed to {channel}")
        self.channels.discard(channel)
        out.append(Leave(channel))
        out.append(SendBytes(unsubscribed_frame(ref, channel)))

    def _publish(self, command: dict[str, Any], ref: bytes | None, now: float,
                 out: list[Action]) -> None:
        channel = self._channel(command)
        data, b64 = command.get("data"), command.get("base64")
        if isinstance(data, str) and b64 is None:
            payload, text = data.encode(), True
        elif isinstance(b64, str) and data is None:
            try:
                payload, text = base64.b64decode(b64, validate=True), False
            except binascii.Error:
                raise _Refused("bad_request", '"base64" is not valid base64') from None
        else:
            raise _Refused("bad_request", 'a publish has a "data" string or a "base64" one')
        settings = self._settings
        if not settings.client_publish:
            raise _Refused("publish_disabled", "publishing is disabled on this server")
        auth = settings.authenticator
        grant = self._grant
        if auth.require_publish and (grant is None or not grant.may_publish(channel)):
            raise _Refused("forbidden", f"not allowed to publish on {channel}")
        if grant is not None and grant.expires is not None and (
                self._unix_offset is None or now + self._unix_offset >= grant.expires):
            raise _Refused("forbidden", "token expired")
        out.append(PublishCommand(channel, payload, text, ref))


def _ref(value: object) -> bytes:
    """A command's ``id`` as JSON to echo: a number or a short string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Refused("bad_request", '"id" is a number or a string')
    ref = _dumps(value).encode()
    if len(ref) > _MAX_REF:
        raise _Refused("bad_request", f'"id" is longer than {_MAX_REF} bytes as JSON')
    return ref


def _since(value: object) -> _Position | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused("bad_request", '"since" is {"epoch": ..., "offset": ...}')
    epoch, offset = value.get("epoch"), value.get("offset")
    if not isinstance(epoch, str) or isinstance(offset, bool) or not isinstance(offset, int) \
            or offset < 0:
        raise _Refused("bad_request",
                       '"since" needs "epoch" (a string) and "offset" (an integer >= 0)')
    return (epoch, offset)
