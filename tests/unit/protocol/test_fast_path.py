"""The fast path answers exactly as h11 and wsproto would, and is taken by real clients.

Every request of the fast path could have gone through h11 (the slow path), so the
property that matters is equivalence: for any request, a session with the fast path and
one without emit the same actions — the same bytes, the same 101, subscriptions, publishes,
refusals and closes — whatever the settings and however the bytes arrive. The generator
below writes requests near the plain ones (the same headers, misspelled, doubled, cased
differently, with the wrong value, bare LF, obs-text, a body too many) so that both paths
are exercised on both sides of every condition; the tests after it show the fast path is
really taken for what browsers, websockets and curl send.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ringcast.server.protocol import (
    Action,
    HttpPublish,
    HttpPublishBatch,
    HttpQuery,
    ProtocolSettings,
    Session,
    SessionState,
    Subscribe,
    fast_path,
)
from ringcast.server.protocol.http_phase import HttpPhase

from .harness import SETTINGS
from .tokens import NOW as UNIX_NOW
from .tokens import PUBLISHER as PUBLISH_TOKEN
from .tokens import SECRET, hs256
from .tokens import SUBSCRIBER as SUBSCRIBE_TOKEN

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
NOW = 1_000.0
UNIX_OFFSET = UNIX_NOW - NOW  # the session's clock reads NOW when the tokens are fresh

BASE = dataclasses.replace(SETTINGS, max_headers=12, max_header_size=1024)
VARIANTS = {
    "open": BASE,
    "tokens": dataclasses.replace(
        BASE,
        publish_tokens=(PUBLISH_TOKEN,),
        subscribe_tokens=(SUBSCRIBE_TOKEN,),
        require_subscribe_auth=True,
        jwt_secret=SECRET,
    ),
    "origins": dataclasses.replace(BASE, allowed_origins=("https://app.example.com",)),
    "closed": dataclasses.replace(BASE, http_enabled=False, metrics_enabled=False),
    "compression": dataclasses.replace(BASE, compression=True),
    "prefixed": dataclasses.replace(BASE, path_prefix="/ws", max_channel_name=8),
}

TOKENS = [PUBLISH_TOKEN, SUBSCRIBE_TOKEN, hs256(), hs256(exp=UNIX_NOW - 1),
          hs256(publish=["news"]), "not-a-token-at-all", "x"]


HEADER_POOL: list[tuple[bytes, list[bytes]]] = [
    (b"Host", [b"example.com", b"127.0.0.1:8080", b"xn--a.com", b"xn--bcher-kva.example",
               b"[::1]:8080", b""]),
    (b"Upgrade", [b"websocket", b"WebSocket", b"websocket, h2c", b"h2c", b""]),
    (b"Connection", [b"Upgrade", b"keep-alive, Upgrade", b"upgrade", b"keep-alive", b"close",
                     b"Keep-Alive", b"Upgradex"]),
    (b"Sec-WebSocket-Key", [KEY, b"dGhlIHNhbXBsZSBub25jZR==", b"short==", KEY + b"A", b""]),
    (b"Sec-WebSocket-Version", [b"13", b"8", b"13, 8", b""]),
    (b"Sec-WebSocket-Protocol", [b"ringcast", b"chat", b"ringcast, chat",
                                 b"ringcast, ringcast.bearer." + SUBSCRIBE_TOKEN.encode(),
                                 b"ringcast.bearer.x"]),
    (b"Sec-WebSocket-Extensions", [b"permessage-deflate; client_max_window_bits",
                                   b"permessage-deflate; server_max_window_bits=10",
                                   b"permessage-deflate; server_max_window_bits=8, "
                                   b"permessage-deflate", b"permessage-deflate; mystery",
                                   b"x-webkit-deflate-frame", b"permessage-deflate;;"]),
    (b"Origin", [b"https://app.example.com", b"https://evil.example", b"null"]),
    (b"Authorization", [b"Bearer " + t.encode() for t in TOKENS] + [b"Basic abc", b"Bearer"]),
    (b"Content-Type", [b"text/plain", b"application/json; charset=utf-8",
                       b"application/octet-stream", b"TEXT/HTML", b"Application/JSON",
                       b"text/ ; x", b"application/json\t;q", b"application/jsonx",
                       b"text", b";text/plain"]),
    (b"Content-Length", [b"0", b"5", b"x", b"05"]),
    (b"Transfer-Encoding", [b"chunked"]),
    (b"Expect", [b"100-continue"]),
    (b"User-Agent", [b"Mozilla/5.0 (X11; Linux x86_64)", b"curl/8.0", b"a\tb  c", b"caf\xe9"]),
    (b"X-Empty", [b"", b"   "]),
    (b"Bad Name", [b"v"]),
]


UPGRADE = [(b"Host", b"127.0.0.1:8080"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
           (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13")]
PUBLISH = [(b"Host", b"127.0.0.1:8080"), (b"Content-Type", b"text/plain")]
BATCH = [(b"Host", b"127.0.0.1:8080"), (b"Content-Type", b"application/json")]
BATCHES = [
    b'{"messages": [{"channel": "news", "text": "hi"}, {"channel": "b", "binary": "AAE="}]}',
    b'{"messages": []}', b'{"messages": [{"channel": "a b", "text": "x"}]}', b"[]", b"{",
]
QUERY = [(b"Host", b"127.0.0.1:8080")]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A plain request of one of the three kinds the fast path serves, then up to three
    changes, each of which may or may not keep it plain and acceptable."""
    kind = draw(st.sampled_from(["upgrade", "publish", "batch", "query"]))
    method, target, headers = {
        "upgrade": (b"GET", b"/news", UPGRADE),
        "publish": (b"POST", b"/publish/news", PUBLISH),
        "batch": (b"POST", b"/publish", BATCH),
        "query": (b"GET", draw(st.sampled_from([b"/healthz", b"/metrics"])), QUERY),
    }[kind]
    headers = list(headers)
    version = b"HTTP/1.1"
    body = {"publish": b"hello", "batch": draw(st.sampled_from(BATCHES))}.get(kind, b"")
    eol = b"\r\n"
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2, 3]))):
        change = draw(st.sampled_from([
            "value", "value", "value", "add", "add", "add", "drop", "double", "case", "space",
            "method", "target", "target", "version", "body", "eol",
        ]))
        if change == "value" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            pool = dict(HEADER_POOL).get(headers[i][0], [b"x"])
            headers[i] = (headers[i][0], draw(st.sampled_from(pool)))
        elif change == "add":
            name, pool = draw(st.sampled_from(HEADER_POOL))
            headers.insert(draw(st.integers(0, len(headers))), (name, draw(st.sampled_from(pool))))
        elif change == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif change == "double" and headers:
            headers.append(draw(st.sampled_from(headers)))
        elif change == "case" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            headers[i] = (headers[i][0].lower(), headers[i][1])
        elif change == "space" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            pad = draw(st.sampled_from([b" ", b"\t", b"  "]))
            headers[i] = (headers[i][0], pad + headers[i][1] + pad)
        elif change == "method":
            method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"get"]))
        elif change == "target":
            target = draw(st.sampled_from([
                b"/news?token=" + draw(st.sampled_from(TOKENS)).encode(), b"/publish/news",
                b"/publish/news?token=" + PUBLISH_TOKEN.encode(), b"/healthz", b"/metrics",
                b"/bad*chan", b"/", b"/publish/", b"/x" * 70, b"/news", b"/ws/news",
                b"/ws/publish/news", b"/ws", b"/ws/", b"/wsnews", b"/ws/publish/news?x",
                b"/news.1:a@b-c_d", b"/newsletter", b"/publish/newsletter",
            ]))
        elif change == "version":
            version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1"]))
        elif change == "body":
            body = draw(st.sampled_from([b"", b"hello", b"\xff\xfe", b"{}", b"x" * 5000]))
        elif change == "eol":
            eol = b"\n"
    if body and not any(name.lower() == b"content-length" for name, _ in headers):
        headers.append((b"Content-Length", b"%d" % len(body)))
    lines = [method + b" " + target + b" " + version,
             *(name + b": " + value for name, value in headers)]
    head = eol.join(lines) + eol + eol
    after = draw(st.sampled_from([b"", b"", b"\x81\x82abcd\x09\x0b",
                                  b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]))
    return head + body + after


