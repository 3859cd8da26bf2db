"""The driver of a resume storm (`ResumeRun`): its phases, in the order and with the
bounds `ringcast.loadtest.resume` describes (connect, publish, drop, outage, resume,
drain), the reconnects, the open-loop publishing, and what the subscribers receive
(parsed once per distinct frame, its data checked) handed to their `Subscriber`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, TypeVar

from ringcast.loadtest import procstat
from ringcast.loadtest.resume_connections import (
    HttpPublisher,
    Publisher,
    SubscriberConn,
    WsPublisher,
)
from ringcast.loadtest.resume_counts import Channel, Parsed, Subscriber, position
from ringcast.loadtest.resume_options import ResumeError, ResumeOptions, body, seq_of
from ringcast.loadtest.resume_ws import ConnectFailed, V1Socket, reason_of
from ringcast.loadtest.storm import RETRY_SECONDS
from ringcast.loadtest.target import Target

__all__ = ["WARMUP_MESSAGES", "ResumeRun"]

WARMUP_MESSAGES = 3
"""Messages every subscriber must have had before the drop, so that each resumes from a
position of its own, not from its subscription's."""
PARSE_CACHE = 8192
"""Distinct frames kept parsed. The subscribers of a channel receive the same bytes for a
message (the server sends one frame to all, live or replayed), so each is parsed once."""
POLL = 0.005
"""Seconds between two looks at a condition being waited for (each wait has a deadline)."""
MAX_BURST = 1000
"""Messages one publisher sends in one go when it fell behind its schedule."""

_Socket = TypeVar("_Socket", bound=V1Socket)


