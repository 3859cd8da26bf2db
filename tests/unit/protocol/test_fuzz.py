"""Property tests: whatever arrives, in whatever pieces, the session never raises and
everything it writes is valid HTTP/1.1 then valid WebSocket frames, as a client reads them.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection as WsClose
from wsproto.events import Ping, Pong

from ringcast.server.protocol import (
    Action,
    CloseConnection,
    HttpPublish,
    HttpQuery,
    ProtocolSettings,
    Publish,
    Refused,
    SendBytes,
    Session,
    SessionState,
    Subscribe,
)
from tests.support.rawws import frame

from .harness import http_request, upgrade_request
from .harness import settings as protocol_settings

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10

Draw = Callable[[st.SearchStrategy[Any]], Any]  # st.data().draw or a composite's draw

SETTINGS = protocol_settings(
    max_message_size=300, max_http_body=500, publish_token="", max_channel_name=16
)
TOKEN_SETTINGS = protocol_settings(publish_token="t0k", client_publish=False)
JWT_SECRET = "fuzz-secret-" + "x" * 32
PUBLISHER = "pub-token-0123456789"
SUBSCRIBER = "sub-token-0123456789"
# Everything on, and small limits, so that random input reaches them.
AUTH_SETTINGS = protocol_settings(
    max_message_size=300,
    max_http_body=500,
    max_channel_name=16,
    publish_tokens=(PUBLISHER,),
    subscribe_tokens=(SUBSCRIBER,),
    require_subscribe_auth=True,
    require_publish_auth=True,
    jwt_secret=JWT_SECRET,
    allowed_origins=("https://app.example.com", "https://*.example.org"),
    max_messages_per_second=5.0,
    message_burst=3,
    max_request_line=256,
    max_header_size=1024,
    max_headers=12,
)
JWT = jwt.encode(
    {"sub": "fuzz", "exp": 10**8, "subscribe": ["news", "chat.*"], "publish": ["news"]},
    JWT_SECRET,
    algorithm="HS256",
)

# Fixed at import so that Hypothesis replays the same bytes (client masks are random).
CORPUS = [
    upgrade_request("/news")
    + frame(TEXT, "héllo".encode())
    + frame(BINARY, b"ab", fin=False)
    + frame(PING, b"p")
    + frame(CONTINUATION, b"cd")
    + frame(PONG, b"")
    + frame(BINARY, b"")
    + frame(CLOSE, struct.pack("!H", 1000) + b"bye"),
    upgrade_request("/a:b") + frame(BINARY, b"x" * 200) + frame(BINARY, length=301),
    upgrade_request("/room", Sec_WebSocket_Extensions="permessage-deflate")
    + frame(TEXT, b"\xc3", fin=False)
    + frame(CONTINUATION, b"\xa9"),
    http_request("POST", "/publish/news", [("Content-Type", "text/plain")], b"hello")
    + http_request("GET", "/healthz")
    + upgrade_request("/news")
    + frame(TEXT, b"after"),
    http_request(
        "POST",
        "/publish/x",
        [("Transfer-Encoding", "chunked"), ("Authorization", "Bearer t0k")],
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    + http_request("HEAD", "/metrics")
    + http_request("GET", "/metrics", [("Connection", "close")]),
    http_request("POST", "/publish/x", [("Expect", "100-continue"), ("Content-Length", "3")])
    + b"abc",
    # Tokens in each place, origins, and enough messages to reach the rate limit.
    upgrade_request(f"/news?token={JWT}")
    + frame(TEXT, b"a")
    + frame(PING, b"p")
    + frame(BINARY, b"b", fin=False)
    + frame(CONTINUATION, b"c")
    + frame(TEXT, b"d")
    + frame(TEXT, b"e"),
    upgrade_request(
        "/news", Authorization=f"Bearer {PUBLISHER}", Origin="https://app.example.com"
    )
    + frame(TEXT, b"hi")
    + frame(CLOSE, struct.pack("!H", 1000)),
    upgrade_request("/chat.1", Sec_WebSocket_Protocol=f"ringcast, ringcast.bearer.{JWT}")
    + frame(TEXT, b"not allowed here"),
    upgrade_request("/news", Origin="https://a.b.example.org", Authorization=f"Bearer {SUBSCRIBER}")
    + frame(TEXT, b"subscribers may not publish"),
    http_request("POST", f"/publish/news?token={JWT}", [("Content-Type", "text/plain")], b"x")
    + http_request(
        "POST", "/publish/news", [("Authorization", f"Bearer {PUBLISHER}")], b"y"
    ),
]


@dataclass
class WireChecker:
    """Reads the server's bytes as a client would; any invalid byte fails the test."""

    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    ws: Connection | None = None
    statuses: list[int] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    finished: bool = False  # a closing response or a close frame was read

    def __post_init__(self) -> None:
        self._next_request()

    def _next_request(self) -> None:
        headers = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
        self.http.send(h11.Request(method="GET", target="/", headers=headers))
        self.http.send(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        assert not self.finished, f"bytes after the end: {data!r}"
        if self.ws is not None:
            self._read_frames(data)
            return
        self.http.receive_data(data)
        while not self.finished:
            event = self.http.next_event()  # raises on invalid HTTP
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    self.ws = Connection(ConnectionType.CLIENT)
                    trailing, _ = self.http.trailing_data
                    self._read_frames(trailing)
                    return
                assert event.status_code == 100
            elif isinstance(event, h11.Response):
                self.statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                if self.http.their_state is h11.DONE and self.http.our_state is h11.DONE:
                    self.http.start_next_cycle()
                    self._next_request()
                else:
                    self.finished = True
                    assert self.http.trailing_data[0] == b"", "bytes after a closing response"
            else:
                assert isinstance(event, h11.Data)

    def _read_frames(self, data: bytes) -> None:
        assert self.ws is not None
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, WsClose):
                # A parse failure also comes out as a close event; a real one moves the state.
                assert self.ws.state is ConnectionState.REMOTE_CLOSING, event
                self.closes.append((event.code, event.reason or ""))
                self.finished = True
            else:
                assert isinstance(event, Ping | Pong), event


