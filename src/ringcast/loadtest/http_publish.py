"""Publishing over HTTP: the POSTs of one keep-alive connection and their answers, read by h11.

A connection carries one request at a time (h11's client does not pipeline),
which also keeps each HTTP publisher's messages in order on the server. The
answer may come with Content-Length or in chunks, in any number of reads; what
counts is its status and whether the connection stays open for the next request
(an answer that ends only with the connection is counted as the server closing it).
"""

from __future__ import annotations

from typing import NamedTuple

import h11

from ringcast.loadtest.target import Target

_END = h11.EndOfMessage()
_MAX_HEAD = 16 * 1024


class PublishError(Exception):
    """The server's bytes are not an HTTP answer to our request."""


class Answer(NamedTuple):
    status: int
    keep_alive: bool        # the connection can carry the next request


class HttpPublisher:
    """The HTTP of one publishing connection: ``size``-byte bodies of ``content_type``
    POSTed to ``path``.

    The common answer is read directly: ``HTTP/1.1``, plain ``Name: value`` lines, one
    ``Content-Length`` and the whole body, no ``Transfer-Encoding`` and no ``Connection``
    header but ``keep-alive``. The first answer that is anything else makes the connection
    read through h11 from then on (``tests/loadtest/test_http_reading.py`` checks both
    readings agree)."""

    def __init__(self, target: Target, path: str, size: int, *,
                 content_type: str = "application/octet-stream") -> None:
        self._target = target
        self._path = path
        self._size = size
        self._content_type = content_type
        self._head = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\nUser-Agent: ringcast-loadtest\r\n\r\n"
        ) % (path.encode(), target.host_header.encode(), content_type.encode(), size)
        self._http: h11.Connection | None = None
        self._buffer = b""  # the answer so far, until h11 takes over
        self._body = b""  # the last request's body (h11, taking over, is told of it)
        self._status = 0

    def post(self, body: bytes) -> bytes:
        """The bytes of one POST of ``body``; the previous answer must have come."""
        self._body = body
        http = self._http
        if http is None:
            return self._head + body
        return http.send(self._request()) + http.send(h11.Data(data=body)) + http.send(_END)

    def _request(self) -> h11.Request:
        return h11.Request(method="POST", target=self._path, headers=[
            ("Host", self._target.host_header), ("Content-Type", self._content_type),
            ("Content-Length", str(self._size)), ("User-Agent", "ringcast-loadtest"),
        ])

    def receive(self, data: bytes) -> Answer | None:
        """Feed bytes from the server: the answer once it is complete, else None.
        Raises `PublishError` for bytes that are not one (or come unasked)."""
        if self._http is None:
            buffer = self._buffer + data
            answer, complete = _read_plain(buffer)
            if complete:
                self._buffer = b""
                return answer
            if answer is None and complete is None:  # not plain: h11 from now on
                self._buffer = b""
                self._http = http = h11.Connection(h11.CLIENT)
                http.send(self._request())
                http.send(h11.Data(data=self._body))
                http.send(_END)
                return self._receive_h11(buffer)
            self._buffer = buffer
            return None
        return self._receive_h11(data)

    def _receive_h11(self, data: bytes) -> Answer | None:
        http = self._http
        assert http is not None
        http.receive_data(data)
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise PublishError(str(exc)) from None
            if event is h11.NEED_DATA:
                return None
            if type(event) is h11.Response:
                self._status = event.status_code
            elif type(event) is h11.EndOfMessage:
                if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                    return Answer(self._status, keep_alive=False)
                http.start_next_cycle()
                if http.trailing_data[0]:   # would be taken for the next request's answer
                    raise PublishError("bytes after the answer, before the next request")
                return Answer(self._status, keep_alive=True)
            elif event is h11.PAUSED:
                raise PublishError("bytes after the last answer")
            # Data (the body: not needed), an InformationalResponse such as 100 Continue


def _read_plain(buffer: bytes) -> tuple[Answer | None, bool | None]:
    """A plain keep-alive answer at the start of ``buffer`` (see `HttpPublisher`):
    ``(answer, True)`` once complete and alone, ``(None, False)`` while it may still be
    one, ``(None, None)`` when it is not one."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        # Not all here: still possibly plain while it starts as one does and every line
        # so far ends in CRLF.
        maybe = (len(buffer) < _MAX_HEAD and buffer.count(b"\n") == buffer.count(b"\r\n")
                 and (buffer.startswith(b"HTTP/1.1 ") or b"HTTP/1.1 ".startswith(buffer)))
        return None, (False if maybe else None)
    line_end = buffer.find(b"\r\n")
    status_line = buffer[:line_end]
    if not status_line.startswith(b"HTTP/1.1 ") or not status_line[9:12].isdigit() \
            or status_line[12:13] not in (b"", b" ") or status_line[9:10] == b"1":
        return None, None
    length = None
    for line in buffer[line_end + 2 : end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or not name.isascii():
            return None, None
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None, None
            length = int(value)
        elif name == b"transfer-encoding" or (name == b"connection"
                                              and value.lower() != b"keep-alive"):
            return None, None
    if length is None:
        return None, None
    total = end + 4 + length
    if len(buffer) < total:
        return None, False
    if len(buffer) > total:  # bytes after the answer: h11 says what they are
        return None, None
    return Answer(int(status_line[9:12]), keep_alive=True), True
