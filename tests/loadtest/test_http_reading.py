"""What the load client makes of a server's HTTP: the handshake's answer and publish answers.

Sans-I/O, bytes in and verdicts out, fed whole and one byte at a time. The same
code against real servers: test_faults.py (a wrong accept key) and
test_http_answers.py (every framing of publish answers).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ringcast.loadtest.handshake import Handshake, HandshakeFailed, accept_key
from ringcast.loadtest.http_publish import Answer, HttpPublisher, PublishError
from ringcast.loadtest.target import parse_target

TARGET = parse_target("ws://127.0.0.1:8080/news")
FRAME = b"\x82\x02hi"


def pieces(data: bytes, bytewise: bool) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))] if bytewise else [data]


def switching(hs: Handshake, *extra: bytes) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(hs.key) + b"\r\n" + b"".join(extra) + b"\r\n")


def test_handshake_opens_and_keeps_the_frames_behind_the_answer() -> None:
    hs = Handshake(TARGET)
    assert hs.request.startswith(b"GET /news HTTP/1.1\r\n")
    assert b"\r\nSec-WebSocket-Key: " + hs.key + b"\r\n" in hs.request
    assert hs.receive(switching(hs) + FRAME) == FRAME


def test_handshake_answer_a_byte_at_a_time() -> None:
    hs = Handshake(TARGET)
    *head, last = pieces(switching(hs), bytewise=True)
    assert [hs.receive(b) for b in head] == [None] * len(head)
    assert hs.receive(last) == b""


@pytest.mark.parametrize(("answer", "why"), [
    (lambda hs: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "HTTP 403"),
    (lambda hs: switching(hs).replace(b"Upgrade: websocket\r\n", b""),
     "101 without Upgrade: websocket"),
    (lambda hs: switching(hs).replace(b"Connection: Upgrade", b"Connection: keep-alive"),
     "101 without Upgrade: websocket"),
    (lambda hs: switching(hs).replace(accept_key(hs.key), accept_key(b"another key")),
     "bad Sec-WebSocket-Accept"),
    (lambda hs: switching(hs, b"Sec-WebSocket-Extensions: permessage-deflate\r\n"),
     "extension not asked for"),
    (lambda hs: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "invalid HTTP answer"),
], ids=["refused", "no-upgrade", "no-connection-upgrade", "bad-accept", "extension", "not-http"])
def test_handshake_failures_name_their_reason(answer: Callable[[Handshake], bytes],
                                              why: str) -> None:
    hs = Handshake(TARGET)
    with pytest.raises(HandshakeFailed, match=f"^{why}"):
        hs.receive(answer(hs))


def publisher() -> HttpPublisher:
    return HttpPublisher(TARGET, "/publish/news", 4)


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\n{\"ok\"\r\n3;ext=1\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n")
SIZED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_publish_answers_in_any_framing_one_per_request(bytewise: bool) -> None:
    p = publisher()
    for answer, status in ((CHUNKED, 200), (SIZED, 202), (CHUNKED, 200)):
        request = p.post(b"body")
        assert request.startswith(b"POST /publish/news HTTP/1.1\r\n")
        assert request.endswith(b"\r\n\r\nbody")
        *head, last = pieces(answer, bytewise)
        assert [p.receive(b) for b in head] == [None] * len(head)
        assert p.receive(last) == Answer(status, keep_alive=True)


def test_a_continue_before_the_answer_is_skipped() -> None:
    p = publisher()
    p.post(b"body")
    assert p.receive(b"HTTP/1.1 100 Continue\r\n\r\n" + SIZED) == Answer(202, keep_alive=True)


def test_connection_close_ends_the_connection() -> None:
    p = publisher()
    p.post(b"body")
    answer = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert p.receive(answer) == Answer(503, keep_alive=False)


def test_bytes_beyond_the_answer_are_refused() -> None:
    """They would be taken for the answer to the next request: out of step from then on."""
    p = publisher()
    p.post(b"body")
    with pytest.raises(PublishError):
        p.receive(SIZED + SIZED)


def test_an_answer_that_is_not_http_is_refused() -> None:
    p = publisher()
    p.post(b"body")
    with pytest.raises(PublishError):
        p.receive(b"hello\r\n\r\n")


PUBLISH_ANSWERS = [
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 34\r\n\r\n"
    b'{"channel":"news","subscribers":3}',
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nconnection: close\r\n\r\nbusy",
    CHUNKED,
    SIZED,
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
]


def read_publish(p: HttpPublisher, data: bytes, bytewise: bool) -> object:
    try:
        for piece in pieces(data, bytewise):
            answer = p.receive(piece)
            if answer is not None:
                return ("answer", answer)
        return ("incomplete",)
    except PublishError as exc:
        return ("error", str(exc)[:20])


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("index", range(len(PUBLISH_ANSWERS)))
def test_publish_answers_read_directly_or_by_h11_alike(index: int, bytewise: bool) -> None:
    data = PUBLISH_ANSWERS[index]
    assert read_publish(publisher_posted(), data, bytewise) == \
        read_publish(h11_publisher(), data, bytewise)


def publisher_posted() -> HttpPublisher:
    p = publisher()
    p.post(b"body")
    return p


def h11_publisher() -> HttpPublisher:
    """A publisher already reading through h11 (as after an answer it could not read)."""
    p = publisher()
    p.post(b"body")
    p.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert p._http is not None
    p.post(b"body")
    return p


def test_the_common_answer_makes_no_h11() -> None:
    p = publisher_posted()
    for _ in range(3):
        assert p.receive(PUBLISH_ANSWERS[0]) == Answer(200, keep_alive=True)
        p.post(b"body")
    assert p._http is None
