"""The Python face of ringio's C core: one `Loop` per process (or per thread).

Python crosses into C once per batch, never per delivery: `fanout` hands C a
slot and an array of connection ids, and `reap` returns every event of one
wait as a list of tuples. Nothing here knows of WebSocket or HTTP.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import struct
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NewType, Protocol

from typing_extensions import Buffer

from ringcast.ringio._ringio import ffi, lib
from ringcast.ringio.errors import RingioError, RingUnavailable, open_failed, reap_failed

if TYPE_CHECKING:
    from ringcast.ringio._ringio import LoopHandle, Stats

ConnId = NewType("ConnId", int)
"""A connection's id in the loop's table (listeners have one too): a small integer,
reused for a new connection once the old one is reported CLOSED."""

NO_CONN: Final = ConnId(0xFFFFFFFF)
"""No connection (UINT32_MAX): pass as ``exclude`` to exclude nobody."""

# io_uring setup flags (linux/io_uring.h): what we ask for first.
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_SUBMIT_ALL = 1 << 7
IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
DEFAULT_SETUP_FLAGS = (
    IORING_SETUP_SINGLE_ISSUER
    | IORING_SETUP_DEFER_TASKRUN
    | IORING_SETUP_COOP_TASKRUN
    | IORING_SETUP_SUBMIT_ALL
    | IORING_SETUP_CLAMP
)
_FLAG_NAMES = {
    1 << 3: "CQSIZE", IORING_SETUP_CLAMP: "CLAMP", IORING_SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    IORING_SETUP_COOP_TASKRUN: "COOP_TASKRUN", IORING_SETUP_SINGLE_ISSUER: "SINGLE_ISSUER",
    IORING_SETUP_DEFER_TASKRUN: "DEFER_TASKRUN",
}


class Engine(enum.IntEnum):
    IO_URING = 0
    EPOLL = 1


class EventKind(enum.IntEnum):
    """What an `Event` reports: RIO_EV_* in csrc/ringio_api.h."""

    #: conn: the new id, res: its fd, aux: the listener's id
    ACCEPT = lib.RIO_EV_ACCEPT
    #: conn, data: the bytes received
    DATA = lib.RIO_EV_DATA
    #: conn, res: 0 on EOF, else an errno
    HUP = lib.RIO_EV_HUP
    #: conn, aux: the bytes queued when a capped send was refused
    OVERFLOW = lib.RIO_EV_OVERFLOW
    #: conn: the listener, res: an errno; accepting stopped, call resume_accept() later
    ACCEPT_ERROR = lib.RIO_EV_ACCEPT_ERROR
    #: conn: the listener; a connection arrived with the id table full and was closed
    REFUSED = lib.RIO_EV_REFUSED
    #: conn: an id the caller closed is free (flush and linger over); it may be reused
    CLOSED = lib.RIO_EV_CLOSED
    #: conn: nothing arrived within the timeout after a heartbeat; its heartbeats are off
    HEARTBEAT_TIMEOUT = lib.RIO_EV_HEARTBEAT_TIMEOUT


# reap() maps the kind of each C event through this dict, not through
# EventKind(kind), which costs a call per event.
_KIND: Final[dict[int, EventKind]] = {kind.value: kind for kind in EventKind}


class Event(NamedTuple):
    kind: EventKind
    conn: ConnId
    res: int
    aux: int
    data: bytes


class Received(Protocol):
    """The bytes a reap received, where the C core put them (see `Loop.reap_raw`): a
    `Buffer` for C, sliced into bytes for Python."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


RawEvent = tuple[int, ConnId, int, int, int]
"""An event as `Loop.reap_raw` returns it: (kind, conn, res, length, aux); kind is an
`EventKind` value."""


@dataclass(frozen=True)
class LoopParams:
    engine: Engine = Engine.IO_URING
    max_conns: int = 10_000
    sq_entries: int = 4096
    cq_entries: int = 32768
    buf_count: int = 4096
    buf_size: int = 4096
    arena_size: int = 4 << 20
    zc_threshold: int = 16384
    zc_keep: bool = False
    zc_loopback: bool = False
    data_capacity: int = 4 << 20
    setup_flags: int = DEFAULT_SETUP_FLAGS
    event_limit: int = 0
    """Events held at once, at most (0: as many as memory allows). For tests: a small
    limit (>= 3) takes the paths an out-of-memory event array takes."""