def drive(protocol: ProtocolSettings, pieces: list[bytes]) -> list[Action]:
    """Feed ``pieces`` to a session, answering what it asks, and return every action."""
    session = Session(protocol, NOW, unix_offset=UNIX_OFFSET)
    actions: list[Action] = []

    def run(new: list[Action]) -> None:
        actions.extend(new)
        for action in new:
            if isinstance(action, HttpPublish):
                run(session.publish_done(3))
            elif isinstance(action, HttpPublishBatch):
                run(session.publish_batch_done([(2, None)] * len(action.messages)))
            elif isinstance(action, HttpQuery):
                run(session.respond(200, "text/plain; charset=utf-8", b"ok\n"))

    for piece in pieces:
        run(session.receive_data(piece, NOW))
    run(session.receive_data(b"", NOW))
    return actions


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests(), variant=st.sampled_from(sorted(VARIANTS)),
       cuts=st.one_of(st.just([]), st.lists(st.integers(1, 400), max_size=3)))
@example(data=b"GET /news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
         variant="open", cuts=[])
def test_the_fast_path_answers_as_h11_and_wsproto_do(
    data: bytes, variant: str, cuts: list[int]
) -> None:
    fast = VARIANTS[variant]
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    slow = dataclasses.replace(fast, fast_path=False)
    assert drive(fast, pieces) == drive(slow, pieces)


