"""The connections of a resume storm: each subscriber's (`SubscriberConn`, which hands
its messages to its `Subscriber` and its replies to the run) and each channel's
publisher (`WsPublisher`: ringcast.v1 ``publish`` commands; `HttpPublisher`: ``POST``).
What they need of the run is `RunContext` (`ringcast.loadtest.resume_run.ResumeRun`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any, Protocol

import h11

from ringcast.loadtest.resume_counts import Channel, Parsed, Subscriber
from ringcast.loadtest.resume_options import ResumeOptions
from ringcast.loadtest.resume_ws import ConnectFailed, V1Socket, command, reason_of
from ringcast.loadtest.target import Target

__all__ = ["HttpPublisher", "Publisher", "RunContext", "SubscriberConn", "WsPublisher"]


class RunContext(Protocol):
    """What a connection needs of the run it belongs to."""

    options: ResumeOptions
    target: Target
    path: str                               # the request path of a WebSocket
    cache: dict[bytes, Parsed]              # message frames already parsed, by payload
    protocol_errors: Counter[str]
    finished: bool                          # the run is over: an end is no fault

    def parse(self, payload: bytes) -> Parsed | dict[str, Any]:
        """A text message: a message frame as `Parsed` (and cached), else the JSON object."""
        ...

    def reply(self, sub: Subscriber, conn: SubscriberConn, obj: dict[str, Any],
              now: float) -> None:
        """A frame to ``sub`` that is not a message (one with a ``"type"``)."""
        ...

    def sub_ended(self, sub: Subscriber, conn: SubscriberConn, reason: str) -> None:
        """``sub``'s connection ``conn`` ended, for ``reason``."""
        ...


class SubscriberConn(V1Socket):
    """A subscriber's connection: messages go to its `Subscriber`, replies to the run."""

    def __init__(self, run: RunContext, sub: Subscriber) -> None:
        super().__init__(run.target, run.path)
        self._run = run
        self._sub = sub
        self.replay_upto = 0
        self._cached = run.cache.get        # bound once: looked up per message
        self._messages = sub.messages

    def frames(self, buf: bytes, now: float) -> int:
        """As `V1Socket.frames`, with a fast way for what nearly every frame is: a text
        message under 64 KiB already parsed for another subscriber. Those go to the
        `Subscriber` in batches; anything else first hands over the batch so far, so that
        order holds (a ``subscribed`` reply sets what the messages after it mean)."""
        pos, n, cached, batch = 0, len(buf), self._cached, []
        while n - pos >= 2:
            b1 = buf[pos + 1]
            if buf[pos] == 0x81 and b1 <= 126 and self._frag is None:
                if b1 < 126:
                    start = pos + 2
                    end = start + b1
                elif n - pos >= 4:
                    start = pos + 4
                    end = start + (buf[pos + 2] << 8 | buf[pos + 3])
                else:
                    break
                if end > n:
                    break
                m = cached(buf[start:end])
                if m is not None:
                    batch.append(m)
                    pos = end
                    continue
            if batch:
                self._messages(batch, self.replay_upto, now)
                batch = []
            end = self.frame_at(buf, pos, now)
            if end < 0 or self._dead:
                return pos
            pos = end
        if batch:
            self._messages(batch, self.replay_upto, now)
        return pos

    def on_text(self, payload: bytes, now: float) -> None:
        parsed = self._cached(payload) or self._run.parse(payload)
        if isinstance(parsed, tuple):
            self._messages([parsed], self.replay_upto, now)
        else:
            self._run.reply(self._sub, self, parsed, now)

    def subscribe(self, since: tuple[str, int] | None) -> None:
        """Subscribe to its channel; ``since``: the (epoch, offset) to resume from."""
        cmd: dict[str, Any] = {"type": "subscribe", "channel": self._sub.channel.name, "id": 1}
        if since is not None:
            cmd["since"] = {"epoch": since[0], "offset": since[1]}
        self.send(command(cmd))

    def protocol_error(self, what: str) -> None:
        self._run.protocol_errors[what] += 1
        super().protocol_error(what)

    def on_end(self, reason: str) -> None:
        self._run.sub_ended(self._sub, self, reason)


