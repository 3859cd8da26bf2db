"""The C head scanner reads exactly the grammar the fast path documents.

The reference is that grammar written as regular expressions (what the fast path ran
before the scanner replaced them): for any head near the plain ones, both must agree on
whether it is plain and, when it is, on the target, the path, every header and where the
head ends. The handshake flag (``HS_UPGRADE``) is held to a reference written from
RFC 6455 section 4.2.1 and wsproto's checks the same way. test_fast_path.py then checks,
end to end, that a session with the scanner answers like h11 and wsproto.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ringcast.server.protocol._headscan import ffi, lib

MAX_LINE, MAX_SECTION, MAX_HEADERS = 200, 600, 12

_REQUEST_LINE = re.compile(rb"(GET|POST) (/[\x21-\x7e]*) HTTP/1\.1\r\n")
_NAME = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\x21-\x7e]*(?:[ \t]+[\x21-\x7e]+)*"
_HEADERS = re.compile(rb"(" + _NAME + rb"):[ \t]*(" + _VALUE + rb")[ \t]*\r\n")
_SECTION = re.compile(rb"(?:" + _NAME + rb":[ \t]*" + _VALUE + rb"[ \t]*\r\n)*")
_KEY = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")


def reference(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], int] | None:
    """(target, path, headers, head length) by the regular expressions, or None."""
    head_end = data.find(b"\r\n\r\n") + 2
    if head_end < 2:
        return None
    line = _REQUEST_LINE.match(data)
    if line is None or line.end() - 2 > MAX_LINE:
        return None
    start = line.end()
    if head_end - start > MAX_SECTION or not _SECTION.fullmatch(data, start, head_end):
        return None
    headers = [(n.lower(), v) for n, v in _HEADERS.findall(data, start, head_end)]
    if len(headers) > MAX_HEADERS:
        return None
    fields = dict(headers)
    if len(fields) != len(headers) or b"host" not in fields:
        return None     # a name twice, or no Host
    if b"transfer-encoding" in fields or b"expect" in fields:
        return None
    if not re.fullmatch(rb"[0-9]{1,19}", fields.get(b"content-length", b"0")):
        return None
    target = line[2]
    return target, target.partition(b"?")[0], headers, head_end + 2


def reference_upgrade(data: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """The handshake checks the scanner makes of a plain head (see headscan_api.h)."""
    fields = dict(headers)
    if not data.startswith(b"GET ") or b"xn--" in fields[b"host"].lower():
        return False
    if int(fields.get(b"content-length", b"0")) != 0:
        return False
    return (fields.get(b"upgrade", b"").lower() == b"websocket"
            and any(t.strip().lower() == b"upgrade"
                    for t in fields.get(b"connection", b"").split(b","))
            and fields.get(b"sec-websocket-version") == b"13"
            and _KEY.fullmatch(fields.get(b"sec-websocket-key", b"")) is not None)


def scan(data: bytes, cap: int = 4096) -> tuple[int, object, bytes]:
    head = ffi.new("hs_head *")
    blob = ffi.new("uint8_t[]", max(cap, 1))
    end = lib.hs_scan(data, len(data), MAX_LINE, MAX_SECTION, MAX_HEADERS, head, blob, cap)
    return end, head, bytes(ffi.buffer(blob, head.blob_len)) if end > 0 else b""


NAMES = [b"Host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version",
         b"Origin", b"Sec-WebSocket-Protocol", b"Authorization", b"Content-Length",
         b"Transfer-Encoding", b"Expect", b"X-A", b"hOsT", b"Bad Name", b"", b"x\x00y",
         b"Na\xe9me", b"Content-Type"]
VALUES = [b"127.0.0.1:8080", b"websocket", b"WebSocket", b"Upgrade", b"keep-alive, Upgrade",
          b"keep-alive,\tupgrade ,x", b"x,,upgrade", b"upgradex, x", b"websocket, h2c",
          b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZR==", b"13",
          b"8", b"0", b"00", b"5", b"", b"  ", b"a\tb  c", b"caf\xe9", b"x\x01y", b"a\rb",
          b"xn--bcher-kva.example", b"XN--a", b"chunked", b"https://a.example"]


POOLS = {  # near misses of each handshake header's rule
    b"Host": [b"example.com", b"xn--bcher-kva.example", b"a.XN--b", b"xn-a"],
    b"Upgrade": [b"websocket", b"WebSocket", b"websocket, h2c", b"websockets", b""],
    b"Connection": [b"keep-alive, Upgrade", b"keep-alive,\tupgrade ,x", b"x,,upgrade",
                    b"upgradex, x", b"UPGRADE", b"keep-alive", b","],
    b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZR==", b"AAAAAAAAAAAAAAAAAAAAAw==",
                           b"AAAAAAAAAAAAAAAAAAAAAB==", b"AAAAAAAAAAAAAAAAAAAA-A==",
                           b"AAAAAAAAAAAAAAAAAAAAAA=", b"AAAAAAAAAAAAAAAAAAAAAAA=="],
    b"Sec-WebSocket-Version": [b"13", b"8", b"13, 8", b"013", b""],
}
HANDSHAKE = [(b"Host", b"127.0.0.1:8080"), (b"Upgrade", b"websocket"),
             (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
             (b"Sec-WebSocket-Version", b"13")]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A handshake (or a few headers) changed here and there: both sides of each rule."""
    method = draw(st.sampled_from([b"GET"] * 6 + [b"POST", b"PUT", b"get", b"GET "]))
    target = draw(st.sampled_from([b"/news"] * 4 + [b"/", b"/a?token=x", b"/a b", b"news",
                                   b"/\x7f", b"/" + b"x" * 190, b"/?", b"/p?q?r"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"http/1.1"]))
    headers = list(HANDSHAKE) if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 4))):
        change = draw(st.sampled_from(["value", "value", "add", "add", "drop", "double"]))
        if change == "value" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            pool = POOLS.get(headers[i][0], VALUES)
            headers[i] = (headers[i][0], draw(st.sampled_from(pool)))
        elif change == "add":
            pos = draw(st.integers(0, len(headers)))
            headers.insert(pos, (draw(st.sampled_from(NAMES)), draw(st.sampled_from(VALUES))))
        elif change == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif change == "double" and headers:
            headers.append(headers[draw(st.integers(0, len(headers) - 1))])
    lines = [method + b" " + target + b" " + version]
    for name, value in headers:
        sep = draw(st.sampled_from([b": ", b": ", b":", b" : ", b":\t", b": \t "]))
        tail = draw(st.sampled_from([b"", b"", b" ", b"\t"]))
        lines.append(name + sep + value + tail)
    eol = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r"]))
    data = eol.join(lines) + eol + eol
    return data + draw(st.sampled_from([b"", b"", b"hello", b"\x81\x80abcd"]))


