"""What a resume storm is asked to do (`ResumeOptions`, refused with `ResumeError`) and
the data of the messages it publishes (`body`), which the subscribers check (`seq_of`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ResumeError", "ResumeOptions", "body", "seq_of"]

SEQ_DIGITS = 10
MIN_SIZE = 16
MAX_SIZE = 1 << 20
MAX_CONNECTIONS = 100_000
_PAD = (string.ascii_lowercase * (MAX_SIZE // 26 + 1))[:MAX_SIZE]


class ResumeError(Exception):
    """The resume storm cannot start or go on (say why: the message is shown as is)."""


@dataclass(frozen=True)
class ResumeOptions:
    """What a resume storm is asked to do; `validate` refuses what cannot run."""

    url: str                                 # ws://host:port/[dir/]channel
    connections: int = 100                   # subscribers
    channels: int = 1                        # 1: the URL's; K: <channel>-0 .. -<K-1>
    rate: float = 500.0                      # messages/s over all channels
    size: int = 64                           # characters of each message's data
    outage: float = 1.0                      # seconds with every subscriber away
    after_resume: float = 1.0                # seconds of publishing once all are back
    publisher: str = "ws"                    # "ws" (ringcast.v1 publish) or "http"
    publish_path: str | None = None          # http: default /publish/<channel>
    connect_concurrency: int = 256
    connect_timeout: float = 10.0
    drain_timeout: float = 5.0
    max_time: float = 600.0
    allow_remote: bool = False
    server_pids: tuple[int, ...] = ()        # local server processes to measure (CPU)

    def validate(self) -> None:
        """Raise `ResumeError` naming the option when the run cannot be made as asked."""
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise ResumeError(f"--connections must be in 1..{MAX_CONNECTIONS}")
        if not 1 <= self.channels <= self.connections:
            raise ResumeError("--channels must be in 1..--connections (every channel needs "
                              "a subscriber)")
        if not 0 < self.rate <= 1_000_000:
            raise ResumeError("--rate must be in (0, 1000000] messages/s")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ResumeError(f"--size must be in {MIN_SIZE}..{MAX_SIZE} with --resume-storm "
                              "(a message's data: its number and a checked pattern)")
        if not 0 <= self.outage < self.max_time:
            raise ResumeError(f"--outage must be in [0, {self.max_time:g}) seconds")
        if not 0 <= self.after_resume < self.max_time:
            raise ResumeError(f"--after-resume must be in [0, {self.max_time:g}) seconds")
        if self.publisher not in ("ws", "http"):
            raise ResumeError("--publisher is ws or http")
        if self.publish_path is not None:
            if self.publisher != "http":
                raise ResumeError("--publish-path is for --publisher http")
            if self.channels > 1 and "{channel}" not in self.publish_path:
                raise ResumeError("--publish-path with --channels above 1 must hold "
                                  "{channel}, e.g. /publish/{channel}")
        if not 1 <= self.connect_concurrency <= 100_000:
            raise ResumeError("--connect-concurrency must be in 1..100000")
        for name, value in (("--connect-timeout", self.connect_timeout),
                            ("--drain-timeout", self.drain_timeout),
                            ("--max-time", self.max_time)):
            if not value > 0:
                raise ResumeError(f"{name} must be positive")
        if not self.channel:
            raise ResumeError(f"{self.url!r}: name the channel, ws://HOST:PORT/<channel>")

    @property
    def channel(self) -> str:
        """The URL's channel: its path's last part ("" when it names none)."""
        return urlsplit(self.url).path.rpartition("/")[2]

    def channel_names(self) -> list[str]:
        """The channels of the run: the URL's, or K named after it."""
        channel = self.channel
        return [channel] if self.channels == 1 else [f"{channel}-{k}"
                                                     for k in range(self.channels)]

    def socket_path(self) -> str:
        """The request path subscribers (and a ws publisher) open: the URL's directory,
        with its query (a token, say)."""
        parts = urlsplit(self.url)
        path = parts.path.rpartition("/")[0] + "/"
        return path + ("?" + parts.query if parts.query else "")


def body(seq: int, size: int) -> str:
    """The data of message ``seq``: its number, then a pattern, ``size`` characters."""
    return f"{seq:0{SEQ_DIGITS}d}" + _PAD[: size - SEQ_DIGITS]


def seq_of(data: object, size: int) -> int | None:
    """The message number in ``data`` when it is what `body` makes for ``size``; None for
    anything else (data this run did not publish)."""
    if (isinstance(data, str) and len(data) == size and data[:SEQ_DIGITS].isdigit()
            and data[SEQ_DIGITS:] == _PAD[: size - SEQ_DIGITS]):
        return int(data[:SEQ_DIGITS])
    return None
