"""A resume storm, ``ringcast loadtest ws://HOST:PORT/CHANNEL --resume-storm``: many
``ringcast.v1`` subscribers dropped at once while publishing goes on, all resuming from
their last position (docs/history.md); the report says what the resumes recovered, what
was lost, duplicated or out of order, who had to resync, and how long each subscriber
took to have everything it had missed.

The run, in order:

1. connect: one publisher per channel, then ``--connections`` subscribers, each a
   ``ringcast.v1`` WebSocket to the URL's directory (``ws://H:P/rs`` opens ``/``)
   subscribing to the URL's channel (with ``--channels K``: ``<channel>-0`` ..
   ``<channel>-<K-1>``, subscriber i to channel i mod K). The position in each
   ``subscribed`` reply is where the subscriber's expectations start: every later
   message of its channel, once, in order.
2. publish: ``--rate`` messages/s over all channels, open loop, numbered; a publisher
   sends ringcast.v1 ``publish`` commands (``--publisher ws``) or ``POST
   /publish/<channel>`` (``http``), and every acknowledgement gives the message's offset.
3. drop: once every subscriber has had `resume_run.WARMUP_MESSAGES` (or
   ``--drain-timeout`` passed), every subscriber connection is reset at once (SO_LINGER
   0: an RST, no close frame), as a failed network or a killed proxy ends them.
4. outage: ``--outage`` seconds with no subscriber connected; publishing goes on.
5. resume: every subscriber reconnects (``--connect-concurrency`` in flight) and
   subscribes with ``since`` = the last position it received. A failed attempt is
   retried after about `storm.RETRY_SECONDS`, for up to twice ``--connect-timeout``.
   Publishing goes on ``--after-resume`` seconds once all are back, then stops.
6. drain: wait, up to ``--drain-timeout``, until every subscriber has every message of
   its channel from its first subscription to the last one acknowledged.

What a subscriber counts: received (each expected offset once), recovered (received
after a ``recovered: true`` reply with an offset at or below the reply's: replayed by
the resume), duplicated (an offset received again), out of order (a new offset below
one already received), resyncs (``recovered: false`` replies: the server no longer had
the position; the messages between it and the reply are never sent and count as lost),
lost (expected, never received). Time to recover: from the end of the outage (every
subscriber starts reconnecting then, as after a real outage) until the subscriber is
subscribed again and has every message acknowledged before that moment.

The channel must be this run's alone: every message on it is expected and checked
(its data must be what the run published at that offset). A subscriber the server
closes mid-run resumes as above, and the close is counted as a fault.

The client is asyncio over plain sockets, with WebSocket framing of its own
(`resume_ws`: masked frames out, unmasked frames in, no permessage-deflate). It knows
nothing of the server beyond the protocol; it needs neither ``websockets`` nor the C
scanner (which checks the tool's own payloads as published, not messages wrapped in a
JSON envelope with their position). Python reads every frame, so the client's CPU
bounds the deliveries per second it can check: about 2 µs each (a message is parsed
once for all the subscribers of its channel, `resume_run.PARSE_CACHE`), some 500,000 a
second on one core, live and replayed together. The report gives that CPU, over the run
and over the resume, and warns when the client may be what it measured; ``--server-pid``
adds the server's.

Modules, one role each: `resume_options` (`ResumeOptions`, `ResumeError`, the messages'
data), `resume_ws` (the ringcast.v1 WebSocket: upgrade, frames in and out),
`resume_connections` (the subscribers' and publishers' connections), `resume_counts`
(what each channel published and each subscriber received), `resume_run` (the phases)
and `resume_report` (the result and its text). This one runs them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

from ringcast.fdlimit import raise_nofile
from ringcast.loadtest.resume_options import ResumeError, ResumeOptions
from ringcast.loadtest.resume_report import build_result, format_text
from ringcast.loadtest.resume_run import ResumeRun
from ringcast.loadtest.target import Target, parse_target

__all__ = ["ResumeError", "ResumeOptions", "format_text", "run_resume_storm"]


def run_resume_storm(options: ResumeOptions, *, progress_stream: IO[str] | None = sys.stderr
                     ) -> dict[str, Any]:
    """Run the resume storm ``options`` asks for to its result (what `format_text` shows
    and ``--json`` writes). Raises `ResumeError` when it cannot run (bad options, no
    history on the channel, nobody could subscribe, the publisher could not connect) and
    `ringcast.loadtest.target.TargetError` for a URL that is refused."""
    options.validate()
    target = parse_target(options.url, allow_remote=options.allow_remote)
    soft, needed = raise_nofile(options.connections + options.channels)
    if soft < needed:
        raise ResumeError(f"the open-files limit ({soft:,}) is below the {needed:,} this run "
                          "needs (a file per subscriber and publisher): raise it (ulimit -n) "
                          "or ask for fewer --connections")
    return asyncio.run(_main(options, target, progress_stream))


async def _main(options: ResumeOptions, target: Target,
                progress: IO[str] | None) -> dict[str, Any]:
    wall0, cpu0 = time.monotonic(), time.process_time()
    run = ResumeRun(options, target, progress)
    try:
        await run.run()
    finally:
        await run.close()
    return build_result(run, time.process_time() - cpu0, time.monotonic() - wall0)
