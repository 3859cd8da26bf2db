# Types of ringcast.ringio._ringio, the cffi extension _build.py builds from
# csrc/ringio_api.h.
#
# C values map to Python as cffi maps them: integers of every width are int, a
# `const char *` parameter takes bytes, and each pointer the Python side holds
# is a handle of its own class here, so that mypy tells a loop from a struct or
# an array. None of these classes exists at run time (they are all cffi cdata
# objects): they only name what a value is. tests/kernel/test_stub.py checks
# this file against the library.
from typing import Literal, final, overload, type_check_only

from typing_extensions import Buffer

@type_check_only
class CPointer:
    """Any cdata pointer; ``ffi.NULL`` is one. Handles compare equal to ``ffi.NULL``
    when C returned NULL."""

    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...

@final
@type_check_only
class LoopHandle(CPointer):
    """``rio_loop *``: the loop, opaque; every function takes it first."""

@final
@type_check_only
class CFunction(CPointer):
    """A C function's address, from ``ffi.addressof(lib, name)``."""

@final
@type_check_only
class IntOut(CPointer):
    """``int *`` from ``ffi.new("int *")``: an out-parameter, read as ``p[0]``."""

    def __getitem__(self, index: Literal[0], /) -> int: ...

@final
@type_check_only
class ConnIds(CPointer):
    """``uint32_t[]`` from ``ffi.from_buffer``: connection ids, sharing the buffer's memory."""

    def __len__(self) -> int: ...

@final
@type_check_only
class EventArray(CPointer):
    """``rio_event *`` from rio_events(): read through ``ffi.buffer``."""

@final
@type_check_only
class DataArray(CPointer):
    """``const char *`` from rio_data(): read through ``ffi.buffer``."""

@final
@type_check_only
class Params(CPointer):
    """``rio_params *`` from ``ffi.new("rio_params *")``."""

    sq_entries: int
    cq_entries: int
    buf_count: int
    buf_size: int
    arena_size: int
    max_conns: int
    zc_threshold: int
    zc_keep: int
    zc_loopback: int
    data_capacity: int
    engine: int
    setup_flags: int
    event_limit: int

@final
@type_check_only
class ProbeOut(CPointer):
    """``rio_probe *`` from ``ffi.new("rio_probe *")``, filled by rio_get_probe()."""

    @property
    def engine(self) -> int: ...
    @property
    def setup_flags(self) -> int: ...
    @property
    def features(self) -> int: ...
    @property
    def sq_entries(self) -> int: ...
    @property
    def cq_entries(self) -> int: ...
    @property
    def kernel_major(self) -> int: ...
    @property
    def kernel_minor(self) -> int: ...
    @property
    def ring_fd_registered(self) -> int: ...
    @property
    def fixed_files(self) -> int: ...
    @property
    def fixed_files_errno(self) -> int: ...
    @property
    def has_send_zc(self) -> int: ...
    @property
    def has_recv_multishot(self) -> int: ...
    @property
    def has_accept_multishot(self) -> int: ...
    @property
    def arena_registered(self) -> int: ...
    @property
    def arena_errno(self) -> int: ...
    @property
    def zc_enabled(self) -> int: ...