class ResumeRun:
    """One resume storm, as it happens: `run` its phases, then `close` it."""

    def __init__(self, options: ResumeOptions, target: Target,
                 progress: IO[str] | None) -> None:
        self.options = options
        self.target = target
        self.path = options.socket_path()
        self._progress = progress
        self.channels = [Channel(name) for name in options.channel_names()]
        self._by_name = {ch.name: ch for ch in self.channels}
        self.subs = [Subscriber(i, self.channels[i % len(self.channels)])
                     for i in range(options.connections)]
        for sub in self.subs:
            sub.channel.subscribers += 1
        self.cache: dict[bytes, Parsed] = {}
        # What each position's data said (the message number), per channel.
        self.seq_at: dict[str, dict[tuple[str | None, int], int]] = {
            ch.name: {} for ch in self.channels}
        self.bad_data = 0                   # distinct frames whose data is not a message's
        self.protocol_errors: Counter[str] = Counter()
        self.connect_failures: Counter[str] = Counter()
        self.reconnect_failures: Counter[str] = Counter()
        self.no_history: set[str] = set()
        self.handshake_ms: list[float] = []
        self.publishers: list[Publisher] = []
        self.phase = "connect"
        self.finished = False
        self.stop_publishing = False
        self.warmup_complete = False
        self.cut_short: list[str] = []      # phases max_time ended early
        self.t0 = time.monotonic()
        self.t_end = self.t0 + options.max_time
        self.times: dict[str, float] = {}   # seconds from t0, per phase
        self.t_reconnect = 0.0
        self.resume_cpu = (0.0, 0.0)        # client CPU and wall seconds, reconnect to
                                            # every subscriber recovered (or given up on)
        self.server_pids = procstat.with_children(options.server_pids)
        self.server_ns: dict[str, int] = {}     # the servers' CPU at the phases' moments
        self._server_cpu("start")
        self._sem = asyncio.Semaphore(options.connect_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the subscribers receive --------------------------------------------------

    def parse(self, payload: bytes) -> Parsed | dict[str, Any]:
        """A text message: a message (the frame without a ``"type"``) as (channel, epoch
        or None, offset), cached and its data checked against the run's; any other
        object as is (a reply). The epoch is None unless the frame names one (offset 1):
        each subscriber then reads it as its connection's current epoch."""
        try:
            obj = json.loads(payload)
        except ValueError:
            return {"type": "not JSON"}
        if not isinstance(obj, dict):
            return {"type": "not a JSON object"}
        if "type" in obj:
            return obj
        ch = self._by_name.get(str(obj.get("channel")))
        named, offset = obj.get("epoch"), obj.get("offset")
        if ch is None or not isinstance(offset, int) or isinstance(offset, bool) \
                or not isinstance(named, str | None):
            return {"type": "message without a channel of this run or a position"}
        if named is not None:
            ch.current = named
        # The data check needs the epoch once per frame, not per subscriber: the
        # channel's current one, as the run last saw it (one unless history restarts).
        seq = seq_of(obj.get("data"), self.options.size)
        if seq is None or self.seq_at[ch.name].setdefault((ch.current, offset), seq) != seq:
            self.bad_data += 1              # not a message's data, or two at one position
        if len(self.cache) >= PARSE_CACHE:
            self.cache.clear()              # the old ones were for subscribers long served
        m = (ch, named, offset)
        self.cache[payload] = m
        return m

    def reply(self, sub: Subscriber, conn: SubscriberConn, obj: dict[str, Any],
              now: float) -> None:
        """A frame to a subscriber that is not a message (one with a ``"type"``)."""
        kind = obj.get("type")
        if kind == "subscribed":
            at = position(obj.get("epoch"), obj.get("offset"))
            if at is None:
                self.no_history.add(sub.channel.name)
                return
            sub.channel.current = at[0]
            if sub.on_subscribed(*at, obj.get("recovered") is True, now):
                conn.replay_upto = at[1]    # what follows up to here is the replay
        elif kind == "error":
            sub.errors[str(obj.get("code"))] += 1
        else:
            self.protocol_errors[f"unexpected frame: {str(kind)[:60]}"] += 1

    def sub_ended(self, sub: Subscriber, conn: SubscriberConn, reason: str) -> None:
        """A subscriber connection ended. Ours (the drop) or a stale one: nothing to do.
        The server's: counted, and the subscriber resumes, as a real client would."""
        if sub.conn is not conn:
            return
        sub.conn = None
        sub.subscribed = False
        if self.finished:
            return
        sub.ended[reason] += 1
        if self.phase != "outage" and sub.epoch is not None:
            self._spawn(sub, retry_for=2 * self.options.connect_timeout)

    # -- connecting ----------------------------------------------------------------------

    async def _open(self, make: Callable[[], _Socket], times: list[float] | None = None
                    ) -> _Socket:
        """A WebSocket from ``make``, open (its 101 read), within ``--connect-timeout``
        once its turn among ``--connect-concurrency`` came; raises `ConnectFailed` with the
        reason it did not open. ``times``: where to add how long it took (ms)."""
        loop = asyncio.get_running_loop()
        async with self._sem:
            t = time.monotonic()
            conn: _Socket | None = None
            try:
                async with asyncio.timeout(self.options.connect_timeout):
                    _, conn = await loop.create_connection(make, self.target.address,
                                                           self.target.port)
                    await conn.opened
            except TimeoutError:
                if conn is not None:
                    conn.reset()
                raise ConnectFailed("timed out") from None
            except OSError as exc:
                raise ConnectFailed(reason_of(exc)) from None
            except BaseException:
                if conn is not None:
                    conn.reset()
                raise
            if times is not None:
                times.append((time.monotonic() - t) * 1e3)
        return conn

    async def _connect(self, sub: Subscriber, *, retry_for: float) -> None:
        """Open ``sub``'s connection and subscribe (with ``since`` once it has a position).
        A failed attempt is tried again for ``retry_for`` seconds (0: the first connection,
        tried once: a failure there is the server's answer to a connect, not to a storm)."""
        retry = retry_for > 0
        until = time.monotonic() + retry_for
        while True:
            try:
                conn = await self._open(lambda: SubscriberConn(self, sub),
                                        None if retry else self.handshake_ms)
            except ConnectFailed as exc:
                failures = self.reconnect_failures if retry else self.connect_failures
                failures[str(exc)] += 1
                if time.monotonic() >= until:
                    return
                # Jitter: a herd retrying in step would meet the same refusal again.
                await asyncio.sleep(RETRY_SECONDS * (0.5 + random.random()))
                continue
            sub.conn = conn
            sub.subscribed = False
            since = None
            if sub.epoch is not None:
                sub.since = sub.highest
                since = (sub.epoch, sub.highest)
            conn.subscribe(since)
            return

    def _spawn(self, sub: Subscriber, *, retry_for: float) -> None:
        sub.task = task = asyncio.create_task(self._connect(sub, retry_for=retry_for))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until(self, done: Callable[[], bool], deadline: float, phase: str) -> bool:
        """Wait until ``done()``, at most until ``deadline`` (and the run's ``--max-time``);
        False when it did not happen."""
        end = min(deadline, self.t_end)
        while not done():
            if time.monotonic() >= end:
                if deadline > self.t_end:
                    self.cut_short.append(phase)
                return False
            await asyncio.sleep(POLL)
        return True

    def _say(self, text: str) -> None:
        if self._progress is not None:
            print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", file=self._progress,
                  flush=True)

    def _server_cpu(self, moment: str) -> None:
        if self.server_pids:
            self.server_ns[moment] = sum(procstat.sample(pid, pss=False).cpu_ns
                                         for pid in self.server_pids)

    def _mark(self, name: str) -> float:
        now = time.monotonic()
        self.times[name] = round(now - self.t0, 4)
        return now

    # -- the phases ----------------------------------------------------------------------

    async def run(self) -> None:
        """The phases, each bounded; raises `ResumeError` when the storm cannot happen."""
        o = self.options
        await self._connect_publishers()
        self._say(f"connecting {o.connections:,} subscribers to {len(self.channels)} "
                  f"channel(s)")
        for sub in self.subs:
            self._spawn(sub, retry_for=0)
        await asyncio.gather(*self._tasks)
        # Answered (a position, or an error), or not connected; a channel without history
        # ends the run at its first answer.
        await self._until(lambda: bool(self.no_history) or all(
                              s.epoch is not None or s.conn is None or s.errors
                              for s in self.subs),
                          time.monotonic() + o.connect_timeout, "connect")
        self._check_connected()
        for ch in self.channels:
            starts = [s.start for s in self.subs if s.channel is ch and s.epoch is not None]
            ch.first_offset = min(starts) if starts else 0
        self._mark("connected")
        self._server_cpu("connected")

        self.phase = "warmup"
        self._mark("publishing")
        publishing = [asyncio.create_task(self._publish(ch, pub))
                      for ch, pub in zip(self.channels, self.publishers, strict=True)]
        live = [s for s in self.subs if s.epoch is not None]

        def refused() -> Channel | None:
            """A channel whose publishing failed from the start: nothing to measure."""
            return next((ch for ch in self.channels
                         if not ch.acked and (ch.lost is not None or ch.errors)), None)

        self.warmup_complete = await self._until(
            lambda: refused() is not None or all(s.highest - s.start >= WARMUP_MESSAGES
                                                 for s in live),
            time.monotonic() + o.drain_timeout, "warmup")
        bad = refused()
        if bad is not None:
            why = bad.lost or ", ".join(bad.errors)
            raise ResumeError(f"publishing on {bad.name} failed before any message was "
                              f"acknowledged: {why}")

        self.phase = "outage"
        self._drop()
        self._say(f"dropped {len(live):,} subscribers; outage {o.outage:g}s")
        await self._until(lambda: False, time.monotonic() + o.outage, "outage")

        self.phase = "resume"
        self.t_reconnect = self._mark("reconnect")
        cpu_at_reconnect = time.process_time()
        self._server_cpu("reconnect")
        for ch in self.channels:
            ch.at_reconnect = ch.last_offset
        for s in live:
            s.target = s.channel.at_reconnect
            self._spawn(s, retry_for=2 * o.connect_timeout)
        self._say("reconnecting and resuming")
        # An attempt may start just before its retries end and take --connect-timeout.
        if await self._until(lambda: all(s.back_at is not None for s in live),
                             self.t_reconnect + 3 * o.connect_timeout, "resume"):
            self._mark("all_back")
        # A resynced subscriber cannot recover: it is not waited for.
        if await self._until(lambda: all(s.recover_at is not None or s.resyncs for s in live),
                             time.monotonic() + o.drain_timeout, "recovery"):
            self._mark("all_recovered")
        self.resume_cpu = (time.process_time() - cpu_at_reconnect,
                           time.monotonic() - self.t_reconnect)
        self._server_cpu("recovered")
        await self._until(lambda: False, time.monotonic() + o.after_resume, "after resume")

        self.stop_publishing = True
        await asyncio.gather(*publishing)
        await self._until(lambda: all(ch.settled for ch in self.channels),
                          time.monotonic() + o.drain_timeout, "acknowledgements")
        self._mark("publishing_stopped")
        for ch in self.channels:
            ch.final = ch.last_offset
        self.phase = "drain"
        self._say("waiting for every subscriber to have every message")
        if await self._until(lambda: all(s.drained() for s in live),
                             time.monotonic() + o.drain_timeout, "drain"):
            self._mark("all_complete")
        self._mark("end")
        self._server_cpu("end")

    async def _connect_publishers(self) -> None:
        for ch in self.channels:
            try:
                if self.options.publisher == "http":
                    http = HttpPublisher(self, ch)
                    await http.open()
                    self.publishers.append(http)
                else:
                    self.publishers.append(
                        await self._open(functools.partial(WsPublisher, self, ch)))
            except ConnectFailed as exc:
                raise ResumeError(f"the publisher of {ch.name} could not connect: "
                                  f"{exc}") from None

    def _check_connected(self) -> None:
        """After the first subscriptions: a subscriber without a position is a failed
        connection (closed now); a channel without history, or nobody, ends the run."""
        if self.no_history:
            names = ", ".join(sorted(self.no_history))
            pattern = (self.channels[0].name if len(self.channels) == 1
                       else self.options.channel + "-*")
            raise ResumeError(
                f"channel {names} keeps no history on this server (its subscribed reply "
                "has no epoch and offset), so nothing can be resumed: enable it, e.g. "
                f"RINGCAST_HISTORY_CHANNELS='{pattern}'")
        for sub in self.subs:
            if sub.epoch is None and sub.conn is not None:
                codes = ", ".join(sub.errors) or "none within --connect-timeout"
                self.connect_failures[f"no subscribed reply (error replies: {codes})"] += 1
                conn, sub.conn = sub.conn, None
                conn.reset()
        if not any(s.epoch is not None for s in self.subs):
            failures = ", ".join(f"{v} {k}" for k, v in self.connect_failures.items())
            raise ResumeError(f"no subscriber could subscribe ({failures or 'no reply'})")

    def _drop(self) -> None:
        """Reset every subscriber connection at once; cancel reconnects under way."""
        self._mark("dropped")
        for ch in self.channels:
            ch.at_drop = ch.last_offset
        for sub in self.subs:
            if sub.task is not None and not sub.task.done():
                sub.task.cancel()
            conn, sub.conn = sub.conn, None
            sub.subscribed = False
            if conn is not None:
                conn.reset()

    async def _publish(self, ch: Channel, pub: Publisher) -> None:
        """Open loop: message n of this channel is due at its start + n / (rate / K)."""
        loop = asyncio.get_running_loop()
        interval = len(self.channels) / self.options.rate
        due_at = loop.time()
        size = self.options.size
        while not self.stop_publishing and ch.lost is None and time.monotonic() < self.t_end:
            now, burst = loop.time(), 0
            while due_at <= now and burst < MAX_BURST:
                ch.sent += 1
                burst += 1
                due_at += interval
                if not await pub.publish(ch.sent, body(ch.sent, size)):
                    return
            await asyncio.sleep(max(0.0, due_at - loop.time()))

    async def close(self) -> None:
        """End every connection and task of the run."""
        self.finished = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self.subs:
            conn, sub.conn = sub.conn, None
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
        for pub in self.publishers:
            await pub.close()
        await asyncio.sleep(0)              # let the transports close

