"""The hostile byte streams of test_malformed, each with the answer RFC 6455 / RFC 9110-9112
and the README's close-code table call for.

An HTTP case is sent as a whole on a fresh connection; the answer must be that HTTP
status and then the end of the connection. A WebSocket case is sent once the handshake
got its 101; the answer must be a close frame with one of the listed codes, then the
end of the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.rawws import (
    KEY,
    LENGTH_16,
    LENGTH_64,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    RSV3,
    close_payload,
    frame,
    handshake_request,
)

MAX_MESSAGE = 4096
"""limits.max_message_size for the malformed-input server (small, to test 1009 cheaply)."""

PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG = 1002, 1007, 1008, 1009


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: frozenset[int]   # HTTP statuses, or close codes


def _http(name: str, data: bytes, *expect: int) -> Case:
    return Case(name, data, frozenset(expect))


def _req(line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode("latin-1") + body


_UPGRADE = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13")
_KEY = f"Sec-WebSocket-Key: {KEY}"

HTTP_CASES = [
    _http("not http", b"HELLO WORLD\r\n\r\n", 400),
    _http("tls client hello", bytes.fromhex("16030100a5010000a10303") + b"\0" * 64 + b"\r\n\r\n",
          400),
    _http("http/0.9 request line", b"GET /live\r\n\r\n", 400),
    _http("header without colon", _req("GET /live HTTP/1.1", "Host: x", "BadHeader"), 400),
    _http("nul in header value", _req("GET /live HTTP/1.1", "Host: x", "X-A: a\0b"), 400),
    _http("space before colon", _req("GET /live HTTP/1.1", "Host : x"), 400),
    _http("no host in http/1.1", _req("GET /healthz HTTP/1.1"), 400),
    _http("header section over 16 KiB",
          _req("GET /live HTTP/1.1", "Host: x", "X-Big: " + "a" * 20_000), 431),
    _http("2000 small headers",
          _req("GET /live HTTP/1.1", "Host: x", *(f"X-{i}: v" for i in range(2000))), 431),
    _http("request line over 16 KiB", _req("GET /" + "a" * 20_000 + " HTTP/1.1", "Host: x"),
          414, 431),
    _http("upgrade without key", _req("GET /live HTTP/1.1", "Host: x", *_UPGRADE), 400),
    _http("upgrade with a short key",
          _req("GET /live HTTP/1.1", "Host: x", *_UPGRADE, "Sec-WebSocket-Key: c2hvcnQ="), 400),
    _http("upgrade with version 8",
          _req("GET /live HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
               _KEY, "Sec-WebSocket-Version: 8"), 426),
    _http("upgrade over http/1.0", _req("GET /live HTTP/1.0", "Host: x", *_UPGRADE, _KEY), 400),
    _http("upgrade to a bad channel name",
          _req("GET /a*b HTTP/1.1", "Host: x", *_UPGRADE, _KEY), 400),
    _http("upgrade to a 200-character channel",
          _req("GET /" + "c" * 200 + " HTTP/1.1", "Host: x", *_UPGRADE, _KEY), 400),
    _http("publish announcing 1 GB",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Content-Length: 1000000000"), 413),
    _http("two different content-lengths",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Content-Length: 1",
               "Content-Length: 2", body=b"ab"), 400),
    _http("negative content-length",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Content-Length: -1"), 400),
    _http("transfer-encoding and content-length (RFC 9112 section 6.1)",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
               "Content-Length: 5", body=b"5\r\nhello\r\n0\r\n\r\n"), 400),
    _http("bad chunk size",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
               body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    _http("chunked body over max_http_body",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
               body=b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(17))),
          413),
    _http("publish with GET", _req("GET /publish/live HTTP/1.1", "Host: x"), 405),
    _http("metrics with POST", _req("POST /metrics HTTP/1.1", "Host: x", "Content-Length: 0"),
          405),
    _http("unknown path", _req("GET /../../etc/passwd HTTP/1.1", "Host: x"), 404),
    _http("text publish with invalid utf-8",
          _req("POST /publish/live HTTP/1.1", "Host: x", "Content-Type: text/plain",
               "Content-Length: 2", body=b"\xff\xfe"), 400),
]


def _ws(name: str, data: bytes, *expect: int) -> Case:
    return Case(name, data, frozenset(expect))


def _close(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, close_payload(code, reason))


WS_CASES = [
    _ws("unmasked frame", frame(OP_TEXT, b"hi", masked=False), PROTOCOL_ERROR),
    _ws("rsv1 without an extension", frame(OP_TEXT, b"hi", rsv=RSV1), PROTOCOL_ERROR),
    _ws("rsv3", frame(OP_BINARY, b"hi", rsv=RSV3), PROTOCOL_ERROR),
    _ws("reserved data opcode 3", frame(0x3, b"hi"), PROTOCOL_ERROR),
    _ws("reserved control opcode 11", frame(0xB, b"hi"), PROTOCOL_ERROR),
    _ws("ping with 126 bytes", frame(OP_PING, b"p" * 126), PROTOCOL_ERROR),
    _ws("fragmented ping", frame(OP_PING, b"p", fin=False), PROTOCOL_ERROR),
    _ws("continuation without a message", frame(OP_CONT, b"x"), PROTOCOL_ERROR),
    _ws("new message inside a fragmented one",
        frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), PROTOCOL_ERROR),
    _ws("invalid utf-8 text", frame(OP_TEXT, b"\xff\xfe\xfd"), INVALID_DATA),
    _ws("utf-8 surrogate", frame(OP_TEXT, b"\xed\xa0\x80"), INVALID_DATA),
    _ws("invalid utf-8 across fragments",
        frame(OP_TEXT, b"ok\xe2\x82", fin=False) + frame(OP_CONT, b"\x28"), INVALID_DATA),
    _ws("truncated utf-8 at the end", frame(OP_TEXT, b"ok\xe2\x82"), INVALID_DATA),
    *(
        _ws(f"close code {code}", _close(code), PROTOCOL_ERROR)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    ),
    _ws("close with a 1-byte payload", frame(OP_CLOSE, b"\x03"), PROTOCOL_ERROR),
    _ws("close reason invalid utf-8", _close(1000, b"\xff"), INVALID_DATA),
    _ws("close with 126 bytes", _close(1000, b"r" * 124), PROTOCOL_ERROR),
    _ws("16-bit length for 5 bytes", frame(OP_BINARY, b"x" * 5, encoding=LENGTH_16),
        PROTOCOL_ERROR),
    _ws("64-bit length for 300 bytes", frame(OP_BINARY, b"x" * 300, encoding=LENGTH_64),
        PROTOCOL_ERROR),
    _ws("64-bit length with the top bit set", frame(OP_BINARY, b"x" * 8, length=1 << 63),
        PROTOCOL_ERROR, TOO_BIG),
    _ws("1 GB frame announced", frame(OP_BINARY, b"x" * 1000, length=1 << 30), TOO_BIG),
    _ws("message over max_message_size", frame(OP_BINARY, b"x" * (MAX_MESSAGE + 1)), TOO_BIG),
    _ws("fragments adding up past max_message_size",
        b"".join(frame(OP_BINARY if i == 0 else OP_CONT, b"y" * 100, fin=False)
                 for i in range(MAX_MESSAGE // 100 + 5)), TOO_BIG),
    _ws("1000 one-byte fragments then close",
        b"".join(frame(OP_BINARY if i == 0 else OP_CONT, b"z", fin=False) for i in range(999))
        + frame(OP_CONT, b"z") + _close(1000), 1000),
    _ws("a message in 4000 one-byte fragments",
        b"".join(frame(OP_BINARY if i == 0 else OP_CONT, b"z", fin=False) for i in range(3999))
        + frame(OP_CONT, b"z"), POLICY),
    _ws("100,000 empty continuation frames",
        frame(OP_BINARY, b"", fin=False) + frame(OP_CONT, b"", fin=False) * 100_000, POLICY),
    _ws("10,000 unsolicited pongs", frame(OP_PONG, b"") * 10_000, POLICY),
    _ws("10,000 pings", frame(OP_PING, b"p") * 10_000, POLICY),
    _ws("garbage after close", _close(1000) + b"\x00garbage\xff" * 100, 1000),
    _ws("data frame after close", _close(4000) + frame(OP_TEXT, b"late"), 4000),
    _ws("close 3000 echoed", _close(3000, b"bye"), 3000),
    _ws("close 4999 echoed", _close(4999), 4999),
    _ws("empty close", frame(OP_CLOSE), 1000, 1005),
]

# A handshake followed at once, in the same write, by a hostile frame.
PIPELINED = Case(
    "handshake with an unmasked frame in the same write",
    handshake_request("/hostile") + frame(OP_TEXT, b"hi", masked=False),
    frozenset({PROTOCOL_ERROR}),
)
