"""The load client reads the common 101 directly and leaves everything else to h11: both
readings agree on every answer, whole or a byte at a time."""

from __future__ import annotations

import pytest

from ringcast.loadtest.handshake import Handshake, HandshakeFailed, accept_key
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