def one_change_each() -> list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]]:
    """Every request one change away from a plain one: each header of the three kinds
    given each value of the pool, dropped, doubled, or another header added."""
    cases = []
    bases = [(b"GET", b"/news", UPGRADE, b""), (b"POST", b"/publish/news", PUBLISH, b"hello"),
             (b"GET", b"/healthz", QUERY, b""), (b"GET", b"/metrics", QUERY, b""),
             *((b"POST", b"/publish", BATCH, body) for body in BATCHES)]
    for method, target, headers, body in bases:
        cases.append((method, target, list(headers), body))
        for i, (name, _) in enumerate(headers):
            for value in dict(HEADER_POOL).get(name, []):
                cases.append((method, target, [*headers[:i], (name, value), *headers[i + 1:]],
                              body))
            cases.append((method, target, headers[:i] + headers[i + 1:], body))
            cases.append((method, target, [*headers, headers[i]], body))
        for name, values in HEADER_POOL:
            cases.extend((method, target, [*headers, (name, value)], body) for value in values)
        for token in TOKENS:
            cases.append((method, target + b"?token=" + token.encode(), list(headers), body))
            cases.append((method, target, [*headers, (b"Authorization",
                                                      b"Bearer " + token.encode())], body))
    return cases


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_change_from_plain_is_answered_alike(variant: str) -> None:
    fast = VARIANTS[variant]
    slow = dataclasses.replace(fast, fast_path=False)
    for method, target, changed, body in one_change_each():
        headers = changed
        if body and not any(name.lower() == b"content-length" for name, _ in headers):
            headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        lines = [method + b" " + target + b" HTTP/1.1", *(n + b": " + v for n, v in headers)]
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        assert drive(fast, [data]) == drive(slow, [data]), data


TARGETS = [b"/news", b"/ws/news", b"/wsnews", b"/ws", b"/ws/", b"/ws/ws/news", b"/", b"//news",
           b"/news?x=1", b"/ws/news?x", b"/news.1:a@b-c_d", b"/newsletter", b"/n%41",
           b"/bad*chan", b"/n/ews", b"/x" * 70]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_path_is_answered_alike(variant: str) -> None:
    """The path as both paths read it: under a prefix or not, a channel name too long, a
    character outside the alphabet, a query; a handshake and a publish of each (text,
    JSON and binary bodies)."""
    fast = VARIANTS[variant]
    slow = dataclasses.replace(fast, fast_path=False)
    for target in TARGETS:
        publishes = [b"/publish" + target, target.replace(b"/ws/", b"/ws/publish/", 1)]
        requests = [b"GET " + target + b" HTTP/1.1\r\n" + b"".join(
            n + b": " + v + b"\r\n" for n, v in UPGRADE) + b"\r\n"]
        for path in publishes:
            for content_type in (b"text/plain", b"Application/JSON ; x", b"image/png"):
                requests.append(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                + content_type + b"\r\nContent-Length: 2\r\n\r\n\xc3\xa9")
        for data in requests:
            assert drive(fast, [data]) == drive(slow, [data]), data