@final
@type_check_only
class Stats(CPointer):
    """``const rio_stats *`` from rio_get_stats(): live counters, valid while the loop is."""

    @property
    def submits(self) -> int: ...
    @property
    def sqes(self) -> int: ...
    @property
    def cqes(self) -> int: ...
    @property
    def waits(self) -> int: ...
    @property
    def accepts(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def recv_bytes(self) -> int: ...
    @property
    def enobufs(self) -> int: ...
    @property
    def rearms(self) -> int: ...
    @property
    def sends(self) -> int: ...
    @property
    def send_bytes(self) -> int: ...
    @property
    def short_sends(self) -> int: ...
    @property
    def coalesced(self) -> int: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def drops(self) -> int: ...
    @property
    def overflows(self) -> int: ...
    @property
    def zc_sends(self) -> int: ...
    @property
    def zc_copied(self) -> int: ...
    @property
    def slots_live(self) -> int: ...
    @property
    def slots_heap(self) -> int: ...
    @property
    def arena_used(self) -> int: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def conns_live(self) -> int: ...
    @property
    def events_deferred(self) -> int: ...
    @property
    def submit_retries(self) -> int: ...
    @property
    def submit_errors(self) -> int: ...
    @property
    def heartbeats(self) -> int: ...
    @property
    def heartbeat_replies(self) -> int: ...
    @property
    def heartbeat_timeouts(self) -> int: ...
    @property
    def heartbeat_unjudged(self) -> int: ...

@final
@type_check_only
class CBuffer:
    """What ``ffi.buffer`` returns: C memory seen as bytes, without a copy."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

@final
@type_check_only
class CField:
    offset: int

@final
@type_check_only
class CStructType:
    """What ``ffi.typeof`` returns for a struct: its fields, in order."""

    fields: list[tuple[str, CField]]

@final
@type_check_only
class _FFI:
    """The few ``ffi`` methods ringio calls, with the C types it passes them."""

    NULL: CPointer
    @overload
    def new(self, cdecl: Literal["rio_params *"], /) -> Params: ...
    @overload
    def new(self, cdecl: Literal["rio_probe *"], /) -> ProbeOut: ...
    @overload
    def new(self, cdecl: Literal["int *"], /) -> IntOut: ...
    def from_buffer(self, cdecl: Literal["uint32_t[]"], python_buffer: Buffer, /) -> ConnIds: ...
    def buffer(self, cdata: EventArray | DataArray, size: int, /) -> CBuffer: ...
    def sizeof(self, cdecl: Literal["rio_event"], /) -> int: ...
    def addressof(self, lib: _Lib, name: Literal["rio_send"], /) -> CFunction: ...
    def cast(self, cdecl: Literal["uintptr_t"], value: LoopHandle | CFunction, /) -> int: ...
    def typeof(self, cdecl: Literal["rio_params", "rio_probe", "rio_stats"], /) -> CStructType: ...

@final
@type_check_only
class _Lib:
    """csrc/ringio_api.h: its constants and functions."""

    # enum constants
    RIO_EV_ACCEPT: int
    RIO_EV_DATA: int
    RIO_EV_HUP: int
    RIO_EV_OVERFLOW: int
    RIO_EV_ACCEPT_ERROR: int
    RIO_EV_REFUSED: int
    RIO_EV_CLOSED: int
    RIO_EV_HEARTBEAT_TIMEOUT: int
    RIO_STAGE_SETUP: int
    RIO_STAGE_BUFFER_RING: int
    RIO_STAGE_MEMORY: int
    RIO_STAGE_EPOLL: int
    RIO_STAGE_KERNEL: int
    RIO_STAGE_PARAMS: int
    RIO_SEND_CAPPED: int
    RIO_SEND_FORCE: int
    RIO_CLOSE_HARD: int
    RIO_CLOSE_FLUSH: int
    RIO_CLOSE_ABORT: int

    # lifecycle
    def rio_open(self, params: Params, err: IntOut, stage: IntOut, /) -> LoopHandle: ...
    def rio_destroy(self, loop: LoopHandle, /) -> None: ...
    def rio_get_probe(self, loop: LoopHandle, out: ProbeOut, /) -> None: ...
    def rio_get_stats(self, loop: LoopHandle, /) -> Stats: ...

    # sockets (ids are uint32_t; int results are an id/count or -errno)
    def rio_listen(self, loop: LoopHandle, fd: int, /) -> int: ...
    def rio_adopt(self, loop: LoopHandle, fd: int, /) -> int: ...
    def rio_resume_accept(self, loop: LoopHandle, listener: int, /) -> int: ...
    def rio_close(self, loop: LoopHandle, conn: int, how: int, /) -> int: ...
    def rio_queued(self, loop: LoopHandle, conn: int, /) -> int: ...
    def rio_trim(self, loop: LoopHandle, conn: int, /) -> int: ...
    def rio_generation(self, loop: LoopHandle, conn: int, /) -> int: ...

    # slots and sending
    def rio_slot_new(self, loop: LoopHandle, data: bytes, len: int, /) -> int: ...
    def rio_slot_put(self, loop: LoopHandle, slot: int, /) -> None: ...
    def rio_fanout(self, loop: LoopHandle, slot: int, conns: ConnIds, n: int, exclude: int,
                   cap: int, mode: int, /) -> int: ...
    def rio_send(self, loop: LoopHandle, conn: int, data: bytes, len: int, cap: int,
                 mode: int, /) -> int: ...

    # heartbeats
    def rio_heartbeat_config(self, loop: LoopHandle, interval_ms: int, timeout_ms: int,
                             slot: int, absorb: int, /) -> int: ...
    def rio_heartbeat(self, loop: LoopHandle, conn: int, on: int, aligned: int, /) -> int: ...

    # waiting
    def rio_reap(self, loop: LoopHandle, timeout_ms: int, /) -> int: ...
    def rio_behind(self, loop: LoopHandle, /) -> int: ...
    def rio_events(self, loop: LoopHandle, /) -> EventArray: ...
    def rio_data(self, loop: LoopHandle, /) -> DataArray: ...

ffi: _FFI
lib: _Lib