class WsPublisher(V1Socket):
    """A channel's ringcast.v1 publisher: ``publish`` commands numbered by ``id``, each
    ``published`` reply its acknowledgement."""

    def __init__(self, run: RunContext, channel: Channel) -> None:
        super().__init__(run.target, run.path)
        self._run = run
        self._ch = channel

    async def publish(self, seq: int, data: str) -> bool:
        """Send message ``seq``; False once the publisher is gone."""
        self.send(command({"type": "publish", "channel": self._ch.name, "id": seq,
                            "data": data}))
        return self._ch.lost is None

    def on_text(self, payload: bytes, now: float) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            self.protocol_error("a frame that is not JSON")
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "published" and isinstance(obj.get("id"), int):
            self._ch.ack(obj["id"], obj.get("epoch"), obj.get("offset"))
        elif kind == "error":
            self._ch.errors[f"error {obj.get('code')}: {obj.get('reason')}"] += 1
        # Anything else (a later version's news) is not this publisher's business.

    def protocol_error(self, what: str) -> None:
        self._run.protocol_errors[f"publisher: {what}"] += 1
        super().protocol_error(what)

    def on_end(self, reason: str) -> None:
        if self._ch.lost is None and not self._run.finished:
            self._ch.lost = f"publisher connection ended: {reason}"

    async def close(self) -> None:
        self._dead = True
        if self.transport is not None:
            self.transport.close()


class HttpPublisher:
    """A channel's HTTP publisher: one ``POST`` at a time on a keep-alive connection
    (its order is the channel's), the position read from each answer's JSON."""

    def __init__(self, run: RunContext, channel: Channel) -> None:
        self._run = run
        self._ch = channel
        o = run.options
        path = o.publish_path or "/publish/{channel}"
        self._path = path.replace("{channel}", channel.name)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._http = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        """Connect, within ``--connect-timeout``; raises `ConnectFailed` with the reason."""
        t = self._run.target
        try:
            async with asyncio.timeout(self._run.options.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(t.address, t.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(reason_of(exc) if not isinstance(exc, TimeoutError)
                          else "timed out") from None
        self._http = h11.Connection(h11.CLIENT)

    async def publish(self, seq: int, data: str) -> bool:
        """POST message ``seq`` and take its answer; False once the publisher is gone."""
        try:
            if self._writer is None or self._http.our_state is not h11.IDLE:
                await self.close()
                await self.open()           # the server ended the keep-alive: a new one
            async with asyncio.timeout(self._run.options.connect_timeout):
                status, answer = await self._post(data.encode())
        except TimeoutError:
            self._ch.lost = "HTTP publisher: no answer within --connect-timeout"
            return False
        except (OSError, ConnectFailed, h11.ProtocolError) as exc:
            self._ch.lost = f"HTTP publisher: {reason_of(exc)}"
            return False
        if status != 200:
            self._ch.errors[f"HTTP {status}: {answer[:80].decode(errors='replace')}"] += 1
            return True
        try:
            obj = json.loads(answer)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self._ch.errors["HTTP 200 without a JSON object"] += 1
            return True
        self._ch.ack(seq, obj.get("epoch"), obj.get("offset"))
        return True

    async def _post(self, payload: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        http, t = self._http, self._run.target
        self._writer.write(
            http.send(h11.Request(method="POST", target=self._path, headers=[
                ("Host", t.host_header), ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(payload))), ("User-Agent", "ringcast-loadtest")]))
            + http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                return status, b"".join(chunks)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()
            self._writer = self._reader = None


Publisher = WsPublisher | HttpPublisher