# -- taken where it matters ------------------------------------------------------------


def upgraded_without_h11(data: bytes, protocol: ProtocolSettings = BASE) -> Session:
    session = Session(protocol, NOW, unix_offset=UNIX_OFFSET)
    session.receive_data(data, NOW)
    assert session.state is SessionState.OPEN
    return session


def test_no_h11_is_made_for_a_plain_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    monkeypatch.setattr("h11.Connection.__init__", lambda *a, **k: made.append(a))
    upgraded_without_h11(
        b"GET /news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert made == []


@pytest.mark.parametrize("data", [
    # Chromium 156
    b"GET /news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\nPragma: no-cache"
    b"\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
    b"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\nOrigin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    # python-websockets
    b"GET /news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; "
    b"client_max_window_bits\r\nUser-Agent: Python/3.11 websockets/17.4\r\n\r\n",
], ids=["chromium", "websockets"])
def test_real_clients_take_it(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HttpPhase, "_parse", lambda *a: pytest.fail("went through h11"))
    upgraded_without_h11(data, VARIANTS["origins"])


def test_curl_publishing_takes_it_request_after_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HttpPhase, "_parse", lambda *a: pytest.fail("went through h11"))
    session = Session(BASE, NOW, unix_offset=UNIX_OFFSET)
    request = (b"POST /publish/news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
               b"User-Agent: curl/8.0\r\nAccept: */*\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 5\r\n\r\nhello")
    for _ in range(3):  # keep-alive: each request on the fast path
        assert session.receive_data(request, NOW) == [HttpPublish("news", b"hello", True)]
        session.publish_done(1)
    # Pipelined: the second waits for the first's answer, then takes the fast path too.
    actions = session.receive_data(request * 2, NOW)
    assert actions == [HttpPublish("news", b"hello", True)]
    assert session.publish_done(1)[-1] == HttpPublish("news", b"hello", True)


# -- the whole-request shortcut ----------------------------------------------------------


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests(), variant=st.sampled_from(sorted(VARIANTS)))
def test_a_whole_request_read_in_one_scan_is_decided_as_read_plain_decides_it(
    data: bytes, variant: str
) -> None:
    """read_upgrade and read_publish skip the Plain, never the checks: what they accept,
    check_upgrade and check_publish accept alike (the 101, the publication)."""
    protocol = VARIANTS[variant]
    upgrade = fast_path.read_upgrade(data, protocol, UNIX_NOW)
    publish = fast_path.read_publish(data, protocol)
    plain = fast_path.read_plain(data, protocol)
    if upgrade is not None:
        assert plain is not None and plain.end == len(data)
        assert upgrade == fast_path.check_upgrade(protocol, plain, UNIX_NOW)
    if publish is not None:
        assert plain is not None and plain.end == len(data)
        assert publish == (fast_path.check_publish(protocol, plain, UNIX_NOW), plain.body)


@pytest.mark.parametrize(("data", "last"), [
    (b"GET /news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
     b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", Subscribe("news")),
    (b"POST /publish/news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: text/plain\r\n"
     b"Content-Length: 5\r\n\r\nhello", HttpPublish("news", b"hello", True)),
], ids=["handshake", "publish"])
def test_a_storm_handshake_and_a_publish_take_the_shortcut(
    data: bytes, last: Action, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_path, "read_plain", lambda *a: pytest.fail("read a Plain"))
    actions = Session(BASE, NOW, unix_offset=UNIX_OFFSET).receive_data(data, NOW)
    assert actions[-1] == last
    # Under a path prefix too (hs_whole takes it off as unprefixed does).
    prefixed = VARIANTS["prefixed"]
    data = data.replace(b" /", b" /ws/", 1)
    actions = Session(prefixed, NOW, unix_offset=UNIX_OFFSET).receive_data(data, NOW)
    assert actions[-1] == last
