"""ringio: io_uring fan-out for Python (cffi over liburing), with an epoll twin.

It knows nothing of WebSocket, HTTP or configuration, and imports nothing else
from ringcast: it could be published alone. See `loop.Loop` for the contract.
"""

from ringcast.ringio.errors import RingioError, RingUnavailable
from ringcast.ringio.loop import (
    NO_CONN,
    ConnId,
    Engine,
    Event,
    EventKind,
    Loop,
    LoopParams,
    Probe,
    RawEvent,
    probe,
)

__all__ = [
    "NO_CONN",
    "ConnId",
    "Engine",
    "Event",
    "EventKind",
    "Loop",
    "LoopParams",
    "Probe",
    "RawEvent",
    "RingUnavailable",
    "RingioError",
    "probe",
]