@dataclass(frozen=True)
class Probe:
    """What the loop found at setup; ``str()`` is a report a user can read."""

    engine: Engine
    setup_flags: int
    features: int
    sq_entries: int
    cq_entries: int
    kernel_major: int
    kernel_minor: int
    ring_fd_registered: bool
    fixed_files: int
    fixed_files_errno: int
    has_send_zc: bool
    has_recv_multishot: bool
    has_accept_multishot: bool
    arena_registered: bool
    arena_errno: int
    zc_enabled: bool

    def flag_names(self) -> list[str]:
        return [name for bit, name in _FLAG_NAMES.items() if self.setup_flags & bit]

    def _fixed_files_text(self) -> str:
        if self.fixed_files:
            return f"{self.fixed_files} table slots"
        if self.fixed_files_errno == errno.EOPNOTSUPP:
            return "no (needs kernel >= 6.13)"
        return f"no ({_strerror(self.fixed_files_errno)})"

    def __str__(self) -> str:
        if self.engine is Engine.EPOLL:
            return "engine: epoll"
        lines = [
            f"engine: io_uring (kernel {self.kernel_major}.{self.kernel_minor})",
            f"setup flags: {' | '.join(self.flag_names()) or 'none'}",
            f"ring: {self.sq_entries} SQ / {self.cq_entries} CQ entries, "
            f"ring fd registered: {'yes' if self.ring_fd_registered else 'no'}",
            f"fixed files: {self._fixed_files_text()}",
            f"multishot accept: {'yes' if self.has_accept_multishot else 'no'}, "
            f"multishot recv: {'yes' if self.has_recv_multishot else 'no'}",
            f"SEND_ZC opcode: {'yes' if self.has_send_zc else 'no'}, "
            f"arena registered: {'yes' if self.arena_registered else 'no'}"
            + (f" ({_strerror(self.arena_errno)})" if self.arena_errno else ""),
            f"zero-copy sends: {'on' if self.zc_enabled else 'off'}"
            + ("" if self.zc_enabled
               else " (needs kernel >= 6.10, SEND_ZC and a registered arena)"),
        ]
        return "\n".join(lines)


def _strerror(err: int) -> str:
    return os.strerror(err)


_EVENT = struct.Struct("=IIiIQ")
assert _EVENT.size == ffi.sizeof("rio_event")
_DATA: Final = lib.RIO_EV_DATA
_STAT_NAMES = [f[0] for f in ffi.typeof("rio_stats").fields]


