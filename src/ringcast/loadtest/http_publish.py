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


class PublishError(Exception):
    """The server's bytes are not an HTTP answer to our request."""


class Answer(NamedTuple):
    status: int
    keep_alive: bool        # the connection can carry the next request


class HttpPublisher:
    """The HTTP of one publishing connection: ``size``-byte bodies POSTed to ``path``."""

    def __init__(self, target: Target, path: str, size: int) -> None:
        self._http = h11.Connection(h11.CLIENT)
        self._request = h11.Request(method="POST", target=path, headers=[
            ("Host", target.host_header), ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(size)), ("User-Agent", "ringcast-loadtest"),
        ])
        self._status = 0

    def post(self, body: bytes) -> bytes:
        """The bytes of one POST of ``body``; the previous answer must have come."""
        http = self._http
        return http.send(self._request) + http.send(h11.Data(data=body)) + http.send(_END)

    def receive(self, data: bytes) -> Answer | None:
        """Feed bytes from the server: the answer once it is complete, else None.
        Raises `PublishError` for bytes that are not one (or come unasked)."""
        http = self._http
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
