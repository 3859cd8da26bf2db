"""Limits on an HTTP request head, enforced on the raw bytes as they arrive.

h11 bounds only the size of an *incomplete* head, and one number covers the request
line and the headers together. :class:`HeadGuard` reads the same bytes line by line and
decides exactly, whatever way the bytes were cut:

- request line (method, target, version; without its line ending) longer than
  ``max_request_line``: 414 URI Too Long (RFC 9112 section 3: a server that receives a
  request-target longer than it wishes to parse responds 414);
- header section (every header line with its line ending; not the request line, not the
  empty line that ends the head) larger than ``max_header_size``: 431 (RFC 6585 section 5);
- more than ``max_headers`` header lines: 431.

A line ends at LF (an optional CR before it belongs to the line ending), as in h11. The
guard decides as soon as a limit is certainly crossed, before the line is complete, so
a client cannot make the server buffer an endless line. It validates nothing else: h11
parses the head.
"""

from __future__ import annotations

from typing import Final

from .refusals import Refusal

__all__ = ["HeadGuard", "HeadLimitError"]

_LF: Final = 0x0A
_CR: Final = 0x0D


class HeadLimitError(Exception):
    """A limit was crossed: answer ``status`` with ``str(error)`` and close."""

    def __init__(self, refusal: Refusal, status: int, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.status = status


class HeadGuard:
    """Checks one request head at a time; :meth:`start` it at the start of each head."""

    __slots__ = (
        "_active",
        "_count",
        "_cr",
        "_in_request_line",
        "_line",
        "_size",
        "max_header_size",
        "max_headers",
        "max_request_line",
    )

    def __init__(self, max_request_line: int, max_header_size: int, max_headers: int) -> None:
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self._active = True
        self._in_request_line = True
        self._line = 0  # bytes of the current line so far, line ending excluded but a CR
        self._cr = False  # the last byte seen was a CR
        self._size = 0  # header section bytes so far (complete lines)
        self._count = 0  # header lines so far

    def start(self) -> None:
        """A new request head begins with the next byte fed."""
        self._active = True
        self._in_request_line = True
        self._line = self._size = self._count = 0
        self._cr = False

    @property
    def active(self) -> bool:
        """False once the head's empty line was seen: bytes are then ignored until
        :meth:`start`."""
        return self._active

    def feed(self, data: bytes) -> None:
        """Take the next bytes; raise :exc:`HeadLimitError` when a limit is crossed."""
        pos = 0
        end = len(data)
        while self._active and pos < end:
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += end - pos
                self._cr = data[end - 1] == _CR
                self._check_partial()
                return
            if newline > pos:
                self._cr = data[newline - 1] == _CR
            length = self._line + newline - pos - self._cr  # the line without its ending
            self._line_done(length, length + self._cr + 1)
            self._line = 0
            self._cr = False
            pos = newline + 1

    def _check_partial(self) -> None:
        # The line is not complete: ``_line`` bytes so far, maybe with the CR of its ending.
        if self._in_request_line:
            if self._line - self._cr > self.max_request_line:
                self._request_line_too_long()
        elif self._line > self._cr and self._size + self._line + 1 > self.max_header_size:
            # A header line, not the empty line: it ends with at least an LF more.
            self._headers_too_large()

    def _line_done(self, length: int, with_ending: int) -> None:
        if self._in_request_line:
            if length > self.max_request_line:
                self._request_line_too_long()
            self._in_request_line = False
            return
        if length == 0:  # the empty line: the head is complete
            self._active = False
            return
        self._count += 1
        self._size += with_ending
        if self._count > self.max_headers:
            msg = f"request has more than {self.max_headers} header lines"
            raise HeadLimitError(Refusal.TOO_MANY_HEADERS, 431, msg)
        if self._size > self.max_header_size:
            self._headers_too_large()

    def _request_line_too_long(self) -> None:
        msg = f"request line exceeds {self.max_request_line} bytes"
        raise HeadLimitError(Refusal.REQUEST_LINE_TOO_LONG, 414, msg)

    def _headers_too_large(self) -> None:
        msg = f"request header section exceeds {self.max_header_size} bytes"
        raise HeadLimitError(Refusal.HEADERS_TOO_LARGE, 431, msg)