@dataclass
class Driver:
    """Feeds a session, answers its HTTP requests like a runtime, checks its actions."""

    session: Session
    wire: WireChecker = field(default_factory=WireChecker)
    closed: bool = False
    subscribed: bool = False
    refusals: list[Refused] = field(default_factory=list)

    def run(self, actions: list[Action]) -> None:
        for action in actions:
            assert not self.closed, f"{action!r} after CloseConnection"
            if self.refusals:  # a refusal is followed by its answer and the close only
                assert isinstance(action, SendBytes | CloseConnection), action
            if isinstance(action, Refused):
                assert not self.refusals, "two refusals"
                self.refusals.append(action)
            elif isinstance(action, SendBytes):
                self.wire.feed(action.data)
            elif isinstance(action, CloseConnection):
                self.closed = True
                assert self.session.state is SessionState.CLOSED
            elif isinstance(action, Subscribe):
                assert not self.subscribed
                assert self.wire.ws is not None, "Subscribe before the 101"
                self.subscribed = True
            elif isinstance(action, Publish):
                assert self.subscribed
                assert len(action.payload) <= self.session.settings.max_message_size
                if action.text:
                    action.payload.decode()
            elif isinstance(action, HttpPublish):
                assert len(action.payload) <= self.session.settings.max_http_body
                if action.text:
                    action.payload.decode()
                self.run(self.session.publish_done(1))
            else:
                assert isinstance(action, HttpQuery)
                self.run(self.session.respond(200, "text/plain", b""))
        if not self.closed:
            assert self.session.state is not SessionState.CLOSED

    def check_end(self) -> None:
        # Shown by --hypothesis-show-statistics: what the inputs reached.
        note_event(f"final state {self.session.state.name}")
        for status in sorted(set(self.wire.statuses)):
            note_event(f"HTTP {status}")
        for code, _ in self.wire.closes:
            note_event(f"close frame {code}")
        assert 500 not in self.wire.statuses, "an internal error"
        assert (1011, "") not in self.wire.closes, "an internal error"
        for refusal in self.refusals:
            note_event(f"refused: {refusal.reason.value}")
            assert self.closed, "a refusal without the close"
            # The answer it announced went out: the last status or close code seen.
            if refusal.code >= 1000:
                assert self.wire.closes[-1][0] == refusal.code
            elif refusal.code:
                assert self.wire.statuses[-1] == refusal.code
        if self.closed:
            assert self.session.receive_data(b"more", 1e9) == []
            assert self.session.tick(1e9) == []


