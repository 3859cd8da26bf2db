"""The load client reads the common 101 directly and leaves everything else to h11: both
readings agree on every answer, whole or a byte at a time."""

from __future__ import annotations

import re

import pytest

from ringcast.loadtest.handshake import (
    DECLINED,
    Deflate,
    Handshake,
    HandshakeFailed,
    accept_key,
    parse_deflate_answer,
)
from ringcast.loadtest.target import parse_target

TARGET = parse_target("ws://127.0.0.1:8080/news")


def answers(hs: Handshake) -> list[bytes]:
    accept = b"Sec-WebSocket-Accept: " + accept_key(hs.key) + b"\r\n"
    ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    return [
        ok + accept + b"\r\n",
        ok + accept + b"\r\n\x82\x02hi",                                      # frames behind
        ok + accept + b"Sec-WebSocket-Protocol: ringcast\r\n\r\n",
        b"HTTP/1.1 101 \r\nupgrade: WebSocket\r\nconnection: upgrade\r\n" + accept + b"\r\n",
        ok + b"Sec-WebSocket-Accept:" + accept_key(hs.key) + b"  \r\n\r\n",   # odd spaces
        ok + accept.replace(accept_key(hs.key), b"x") + b"\r\n",              # bad accept
        ok + accept + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
        + accept + b"\r\n",
        ok + accept + b" folded: header\r\n\r\n",                             # obs-fold
        ok + accept + b"Bad Name: x\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + accept + b"\r\n",
        b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n"
        + accept.replace(b"\r\n", b"\n") + b"\n",                            # bare LF
        ok + accept + accept + b"\r\n",                                       # accept twice
    ]


def read(hs: Handshake, data: bytes, bytewise: bool) -> object:
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        result = None
        for piece in pieces:
            got = hs.receive(piece)
            if got is not None:
                result = got
                break
        return ("open", result)
    except HandshakeFailed as exc:
        return ("failed", str(exc).split(" (")[0])


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("index", range(14))
def test_direct_reading_and_h11_agree(index: int, bytewise: bool) -> None:
    direct = Handshake(TARGET)
    through_h11 = Handshake(TARGET)
    through_h11.key = direct.key
    through_h11._http = through_h11._h11()
    data = answers(direct)[index]
    assert read(direct, data, bytewise) == read(through_h11, data, bytewise)


def test_the_common_answer_makes_no_h11(monkeypatch: pytest.MonkeyPatch) -> None:
    hs = Handshake(TARGET)
    monkeypatch.setattr(Handshake, "_h11", lambda self: pytest.fail("h11 was made"))
    assert hs.receive(answers(hs)[1]) == b"\x82\x02hi"


# -- permessage-deflate (RFC 7692 section 7) -----------------------------------------


def test_without_compression_the_request_is_what_it_always_was() -> None:
    hs = Handshake(TARGET)
    assert hs.request == (
        b"GET /news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + hs.key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\nUser-Agent: ringcast-loadtest\r\n\r\n")
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    compressing = Handshake(TARGET, compression=True)
    assert compressing.request.count(offer) == 1
    assert compressing.request.replace(offer, b"").replace(compressing.key, hs.key) \
        == hs.request


@pytest.mark.parametrize(("answer", "agreed"), [
    (b"permessage-deflate", Deflate()),
    (b"permessage-deflate; server_no_context_takeover",
     Deflate(server_no_context_takeover=True)),
    (b"Permessage-Deflate ;Server_No_Context_Takeover ; client_no_context_takeover",
     Deflate(server_no_context_takeover=True, client_no_context_takeover=True)),
    (b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=\"12\"",
     Deflate(server_max_window_bits=10, client_max_window_bits=12)),
    (b"permessage-deflate; server_max_window_bits = 8",
     Deflate(server_max_window_bits=8)),
    (b"permessage-deflate; client_max_window_bits=15, ",
     Deflate(client_max_window_bits=15)),
])
def test_deflate_answers_accepted(answer: bytes, agreed: Deflate) -> None:
    assert parse_deflate_answer([answer]) == agreed


