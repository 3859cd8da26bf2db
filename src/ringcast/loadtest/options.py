"""What a run is asked to do: `Options`, checked by `Options.validate`, and `LoadError`."""

from __future__ import annotations

from dataclasses import dataclass

from ringcast.loadtest.connector import DEFAULT_PORTS
from ringcast.loadtest.scanner import JSON_MIN_SIZE, MIN_SIZE, PAYLOADS


class LoadError(Exception):
    """The run cannot start or go on (no connection at all, bad options...)."""


@dataclass(frozen=True)
class Options:
    url: str
    connections: int = 100
    messages: int | None = None
    duration: float | None = None
    size: int = 64
    window: int = 8
    rate: float | None = None
    publisher: str = "ws"                    # "ws" or "http"
    publishers: int = 1
    publish_path: str | None = None          # http: default /publish/<channel>
    http_connections: int = 16
    connect_concurrency: int = 256
    connect_timeout: float = 10.0
    message_timeout: float = 5.0
    drain_timeout: float = 5.0
    max_time: float = 600.0
    engine: str = "auto"                     # "auto", "io_uring" or "epoll"
    server_pids: tuple[int, ...] = ()
    allow_remote: bool = False
    source_addresses: int = 0                # 0: as many as the connection count needs
    progress: bool = True
    processes: int = 0                       # client processes; 0: as the files limit needs
    storm: tuple[float, float] | None = None  # (fraction, seconds): see `storm`
    compression: bool = False                # offer (and require) permessage-deflate
    payload: str = "binary"                  # message format: "binary" or "json"
    bind: str = "auto"                       # source pairs: "auto", "explicit" or "kernel"
    source_ports: tuple[int, int] = DEFAULT_PORTS   # --bind explicit: ports per address
    hold: float = 0.0                        # seconds connected and idle before publishing
    rounds: int | None = None                # rounds: one message per publisher, next
                                             # round once every subscriber has them all
    channel_per_process: bool = False        # process k subscribes to <channel>-k; one
                                             # publisher per channel

    def validate(self) -> None:
        if self.messages is None and self.duration is None and self.rounds is None:
            raise LoadError("give a bound: --rounds, --messages and/or --duration")
        if self.bind not in ("auto", "explicit", "kernel"):
            raise LoadError("--bind is auto, explicit or kernel")
        lo, hi = self.source_ports
        if not 1 <= lo <= hi <= 65535:
            raise LoadError(f"--source-ports {lo}-{hi}: expected FIRST-LAST within 1-65535")
        if not 0 <= self.hold <= self.max_time:
            raise LoadError(f"--hold must be in [0, {self.max_time:g}] seconds")
        if self.channel_per_process:
            if self.publisher != "ws":
                raise LoadError("--channel-per-process publishes over WebSocket (one "
                                "publisher per channel)")
            if self.publishers != 1:
                raise LoadError("--channel-per-process makes one publisher per channel: "
                                "leave --publishers at 1")
        if self.rounds is not None:
            if self.rounds < 1:
                raise LoadError("--rounds must be at least 1")
            if self.rate is not None or self.messages is not None:
                raise LoadError("--rounds is a closed loop of its own: not with --rate or "
                                "--messages")
        if self.connections < 1:
            raise LoadError("--connections must be at least 1")
        if self.messages is not None and self.messages < 0:
            raise LoadError("--messages must be >= 0")
        if self.messages == 0 and self.duration is None:
            raise LoadError("--messages 0 (idle connections) needs --duration")
        if self.duration is not None and not 0 < self.duration <= self.max_time:
            raise LoadError(f"--duration must be in (0, {self.max_time:g}] seconds")
        if self.size < MIN_SIZE:
            raise LoadError(f"--size must be at least {MIN_SIZE} bytes (sequence number, "
                            "timestamp, publisher id and a checked pattern)")
        if self.payload not in PAYLOADS:
            raise LoadError("--payload is binary or json")
        if self.payload == "json" and self.size < JSON_MIN_SIZE:
            raise LoadError(f"--payload json needs --size of at least {JSON_MIN_SIZE} bytes (a "
                            "JSON object with sequence number, timestamp, publisher id and "
                            "one tick)")
        if self.window < 1:
            raise LoadError("--window must be at least 1")
        if self.rate is not None and not 0 < self.rate <= 10_000_000:
            raise LoadError("--rate must be in (0, 10000000] messages/s")
        if self.publisher not in ("ws", "http"):
            raise LoadError("--publisher is ws or http")
        if not 1 <= self.publishers <= 64:
            raise LoadError("--publishers must be in 1..64")
        if self.engine not in ("auto", "io_uring", "epoll"):
            raise LoadError("--engine is auto, io_uring or epoll")
        if not 1 <= self.connect_concurrency <= 100_000:
            raise LoadError("--connect-concurrency must be in 1..100000")
        if self.max_time <= 0:
            raise LoadError("--max-time must be positive")
        if not 0 <= self.processes <= 64:
            raise LoadError("--processes must be in 1..64 (or 0: as many as the open-files "
                            "limit needs)")
        if self.processes > self.connections:
            raise LoadError(f"--processes {self.processes} is more than --connections "
                            f"{self.connections}: each process holds subscribers")
        if self.storm is not None:
            fraction, at = self.storm
            if not 0 < fraction <= 1 or at < 0:
                raise LoadError("--storm: a fraction in (0, 1] at a time >= 0 s")
            if self.messages == 0:
                raise LoadError("--storm needs messages: coming back is measured by what "
                                "reaches the subscribers after")
            if self.duration is not None and at >= self.duration:
                raise LoadError(f"--storm at {at:g} s is not before the end of --duration "
                                f"{self.duration:g} s")
