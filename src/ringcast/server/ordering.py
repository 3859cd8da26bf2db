"""One order per history channel across the workers of a host: the channel's owner.

Without history, a message published on a worker goes from there to every other worker
(:mod:`.peers`), and each worker's subscribers see each publisher's messages in order;
two publishers on two workers may interleave differently on different workers. A channel
that keeps history (:mod:`.history`) needs one order, because positions name places in
it. So such a channel has an **owner**, one worker chosen by a hash of its name
(:func:`owner_of`), which alone decides the order and keeps the history:

- A message published on another worker is forwarded to the owner (``FORWARD``) and not
  delivered where it was published. The owner gives it its position, keeps it, delivers
  it to its own subscribers and sends it, with its position, to every other worker
  (``SEQUENCED``); each delivers it to its subscribers. The worker it came from answers
  its publisher then (``POST /publish``, a ``published`` reply), matched by a ticket.
- A ``ringcast.v1`` client of another worker subscribes through the owner (``JOIN``): the
  owner answers (``JOINED``) with the channel's position and, for a resume, the frames
  after ``since``; the worker sends those to the client and subscribes it. Records from
  one worker to another travel in order on one link, so every ``SEQUENCED`` record the
  owner sent before its ``JOINED`` (offsets up to the position it gives) arrives before
  it, and every later one after it: no gap and no duplicate at the seam.

What the owner does not answer within :data:`TICKET_TIMEOUT` (it is restarting, its
link is down) fails: ``POST /publish`` gets a 503, a command an ``unavailable`` error.
A restarted owner starts the channel's history again, in a new epoch.

Bodies of the records (network byte order; the record's channel names the channel)::

    FORWARD    origin:u16 ticket:u64 frame
    SEQUENCED  origin:u16 ticket:u64 epoch_len:u8 epoch offset:u64 frame_len:u32 frame v1
    JOIN       origin:u16 ticket:u64 has_since:u8 [epoch_len:u8 epoch offset:u64]
    JOINED     ticket:u64 recovered:u8 epoch_len:u8 epoch offset:u64 frames

``recovered`` is 0 (not recovered), 1 (recovered: ``frames`` follow), 2 (no ``since``).
Sans-I/O: bytes in, values out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ringcast.server.history import Position

__all__ = [
    "TICKET_TIMEOUT",
    "Joined",
    "Sequenced",
    "Tickets",
    "decode_forward",
    "decode_join",
    "decode_joined",
    "decode_sequenced",
    "encode_forward",
    "encode_join",
    "encode_joined",
    "encode_sequenced",
    "owner_of",
]

TICKET_TIMEOUT = 5.0
"""Seconds a worker waits for a channel's owner to answer."""

_ORIGIN = struct.Struct("!HQ")
_EPOCH_LEN = struct.Struct("!B")
_OFFSET = struct.Struct("!Q")
_FRAME_LEN = struct.Struct("!I")
_JOINED = struct.Struct("!QB")


def owner_of(channel: str, workers: int) -> int:
    """The worker that orders ``channel`` (crc32: the same in every worker process,
    unlike ``hash()``, which is salted per process)."""
    return zlib.crc32(channel.encode()) % workers


def _position(position: Position) -> bytes:
    epoch = position.epoch.encode()
    return _EPOCH_LEN.pack(len(epoch)) + epoch + _OFFSET.pack(position.offset)


def _read_position(body: bytes, at: int) -> tuple[Position, int]:
    (n,) = _EPOCH_LEN.unpack_from(body, at)
    at += 1
    epoch = body[at:at + n].decode()
    at += n
    (offset,) = _OFFSET.unpack_from(body, at)
    return Position(epoch, offset), at + 8


def encode_forward(origin: int, ticket: int, frame: bytes) -> bytes:
    return _ORIGIN.pack(origin, ticket) + frame


def decode_forward(body: bytes) -> tuple[int, int, bytes]:
    origin, ticket = _ORIGIN.unpack_from(body)
    return origin, ticket, body[_ORIGIN.size:]


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A message as its owner ordered it."""

    origin: int
    ticket: int
    position: Position
    frame: bytes
    v1: bytes


def encode_sequenced(origin: int, ticket: int, position: Position, frame: bytes,
                     v1: bytes) -> bytes:
    return (_ORIGIN.pack(origin, ticket) + _position(position) + _FRAME_LEN.pack(len(frame))
            + frame + v1)


def decode_sequenced(body: bytes) -> Sequenced:
    origin, ticket = _ORIGIN.unpack_from(body)
    position, at = _read_position(body, _ORIGIN.size)
    (n,) = _FRAME_LEN.unpack_from(body, at)
    at += 4
    return Sequenced(origin, ticket, position, body[at:at + n], body[at + n:])


def encode_join(origin: int, ticket: int, since: Position | None) -> bytes:
    head = _ORIGIN.pack(origin, ticket)
    return head + b"\x00" if since is None else head + b"\x01" + _position(since)


def decode_join(body: bytes) -> tuple[int, int, Position | None]:
    origin, ticket = _ORIGIN.unpack_from(body)
    if body[_ORIGIN.size] == 0:
        return origin, ticket, None
    since, _ = _read_position(body, _ORIGIN.size + 1)
    return origin, ticket, since


@dataclass(frozen=True, slots=True)
class Joined:
    """The owner's answer to a ``JOIN``: ``recovered`` None when no ``since`` was given;
    ``frames``: the ``message`` frames after ``since``, when recovered."""

    ticket: int
    recovered: bool | None
    position: Position
    frames: bytes


def encode_joined(ticket: int, recovered: bool | None, position: Position,
                  frames: bytes) -> bytes:
    flag = 2 if recovered is None else int(recovered)
    return _JOINED.pack(ticket, flag) + _position(position) + frames


def decode_joined(body: bytes) -> Joined:
    ticket, flag = _JOINED.unpack_from(body)
    position, at = _read_position(body, _JOINED.size)
    return Joined(ticket, None if flag == 2 else bool(flag), position, body[at:])


T = TypeVar("T")


class Tickets(Generic[T]):
    """What this worker waits for from owners: ticket -> (owner, deadline, what). The
    ticket numbers are this worker's own (the owner echoes them)."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, tuple[int, float, T]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, owner: int, deadline: float, what: T) -> int:
        self._next += 1
        self._waiting[self._next] = (owner, deadline, what)
        return self._next

    def pop(self, ticket: int) -> T | None:
        found = self._waiting.pop(ticket, None)
        return None if found is None else found[2]

    def expire(self, now: float, owner_down: Callable[[int], bool]) -> list[T]:
        """Take what waited past its deadline, or on an owner whose link is down."""
        gone = [t for t, (owner, deadline, _) in self._waiting.items()
                if now >= deadline or owner_down(owner)]
        return [self._waiting.pop(t)[2] for t in gone]