@pytest.mark.parametrize(("answer", "why"), [
    (b"x-webkit-deflate-frame", "extension not asked for"),
    (b"permessage-deflate, permessage-deflate", "more than one extension"),
    (b"permessage-deflate; foo", "unknown parameter foo"),
    (b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
     "server_no_context_takeover twice"),
    (b"permessage-deflate; client_no_context_takeover=1",
     "client_no_context_takeover with a value"),
    (b"permessage-deflate; server_max_window_bits", "server_max_window_bits not 8-15"),
    (b"permessage-deflate; server_max_window_bits=7", "server_max_window_bits not 8-15"),
    (b"permessage-deflate; server_max_window_bits=16", "server_max_window_bits not 8-15"),
    (b"permessage-deflate; server_max_window_bits=010", "server_max_window_bits not 8-15"),
    (b"permessage-deflate; client_max_window_bits", "client_max_window_bits not 8-15"),
    (b"permessage-deflate; server_max_window_bits=\"1 0\"", "malformed parameter"),
    (b"permessage-deflate;", "malformed parameter"),
    (b"permessage-deflate; a b", "malformed parameter"),
])
def test_deflate_answers_refused(answer: bytes, why: str) -> None:
    with pytest.raises(HandshakeFailed, match=re.escape(why)):
        parse_deflate_answer([answer])


def test_no_extension_in_the_answer_is_a_decline() -> None:
    assert parse_deflate_answer([]) is None
    assert parse_deflate_answer([b"", b" "]) is None
    assert parse_deflate_answer([b"permessage-deflate", b""]) == Deflate()
    with pytest.raises(HandshakeFailed, match="more than one"):
        parse_deflate_answer([b"permessage-deflate", b"permessage-deflate"])


def deflate_answers(hs: Handshake) -> list[bytes]:
    ok = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: " + accept_key(hs.key) + b"\r\n")
    return [
        ok + b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"
             b"\r\n\r\n\xc1\x02hi",
        ok + b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
             b"Sec-WebSocket-Extensions: \r\n\r\n",
        ok + b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n\r\n",
        ok + b"\r\n",                                                     # declined
        ok + b"Sec-WebSocket-Extensions: permessage-deflate; x=1\r\n\r\n",
        ok + b"Sec-WebSocket-Extensions:\r\n\r\n",                         # declined too
        ok + b"Sec-WebSocket-Extensions: permessage-deflate;\r\n  server_no_context_takeover"
             b"\r\n\r\n",                                                 # obs-fold: h11
    ]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("index", range(7))
def test_deflate_answers_read_alike_directly_and_by_h11(index: int, bytewise: bool) -> None:
    direct = Handshake(TARGET, compression=True)
    through_h11 = Handshake(TARGET, compression=True)
    through_h11.key = direct.key
    through_h11._http = through_h11._h11()
    data = deflate_answers(direct)[index]
    got = read(direct, data, bytewise)
    assert got == read(through_h11, data, bytewise)
    assert direct.deflate == through_h11.deflate
    expected: list[object] = [
        ("open", b"\xc1\x02hi"), ("open", b""), ("open", b""), ("failed", DECLINED),
        ("failed", "bad permessage-deflate answer"), ("failed", DECLINED), None,
    ]
    if expected[index] is not None and not bytewise:   # bytewise: read() stops at the 101
        assert got == expected[index]
    if index == 0:
        assert direct.deflate == Deflate(server_no_context_takeover=True)
    if index == 2:
        assert direct.deflate is not None and direct.deflate.inflate_window == 9


def test_describe() -> None:
    assert Deflate().describe() == "(no parameters)"
    assert Deflate(True, True, 10, 12).describe() == (
        "server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; "
        "client_max_window_bits=12")