@settings(max_examples=3000, deadline=None)
@given(heads())
@example(b"GET /news HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET /news HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, "
         b"Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n\r\n")
@example(b"GET /news HTTP/1.1\r\nHost: a\r\n")          # not all here yet
@example(b"GET /news HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 600 + b"\r\n\r\n")
def test_the_scanner_reads_the_reference_grammar(data: bytes) -> None:
    end, head, blob = scan(data)
    ref = reference(data)
    assert (end > 0) == (ref is not None), data
    if ref is None:
        return
    target, path, headers, head_len = ref
    assert end == head_len
    assert data[head.target_off : head.target_off + head.target_len] == target
    assert data[head.target_off : head.target_off + head.path_len] == path
    assert bool(head.flags & lib.HS_QUERY) == (b"?" in target)
    assert head.headers == len(headers)
    assert blob == b"".join(n + b"\0" + v + b"\0" for n, v in headers)
    names = {n for n, _ in headers}
    assert bool(head.flags & lib.HS_PROTOCOL) == (b"sec-websocket-protocol" in names)
    assert bool(head.flags & lib.HS_AUTHORIZATION) == (b"authorization" in names)
    fields = dict(headers)
    for name, flag, off, length in ((b"origin", lib.HS_ORIGIN, "origin_off", "origin_len"),
                                    (b"connection", lib.HS_CONNECTION, "conn_off", "conn_len")):
        assert bool(head.flags & flag) == (name in fields)
        if name in fields:
            start = getattr(head, off)
            assert data[start : start + getattr(head, length)] == fields[name]
    assert data[head.type_off : head.type_off + head.type_len] == fields.get(b"content-type", b"")
    assert head.content_length == int(fields.get(b"content-length", b"0"))
    upgrade = reference_upgrade(data, headers)
    assert bool(head.flags & lib.HS_UPGRADE) == upgrade, data
    if upgrade:
        key = dict(headers)[b"sec-websocket-key"]
        assert data[head.key_off : head.key_off + 24] == key


def test_rfc6455_4_2_1_the_handshake_of_section_1_3_is_recognised() -> None:
    data = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
    end, head, _ = scan(data)
    assert end == len(data)
    assert head.flags & lib.HS_UPGRADE and head.flags & lib.HS_ORIGIN
    assert head.flags & lib.HS_PROTOCOL and not head.flags & lib.HS_AUTHORIZATION


def test_a_head_whose_names_and_values_do_not_fit_is_left_to_h11() -> None:
    data = b"GET /news HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert scan(data, cap=64)[0] == len(data)
    assert scan(data, cap=len(b"host\0example.com\0") - 1)[0] == 0


def test_the_limits_are_the_fast_paths() -> None:
    line = b"GET /" + b"x" * (MAX_LINE - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert scan(line)[0] > 0
    assert scan(line.replace(b"/x", b"/xx", 1))[0] == 0
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X%d: v\r\n" % i
                                                   for i in range(MAX_HEADERS - 1))
    assert scan(many + b"\r\n")[0] > 0
    assert scan(many + b"Y: v\r\n\r\n")[0] == 0
