"""Test helpers: real client-side wsproto and h11 connections wired to a Session.

Tests check wire bytes, never internals: a client library produces what the session
reads and parses what it writes. What a client library refuses to send (invalid frames,
odd handshakes) is built with tests.support.rawws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import h11
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import Event, Request
from wsproto.extensions import Extension

from ringcast.server.protocol import (
    Action,
    CloseConnection,
    ProtocolSettings,
    Refused,
    SendBytes,
    Session,
    SessionState,
)
from tests.support.rawws import handshake_request

SETTINGS = ProtocolSettings(
    max_message_size=1024,
    max_http_body=4096,
    handshake_timeout=10.0,
    ping_interval=20.0,
    ping_timeout=10.0,
    close_timeout=5.0,
    client_publish=True,
    http_enabled=True,
    publish_token="",
    metrics_enabled=True,
    max_channel_name=128,
    echo=False,
)


def settings(**changes: object) -> ProtocolSettings:
    """SETTINGS with some fields changed."""
    return dataclasses.replace(SETTINGS, **changes)  # type: ignore[arg-type]


def sent(actions: Iterable[Action]) -> bytes:
    """Everything the actions write to the connection."""
    return b"".join(action.data for action in actions if isinstance(action, SendBytes))


def closes(actions: Sequence[Action]) -> bool:
    """Whether the actions end with closing the connection."""
    return bool(actions) and isinstance(actions[-1], CloseConnection)


def without_bytes(actions: Iterable[Action]) -> list[Action]:
    """The actions other than SendBytes, to compare them in one assert."""
    return [action for action in actions if not isinstance(action, SendBytes)]


def refusals(actions: Iterable[Action]) -> list[Refused]:
    """The Refused actions among ``actions``."""
    return [action for action in actions if isinstance(action, Refused)]


# -- WebSocket -------------------------------------------------------------------------


class WsClient:
    """A wsproto client talking to a fresh Session through memory.

    Every action the session returns is recorded; the bytes it sends are fed to the
    client, whose events pile up in ``events``.
    """

    def __init__(
        self,
        protocol_settings: ProtocolSettings = SETTINGS,
        *,
        now: float = 0.0,
        unix_offset: float | None = 0.0,
    ) -> None:
        self.session = Session(protocol_settings, now, unix_offset=unix_offset)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def connect(
        self,
        target: str = "/news",
        *,
        now: float = 0.0,
        extensions: Sequence[Extension] = (),
        subprotocols: Sequence[str] = (),
        extra_headers: Sequence[tuple[str, str]] = (),
        after: bytes = b"",
    ) -> list[Action]:
        """Send the opening handshake (plus ``after``, frames sent without waiting)."""
        request = Request(
            host="example.com",
            target=target,
            extensions=list(extensions),
            subprotocols=list(subprotocols),
            extra_headers=[(k.encode(), v.encode()) for k, v in extra_headers],
        )
        return self.feed(self.ws.send(request) + after, now=now)

    def send(self, event: Event, *, now: float = 0.0) -> list[Action]:
        return self.feed(self.ws.send(event), now=now)

    def feed(self, data: bytes, *, now: float = 0.0) -> list[Action]:
        return self._deliver(self.session.receive_data(data, now))

    def tick(self, now: float) -> list[Action]:
        return self._deliver(self.session.tick(now))

    def close(self, code: int, reason: str, now: float = 0.0) -> list[Action]:
        return self._deliver(self.session.close(code, reason, now))

    def _deliver(self, actions: list[Action]) -> list[Action]:
        self.actions.extend(actions)
        for action in actions:
            if isinstance(action, SendBytes):
                self.ws.receive_data(action.data)
                self.events.extend(self.ws.events())
        return actions

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def open_client(protocol_settings: ProtocolSettings = SETTINGS, target: str = "/news") -> WsClient:
    """A client whose handshake succeeded; its recorded actions and events are cleared."""
    client = WsClient(protocol_settings)
    client.connect(target)
    assert client.session.state is SessionState.OPEN
    client.actions.clear()
    client.events.clear()
    return client


# -- HTTP ------------------------------------------------------------------------------


def http_request(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    host: bool = True,
    version: str = "1.1",
) -> bytes:
    """Raw request bytes; ``Content-Length`` is added for a non-empty body unless given."""
    lines = [f"{method} {target} HTTP/{version}"]
    names = set()
    if host:
        lines.append("Host: example.com")
    for name, value in headers:
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade_request(target: str = "/news", **header_changes: str | None) -> bytes:
    """`rawws.handshake_request` to example.com: ``header_changes`` replace (or with None,
    drop) the headers, named with underscores: ``Sec_WebSocket_Key="..."``."""
    return handshake_request(target, **{"Host": "example.com", **header_changes})


@dataclass
class HttpResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    informational: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode()


def parse_responses(data: bytes, methods: Sequence[bytes] = ()) -> list[HttpResponse]:
    """Parse every HTTP response in ``data`` with an h11 client.

    ``methods`` gives the request method of each response in turn (GET by default);
    it matters for HEAD, whose response has no body. Fails if the bytes are not valid
    HTTP/1.1 or if a response is incomplete.
    """
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    responses: list[HttpResponse] = []
    index = 0
    while True:
        method = methods[index] if index < len(methods) else b"GET"
        client.send(h11.Request(method=method, target="/", headers=[("Host", "example.com")]))
        client.send(h11.EndOfMessage())
        informational: list[int] = []
        head: h11.Response | None = None
        body = b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"incomplete response: {event!r} after {data!r}")
        assert head is not None
        responses.append(HttpResponse(head.status_code, dict(head.headers), body, informational))
        index += 1
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
            if not client.trailing_data[0]:
                return responses
        else:
            assert client.trailing_data[0] == b"", "bytes after a closing response"
            return responses


def parse_response(data: bytes, method: bytes = b"GET") -> HttpResponse:
    (response,) = parse_responses(data, [method])
    return response