def mutate(data: bytes, draw: Draw) -> bytes:
    """Flip, insert, delete and truncate, a few times."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, len(buffer)))
        if kind == "flip" and position < len(buffer):
            buffer[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buffer[position : position + draw(st.integers(1, 8))]
        else:
            del buffer[position:]
    return bytes(buffer)


def split(data: bytes, draw: Draw) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed_all(
    draw: Draw,
    data: bytes,
    session_settings: ProtocolSettings = SETTINGS,
    *,
    eof: bool = True,
    clock: bool = True,
) -> Driver:
    """Feed ``data`` in random pieces, with timer ticks, maybe a server close, then EOF.

    Without ``clock`` no time passes, so no timeout can interfere.
    """
    session = Session(session_settings, 0.0, unix_offset=0.0)
    driver = Driver(session)
    now = 0.0
    for chunk in split(data, draw):
        if driver.closed:
            break
        if clock:
            now += draw(STEPS)
        if draw(st.booleans()):
            driver.run(session.tick(now))
        if not driver.closed and draw(st.integers(0, 20)) == 0:
            driver.run(session.close(draw(st.sampled_from([1001, 3008])), "bye", now))
        if not driver.closed:
            driver.run(session.receive_data(chunk, now))
    if eof and not driver.closed:
        driver.run(session.receive_data(b"", now))
    if clock and not driver.closed:
        driver.run(session.tick(now + 1e6))
    driver.check_end()
    return driver


# Mostly short steps: a timeout (handshake 10 s, ping 20 s) now and then, not always.
STEPS = st.sampled_from([0.1] * 7 + [1.0, 12.0, 25.0])

FUZZ = settings(
    max_examples=int(os.environ.get("RINGCAST_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestNeverRaisesOnHostileInput:
    @FUZZ
    @given(st.data())
    def test_mutated_conversations(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(CORPUS))
        session_settings = data.draw(st.sampled_from([SETTINGS, TOKEN_SETTINGS, AUTH_SETTINGS]))
        eof = data.draw(st.booleans())
        feed_all(data.draw, mutate(source, data.draw), session_settings, eof=eof)

    @FUZZ
    @given(st.data())
    def test_random_bytes_after_a_handshake(self, data: st.DataObject) -> None:
        noise = data.draw(st.binary(max_size=400))
        feed_all(data.draw, upgrade_request("/news") + noise)

    @FUZZ
    @given(st.data())
    def test_random_bytes(self, data: st.DataObject) -> None:
        feed_all(data.draw, data.draw(st.binary(max_size=400)))

    @FUZZ
    @given(st.data())
    def test_valid_conversations_survive_any_split(self, data: st.DataObject) -> None:
        driver = feed_all(data.draw, CORPUS[0], eof=False, clock=False)
        # The client's close was echoed, unless a random server close came first (which
        # before the handshake closes without a close frame).
        assert driver.closed
        assert [code for code, _ in driver.wire.closes] in ([1000], [1001], [3008], [])

    @FUZZ
    @given(st.data())
    def test_random_bytes_with_everything_on(self, data: st.DataObject) -> None:
        prefix = data.draw(
            st.sampled_from([b"", upgrade_request(f"/news?token={JWT}"), b"GET /news HTTP/1.1\r\n"])
        )
        feed_all(data.draw, prefix + data.draw(st.binary(max_size=400)), AUTH_SETTINGS)

    @FUZZ
    @given(st.data())
    def test_an_authenticated_conversation_survives_any_split(self, data: st.DataObject) -> None:
        # JWT in the query; 5 messages against a burst of 3, then a close frame.
        source = CORPUS[6] + frame(CLOSE, struct.pack("!H", 1000))
        driver = feed_all(data.draw, source, AUTH_SETTINGS, eof=False, clock=False)
        assert driver.closed
        codes = [code for code, _ in driver.wire.closes]
        assert codes in ([1008], [1001], [3008], [])
        if codes == [1008]:
            assert [r.reason.value for r in driver.refusals] == ["rate_limited"]
