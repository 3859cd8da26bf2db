"""What compressing one message costs and saves, by size and level: the figures behind
``compression.threshold`` and ``compression.level``.

Each message is compressed the way ringcast's fan-out does it (``deflate.Compressor``: one
zlib stream, fully flushed after every message, so each stands alone), once; the time is
the best of three batches of 2,000, on this process's core. The messages are the load
tester's ``--payload json`` (a ticker feed, the kind of JSON a fan-out server carries),
cut to each size.

    .venv/bin/python bench/compression_threshold.py
"""

from __future__ import annotations

import platform
import timeit

from ringcast.server.protocol.deflate import Compressor
from ringcast.server.protocol.frames import data_frame

SIZES = [64, 128, 256, 512, 1024, 4096, 16384]
LEVELS = [1, 6, 9]


def feed(size: int) -> bytes:
    """``size`` bytes of ticker-like JSON (a real feed's field names repeat)."""
    out = bytearray(b'{"symbol":"ABC","ticks":[')
    i = 0
    while len(out) < size:
        out += b'{"bid":%d.%02d,"ask":%d.%02d,"size":%d,"side":"%s"},' % (
            60000 + i * 7 % 500, i * 13 % 100, 60001 + i * 11 % 500, i * 17 % 100,
            1 + i * 29 % 900, b"buy" if i % 3 else b"sell")
        i += 1
    return bytes(out[:size])


def main() -> None:
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| size, B | level | compressed, B | ratio | µs per message |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        frame = data_frame(feed(size), True)
        for level in LEVELS:
            compressor = Compressor(level, 0)
            out = compressor.frame(frame, 15)
            per = min(timeit.repeat(lambda c=compressor, f=frame: c.frame(f, 15),
                                    number=2000, repeat=3)) / 2000
            saved = len(frame) - len(out)
            payload = size - saved
            print(f"| {size:,} | {level} | {payload:,} | {payload / size:.2f} | "
                  f"{per * 1e6:.1f} |")


if __name__ == "__main__":
    main()
