"""The records workers of one host exchange over their Unix-socket links.

A message published on one worker is framed there once and handed, as a
record holding the channel name and the finished WebSocket frame, to every
other worker, which fans the same bytes out to its own subscribers. Hand-off is
per message, never per subscriber. Workers also share a periodic snapshot of
their counters so that any worker's ``/metrics`` can show every worker.

Record layout (network byte order)::

    kind:u8  channel_len:u16  body_len:u32  channel  body

Sans-I/O: bytes in, records out; no socket, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

KIND_PUBLISH = 1   # body: a complete WebSocket frame (or run of frames)
KIND_STATS = 2     # to the collector: JSON counters of the sending worker; channel: its id
# From the collector to every other worker: every worker's last counters, JSON
# {id: counters}; channel: the collector's id (see .peers).
KIND_HOST_STATS = 7
# A history channel's order, decided by its owner worker (bodies: see .ordering).
KIND_FORWARD = 3    # to the owner: a message to order
KIND_SEQUENCED = 4  # from the owner to every other worker: a message with its position
KIND_JOIN = 5       # to the owner: a ringcast.v1 subscription (maybe a resume)
KIND_JOINED = 6     # from the owner: its answer
ORDERING_KINDS = frozenset({KIND_FORWARD, KIND_SEQUENCED, KIND_JOIN, KIND_JOINED})
_KINDS = frozenset({KIND_PUBLISH, KIND_STATS, KIND_HOST_STATS}) | ORDERING_KINDS

_HEADER = struct.Struct("!BHI")
MAX_BODY = 1 << 30


class LinkProtocolError(Exception):
    """A peer worker sent bytes that are not records (a bug, never user input)."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    channel: str
    body: bytes


def encode_record(kind: int, channel: str, body: bytes) -> bytes:
    name = channel.encode()
    return _HEADER.pack(kind, len(name), len(body)) + name + body


class RecordReader:
    """Accumulates link bytes and yields complete records."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        buf = self._buf
        buf += data
        out: list[Record] = []
        pos = 0
        size = _HEADER.size
        while len(buf) - pos >= size:
            kind, nlen, blen = _HEADER.unpack_from(buf, pos)
            if kind not in _KINDS or blen > MAX_BODY:
                raise LinkProtocolError(f"bad record header: kind {kind}, body {blen} bytes")
            end = pos + size + nlen + blen
            if len(buf) < end:
                break
            start = pos + size
            out.append(Record(kind, bytes(buf[start:start + nlen]).decode(),
                              bytes(buf[start + nlen:end])))
            pos = end
        del buf[:pos]
        return out