class Loop:
    """A ring (or epoll set), its connection ids, frame slots and send queues.

    Ownership: `listen` and `adopt` take the socket's fd; the loop closes it.
    Slots: `slot` returns a handle holding the caller's reference; queueing it
    to connections takes more; `release` drops the caller's. A slot's memory is
    freed when the last reference goes.
    """

    def __init__(self, params: LoopParams = LoopParams()) -> None:
        p = ffi.new("rio_params *")
        for f in fields(params):
            setattr(p, f.name, int(getattr(params, f.name)))
        err = ffi.new("int *")
        stage = ffi.new("int *")
        handle = lib.rio_open(p, err, stage)
        if handle == ffi.NULL:
            raise open_failed(err[0], stage[0], uring=params.engine is Engine.IO_URING)
        self._l: LoopHandle | None = handle
        self._stats: Stats | None = lib.rio_get_stats(handle)
        # The received bytes of one reap, in C memory allocated once (rio_data): each
        # DATA event's bytes are sliced from it, one copy (not the region, then a slice).
        self._data: Any = ffi.buffer(lib.rio_data(handle), params.data_capacity)
        self.params = params
        self.engine = params.engine
        self._socks: dict[int, socket.socket] = {}

    # -- lifecycle --------------------------------------------------------

    @property
    def _loop(self) -> LoopHandle:
        if self._l is None:
            raise RingioError(errno.EBADF, "the loop is closed")
        return self._l

    def close(self) -> None:
        """Close every socket and free the loop. Idempotent; any later call raises."""
        if self._l is not None:
            lib.rio_destroy(self._l)
            self._l = None
            self._stats = None
            self._data = None
            for s in self._socks.values():
                s.detach()
            self._socks.clear()

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self) -> Probe:
        out = ffi.new("rio_probe *")
        lib.rio_get_probe(self._loop, out)
        values: dict[str, Any] = {f.name: getattr(out, f.name) for f in fields(Probe)}
        values["engine"] = Engine(values["engine"])
        for name in ("ring_fd_registered", "has_send_zc", "has_recv_multishot",
                     "has_accept_multishot", "arena_registered", "zc_enabled"):
            values[name] = bool(values[name])
        return Probe(**values)

    def stats(self) -> dict[str, int]:
        """The loop's counters (rio_stats in csrc/ringio_api.h says what each counts)."""
        self._loop  # noqa: B018 - raises once closed: the stats lived in the loop
        s = self._stats
        return {name: int(getattr(s, name)) for name in _STAT_NAMES}

    # -- sockets ----------------------------------------------------------

    def listen(self, sock: socket.socket) -> ConnId:
        """Accept on a listening socket; returns its id. The loop owns the fd."""
        return self._own(sock, lib.rio_listen(self._loop, sock.fileno()))

    def adopt(self, sock: socket.socket) -> ConnId:
        """Receive and send on a connected socket; returns its id. The loop owns the fd."""
        return self._own(sock, lib.rio_adopt(self._loop, sock.fileno()))

    def _own(self, sock: socket.socket, rc: int) -> ConnId:
        if rc < 0:
            raise RingioError(-rc, _strerror(-rc))
        sock.detach()
        return ConnId(rc)

    def resume_accept(self, listener: ConnId) -> None:
        _check(lib.rio_resume_accept(self._loop, listener))

    def close_connection(self, conn: ConnId, *, flush: bool = False,
                         abort: bool = False) -> None:
        """Close a connection.

        Default: what is queued is dropped; the peer gets what the kernel already
        holds, then EOF. ``flush``: the queued bytes go out first, then EOF, and the
        connection lingers until the peer closes too. ``abort``: everything is
        dropped, the kernel's send buffer too, and the peer gets a reset; for a
        peer that stopped reading, whose buffers would otherwise outlive the fd.
        """
        if flush and abort:
            raise ValueError("close_connection(): flush and abort exclude each other")
        how = lib.RIO_CLOSE_FLUSH if flush else lib.RIO_CLOSE_ABORT if abort else lib.RIO_CLOSE_HARD
        lib.rio_close(self._loop, conn, how)

    def trim(self, conn: ConnId) -> int:
        """Drop the queued frames that have not started going out; return their bytes.

        What is already on its way (a send in flight, a partly written frame)
        stays, so the next thing queued (a close frame) follows whole frames.
        """
        return max(0, int(lib.rio_trim(self._loop, conn)))

    def generation(self, conn: ConnId) -> int:
        """The id's current generation, -1 if the id is free."""
        return max(-1, int(lib.rio_generation(self._loop, conn)))

    def queued(self, conn: ConnId) -> int:
        """Bytes queued to ``conn`` and not sent yet (0 for an id that is not open)."""
        n = lib.rio_queued(self._loop, conn)
        return n if n > 0 else 0

    # -- sending ----------------------------------------------------------

    def slot(self, data: bytes) -> int:
        """Copy ``data`` (one frame or a run of frames) into a new slot."""
        return int(_check(lib.rio_slot_new(self._loop, data, len(data))))

    def release(self, slot: int) -> None:
        lib.rio_slot_put(self._loop, slot)

    def fanout(self, slot: int, conns: Buffer, count: int, *, exclude: ConnId = NO_CONN,
               cap: int = 0, force: bool = False) -> int:
        """Queue ``slot`` to the first ``count`` uint32 ids of ``conns`` and submit.

        A connection whose queue would pass ``cap`` bytes is skipped and counted
        as a drop (and reported once as an OVERFLOW event) unless ``force``.
        Returns how many connections it was queued to.
        """
        ids = ffi.from_buffer("uint32_t[]", conns)
        if not 0 <= count <= len(ids):
            raise ValueError(f"count {count} is outside the {len(ids)} ids given")
        return int(_check(lib.rio_fanout(self._loop, slot, ids, count, exclude, cap, int(force))))

    def send(self, conn: ConnId, data: bytes, *, cap: int = 0, force: bool = False) -> bool:
        """Queue bytes to one connection; False if the cap refused them."""
        return bool(_check(lib.rio_send(self._loop, conn, data, len(data), cap, int(force))))

    def send_hook(self) -> tuple[int, int]:
        """The addresses of ``rio_send`` and of this loop's handle: C code given them
        queues bytes as `send` does (``force`` is ``RIO_SEND_FORCE``), without a call
        into Python per send. (The load tester's scanner answers pings with them.) Valid
        until the loop is closed."""
        return (int(ffi.cast("uintptr_t", ffi.addressof(lib, "rio_send"))),
                int(ffi.cast("uintptr_t", self._loop)))

    # -- heartbeats -------------------------------------------------------

    def heartbeat_config(self, interval: float, timeout: float, data: bytes = b"",
                         absorb: int = 0) -> None:
        """Keep connections alive without a call per connection (rio_heartbeat_config in
        csrc/ringio_api.h): ``data`` goes to every connection with heartbeats on that
        received nothing for ``interval`` seconds; one still silent ``timeout`` seconds
        later is reported (`EventKind.HEARTBEAT_TIMEOUT`). ``absorb``: the address of a
        C function that recognises the replies (dropped, no DATA event). An
        ``interval`` of 0 turns heartbeats off."""
        interval_ms = max(0, round(interval * 1000))
        if not interval_ms:
            _check(lib.rio_heartbeat_config(self._loop, 0, 0, -1, 0))
            return
        slot = self.slot(data)
        try:
            _check(lib.rio_heartbeat_config(self._loop, interval_ms,
                                            max(1, round(timeout * 1000)), slot, absorb))
        finally:
            self.release(slot)  # the loop holds its own reference

    def heartbeat(self, conn: ConnId, on: bool, *, aligned: bool = True) -> bool:
        """Heartbeats on or off for ``conn`` (on: it counts as alive now); ``aligned``:
        what it sends next starts where the absorber reads (a frame boundary). False
        when ``conn`` is not an open connection."""
        return lib.rio_heartbeat(self._loop, conn, int(on), int(aligned)) == 0

    # -- waiting ----------------------------------------------------------

    def reap(self, timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` seconds (None: forever) and return the events.

        Raises `RingioError` when the loop has failed (the kernel refused its work:
        see rio_reap in csrc/ringio_api.h); it then raises again on every call, and
        the loop can only be closed.
        """
        raw = self._reap(timeout)
        if raw is None:
            return []
        data = self._data
        # tuple.__new__ straight: a NamedTuple's own __new__ is one more Python call per
        # event, and a storm is thousands of events a reap.
        new = tuple.__new__
        return [
            new(Event, (_KIND[kind], conn, res, aux,
                        data[aux:aux + length] if kind == _DATA else b""))
            for kind, conn, res, length, aux in _EVENT.iter_unpack(raw)
        ]

    @property
    def behind(self) -> bool:
        """The last `reap` left bytes that had arrived unread (no room for their events,
        receives waiting to be re-armed, io_uring task_work its last enter left, a full
        epoll batch): the next reap has more at once. Time out a
        silent peer only when this is False: its bytes may be among those (the loop's
        heartbeats wait so too)."""
        return bool(lib.rio_behind(self._loop))

    def reap_raw(self, timeout: float | None) -> tuple[list[RawEvent], Received]:
        """`reap` without copying any bytes, for a consumer that reads them where they lie
        (the load tester's scanner, in C): the events as the C core wrote them, and the
        buffer of the bytes received, valid until the next reap. A DATA event's bytes
        are ``received[aux:aux + length]``; `event` makes an `Event` of a raw one.
        """
        raw = self._reap(timeout)
        return ([] if raw is None else list(_EVENT.iter_unpack(raw))), self._data

    def event(self, raw: RawEvent) -> Event:
        """The `Event` of a raw event from the last `reap_raw` (its bytes copied)."""
        kind, conn, res, length, aux = raw
        return Event(_KIND[kind], ConnId(conn), res, aux,
                     self._data[aux:aux + length] if kind == _DATA else b"")

    def _reap(self, timeout: float | None) -> Any:
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        n = lib.rio_reap(self._loop, ms)
        if n < 0:
            raise reap_failed(-n, uring=self.engine is Engine.IO_URING)
        return ffi.buffer(lib.rio_events(self._loop), n * _EVENT.size) if n else None


def _check(rc: int) -> int:
    if rc < 0:
        raise RingioError(-rc, _strerror(-rc))
    return rc


def probe(engine: Engine = Engine.IO_URING) -> Probe | RingUnavailable:
    """Create a small loop and report what the kernel offers, or why it can't."""
    try:
        with Loop(LoopParams(engine=engine, max_conns=16, sq_entries=8, cq_entries=16,
                             buf_count=8, buf_size=4096, arena_size=1 << 16,
                             data_capacity=1 << 16)) as loop:
            return loop.probe()
    except RingUnavailable as exc:
        return exc


__all__ = [
    "NO_CONN", "ConnId", "Engine", "Event", "EventKind", "Loop", "LoopParams", "Probe", "RawEvent",
    "Received", "probe",
]
