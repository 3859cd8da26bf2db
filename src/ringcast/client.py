"""A ``ringcast.v1`` client over ``websockets``, for tests and scripts (docs/history.md).

One connection carries every subscription. Replies are matched to commands by ``id``;
messages and resyncs come out of ``async for event in client`` in arrival order. On a
lost connection the client reconnects (full-jitter exponential backoff) and subscribes
every channel again with ``since`` set to the last position handled, dropping any
message at or below it in the same epoch, so a resume within history shows neither a
gap nor a duplicate. A close with 1008 is a refusal: no reconnect.

A message frame has no ``"type"`` and names its epoch only at offset 1, where an epoch
begins; the reader gives every message its full position, taking the epoch of the
channel's ``subscribed`` reply or of its last message that named one (in arrival order,
before any event is yielded). A message naming another epoch mid-connection, when the
channel's position was past offset 0, means its history restarted: a `Resync` comes
before it.

    async with Client("ws://localhost:8080/", token=t) as client:
        await client.subscribe("news")
        async for event in client:
            ...

``url`` is the server's root (under ``server.path_prefix`` if set); a channel in the
path is not supported: the server would subscribe it without ``since`` on every
reconnect, so it could not be resumed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, WebSocketException
    from websockets.typing import Subprotocol
except ImportError as exc:  # websockets is only a "test" extra; < 13 lacks .asyncio
    raise ImportError("ringcast.client needs websockets >= 13: pip install websockets") from exc

__all__ = ["Client", "CommandError", "Message", "Position", "Refused", "Resync"]

SUBPROTOCOL = "ringcast.v1"
_POLICY_VIOLATION = 1008  # how the server refuses a ringcast.v1 client (token, forbidden path)


@dataclass(frozen=True)
class Position:
    """A place in a channel's history: offsets are comparable only within one epoch."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class Message:
    """A published message: ``str`` if sent as text, ``bytes`` if binary; ``position``
    is None when the channel keeps no history."""

    channel: str
    data: str | bytes
    position: Position | None


@dataclass(frozen=True)
class Resync:
    """The server could not replay ``channel`` after the position given as ``since``:
    fetch its state from the source of truth; messages after ``position`` follow."""

    channel: str
    position: Position


class CommandError(Exception):
    """An ``error`` reply: ``code`` as in the spec's table (``forbidden``, ...)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class Refused(Exception):
    """The server closed the connection with 1008: the client stops and won't reconnect."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"refused by the server ({code}): {reason}")
        self.code = code
        self.reason = reason


_Event = Message | Resync
_Reply = dict[str, Any]


def _position(obj: _Reply) -> Position | None:
    epoch, offset = obj.get("epoch"), obj.get("offset")
    if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
        return Position(epoch, offset)
    return None


def _message_position(obj: _Reply, epoch: str | None) -> Position | None:
    """A message's position: its own ``epoch`` if it names one (offset 1), else ``epoch``,
    the one the channel's messages are in on this connection; None without an offset
    (no history) or while no epoch is known."""
    offset = obj.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool):
        return None
    named = obj.get("epoch")
    if isinstance(named, str):
        epoch = named
    return None if epoch is None else Position(epoch, offset)


def _subscribe_frame(channel: str, since: Position | None) -> _Reply:
    frame: _Reply = {"type": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = {"epoch": since.epoch, "offset": since.offset}
    return frame


def _with_token(url: str, token: str | None) -> str:
    if token is None:
        return url
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("token", token)])
    return urlunsplit(parts._replace(query=query))


class Client:
    """A ``ringcast.v1`` connection with reconnect and resume; use as ``async with``.

    Contracts:

    - ``subscribe`` waits for a connection when there is none (it is never lost to a
      reconnect before it is sent); ``publish`` and ``unsubscribe`` don't. A command
      sent on a connection that is then lost fails with ``ConnectionError`` (with
      ``Refused`` when the loss was a refusal; with ``ConnectionError`` after
      ``close()``). ``unsubscribe`` is the exception: a lost connection already ended
      the subscription, and the next one won't carry it, so it returns.
    - The event queue is unbounded: a test client that stops iterating only costs
      memory; nothing is dropped or closed for being slow on this side.
    - A channel's position is advanced when its event is *yielded*, and that is what a
      reconnect resumes from; an event from the old connection still queued is yielded
      first and its replayed duplicate then dropped.
    - If a re-subscribe after a reconnect gets an ``error`` reply (say the token may no
      longer subscribe), the channel is forgotten and ``__anext__`` raises that
      ``CommandError`` once, in its place in the order of events; but ``unavailable``
      (what orders the channel is restarting: a worker, or Redis) is retried on the same
      connection with backoff and jitter until it is answered otherwise.
    - After ``close()`` iteration ends once the queued events are yielded; after a
      refusal it raises ``Refused`` instead, and every later command raises it too.
    """

    def __init__(self, url: str, *, token: str | None = None, min_delay: float = 0.25,
                 max_delay: float = 10.0, open_timeout: float = 10.0) -> None:
        self._url = _with_token(url, token)
        self._min_delay, self._max_delay, self._open_timeout = min_delay, max_delay, open_timeout
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # set while connected or stopped: a command may go or fail
        self._stopped: BaseException | None = None  # Refused, or ConnectionError after close()
        self._runner: asyncio.Task[None] | None = None
        self._next_id = 0
        # id -> (reply, since, whether a re-subscribe after a reconnect)
        self._pending: dict[int, tuple[asyncio.Future[_Reply], Position | None, bool]] = {}
        # Channels to (re)subscribe, each with the position of the last event handled.
        self._subs: dict[str, Position | None] = {}
        # The epoch of each channel's messages arriving on the current connection (from
        # its subscribed reply, or its last message naming one): ahead of _subs, which
        # moves only as events are yielded, so messages still queued cannot tell it.
        self._epochs: dict[str, str] = {}
        # Events; a CommandError (failed re-subscribe), Refused, or None (closed).
        self._events: asyncio.Queue[_Event | CommandError | Refused | None] = asyncio.Queue()
        # A message in a new epoch, put back while its Resync goes first.
        self._held_back: _Event | None = None
        self._announced: _Event | None = None
        self._retries: dict[str, int] = {}  # channels whose re-subscribe was unavailable
        self._tasks: set[asyncio.Future[None]] = set()  # those retries, while they run

    async def __aenter__(self) -> Client:
        """Connect; an error here (refused handshake, wrong subprotocol) is raised, not
        retried: only a connection that once worked is reconnected."""
        self._ws = await self._open()
        self._ready.set()
        self._runner = asyncio.create_task(self._run(self._ws))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def position(self, channel: str) -> Position | None:
        """The last position handled on ``channel`` (None: none, or no history kept)."""
        return self._subs.get(channel)

    async def subscribe(self, channel: str, since: Position | None = None) -> Position | None:
        """Subscribe and return the channel's position from the ``subscribed`` reply.

        With ``since``, messages after it follow; if the server cannot replay them
        (``recovered: false``) a `Resync` is queued before the channel's next message.
        Raises `CommandError` on an ``error`` reply."""
        frame = _subscribe_frame(channel, since)
        return _position(await self._command(frame, since, wait=True))

    async def unsubscribe(self, channel: str) -> None:
        """Stop ``channel``: no message of it is yielded after this is called."""
        self._subs.pop(channel, None)  # first: a reconnect meanwhile must not bring it back
        self._epochs.pop(channel, None)
        with contextlib.suppress(ConnectionError):
            await self._command({"type": "unsubscribe", "channel": channel}, None, wait=False)

    async def publish(self, channel: str, data: str | bytes) -> Position | None:
        """Publish; returns the message's position from the ``published`` reply.
        Raises ``ConnectionError`` while disconnected, `CommandError` on refusal."""
        frame: _Reply = {"type": "publish", "channel": channel}
        if isinstance(data, str):
            frame["data"] = data
        else:
            frame["base64"] = base64.b64encode(data).decode("ascii")
        return _position(await self._command(frame, None, wait=False))

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Message | Resync:
        """The next event, deduplicated by position; see the class's contracts."""
        while True:
            item: _Event | CommandError | Refused | None = self._held_back
            if item is not None:
                self._held_back = None
            else:
                item = await self._events.get()
            if item is None or isinstance(item, Refused):
                self._events.put_nowait(item)  # stays the end for every later call
                if item is None:
                    raise StopAsyncIteration
                raise item
            if isinstance(item, CommandError):
                raise item
            if item.channel not in self._subs:
                continue  # unsubscribed after it was queued
            last, pos = self._subs[item.channel], item.position
            if isinstance(item, Message) and pos is not None and last is not None \
                    and pos.epoch == last.epoch and pos.offset <= last.offset:
                continue  # already handled: a replay overlapping what was queued
            if isinstance(item, Message) and pos is not None and last is not None \
                    and pos.epoch != last.epoch and last.offset > 0 \
                    and item is not self._announced:
                # The channel's history restarted (its owner worker did) while this
                # connection stayed: say so before the message, as a resume would.
                # (From offset 0, "" included, nothing was handled in the old epoch: an
                # epoch begun since misses nothing.)
                self._announced = self._held_back = item
                return Resync(item.channel, Position(pos.epoch, pos.offset - 1))
            if pos is not None:
                self._subs[item.channel] = pos
            return item

    async def drop(self) -> None:
        """Test hook: abort the socket (no close frame) as a network failure would; the
        client reconnects and resumes. Commands after this see it disconnected."""
        ws = self._ws
        if ws is None:
            return
        self._ws = None
        self._ready.clear()
        ws.transport.abort()
        await ws.wait_closed()

    async def close(self) -> None:
        """Close the connection and stop for good (idempotent)."""
        if self._stopped is None:
            self._stop(ConnectionError("the client is closed"), None)
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    # -- internals --------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        ws = await connect(self._url, subprotocols=[Subprotocol(SUBPROTOCOL)],
                           open_timeout=self._open_timeout,
                           max_size=None)  # the server enforces its own size limit
        if ws.subprotocol != SUBPROTOCOL:
            await ws.close()
            raise ConnectionError(f"the server does not speak {SUBPROTOCOL} "
                                  f"(it selected subprotocol {ws.subprotocol!r})")
        return ws

    async def _command(self, frame: _Reply, since: Position | None, *, wait: bool) -> _Reply:
        while True:
            if wait:
                await self._ready.wait()
            if self._stopped is not None:
                raise self._stopped
            ws = self._ws
            if ws is None:
                if wait:
                    continue
                raise ConnectionError("not connected (reconnecting)")
            self._next_id += 1
            ref = self._next_id
            fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
            self._pending[ref] = (fut, since, False)
            try:
                await ws.send(json.dumps({**frame, "id": ref}))
            except ConnectionClosed:
                # Never reached the server: a subscribe retries on the next connection.
                del self._pending[ref]
                if self._ws is ws:
                    self._ws = None
                    self._ready.clear()
                if wait:
                    continue
                raise ConnectionError("connection lost") from None
            try:
                return await fut
            finally:
                self._pending.pop(ref, None)

    def _stop(self, error: BaseException, end: Refused | None) -> None:
        self._stopped = error
        self._fail_pending(error)
        self._events.put_nowait(end)
        self._ready.set()  # wakes subscribes waiting for a connection: they raise `error`

    def _fail_pending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _run(self, ws: ClientConnection) -> None:
        """Read each connection until it is lost, then reconnect; ends on close/refusal."""
        while True:
            lost = await self._read(ws)
            if self._ws is ws:
                self._ws = None
                self._ready.clear()
            self._epochs.clear()  # the next connection's subscribed replies say them again
            if self._stopped is not None:
                return
            if lost.rcvd is not None and lost.rcvd.code == _POLICY_VIOLATION:
                refused = Refused(lost.rcvd.code, lost.rcvd.reason)
                self._stop(refused, refused)
                return
            self._fail_pending(ConnectionError(f"connection lost: {lost}"))
            ws = await self._reconnect()
            self._ws = ws
            # Re-subscribe before commands waiting for the connection go out.
            for channel in list(self._subs):
                await self._resubscribe(ws, channel)
            self._ready.set()

    async def _resubscribe(self, ws: ClientConnection, channel: str) -> None:
        """Subscribe ``channel`` again on ``ws``, from its last position."""
        since = self._subs[channel]
        frame = _subscribe_frame(channel, since)
        self._next_id += 1
        fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(self._resubscribed(channel))
        self._pending[self._next_id] = (fut, since, True)
        with contextlib.suppress(ConnectionClosed):  # _read sees the loss
            await ws.send(json.dumps({**frame, "id": self._next_id}))

    def _retry_later(self, channel: str) -> None:
        """An ``unavailable`` re-subscribe: again after a growing, jittered delay (on
        this connection; a reconnect meanwhile re-subscribes it anyway)."""
        attempt = self._retries[channel] = self._retries.get(channel, 0) + 1
        delay = random.uniform(0, min(self._max_delay, self._min_delay * 2**attempt))
        ws = self._ws

        def again() -> None:
            if ws is not None and self._ws is ws and channel in self._subs:
                self._tasks.add(task := asyncio.ensure_future(self._resubscribe(ws, channel)))
                task.add_done_callback(self._tasks.discard)

        asyncio.get_running_loop().call_later(delay, again)

    async def _reconnect(self) -> ClientConnection:
        attempt = 0
        while True:
            cap = min(self._max_delay, self._min_delay * 2**attempt)
            await asyncio.sleep(random.uniform(0, cap))  # full jitter: spreads a herd out
            try:
                return await self._open()
            except (OSError, TimeoutError, WebSocketException):
                attempt += 1

    def _resubscribed(self, channel: str) -> Callable[[asyncio.Future[_Reply]], None]:
        def done(fut: asyncio.Future[_Reply]) -> None:
            error = None if fut.cancelled() else fut.exception()
            if isinstance(error, CommandError) and error.code == "unavailable" and \
                    channel in self._subs:
                self._retry_later(channel)
            elif isinstance(error, CommandError):
                self._subs.pop(channel, None)
                self._retries.pop(channel, None)
                self._events.put_nowait(error)
            elif error is None:
                self._retries.pop(channel, None)
            # ConnectionError: the next reconnect subscribes it again.
        return done

    async def _read(self, ws: ClientConnection) -> ConnectionClosed:
        """Dispatch frames until the connection is lost; returns how it was lost."""
        while True:
            try:  # recv(), not `async for`, which ends quietly on 1000/1001: we want how
                raw = await ws.recv()
            except ConnectionClosed as closed:
                return closed
            if isinstance(raw, str):  # the spec has text frames only: ignore the rest
                with contextlib.suppress(ValueError):
                    obj = json.loads(raw)
                    if isinstance(obj, dict):
                        self._dispatch(obj)

    def _dispatch(self, obj: _Reply) -> None:
        kind, channel = obj.get("type"), obj.get("channel")
        if kind is None:  # a message: the one frame without a type
            if isinstance(channel, str) and channel in self._subs:
                data: str | bytes | None = obj.get("data")
                if not isinstance(data, str):
                    b64 = obj.get("base64")
                    data = base64.b64decode(b64) if isinstance(b64, str) else None
                if data is not None:
                    pos = _message_position(obj, self._epochs.get(channel))
                    if pos is not None:
                        self._epochs[channel] = pos.epoch
                    self._events.put_nowait(Message(channel, data, pos))
            return
        ref = obj.get("id")
        if not isinstance(ref, int) or ref not in self._pending:
            return  # a reply without id (a channel in the path) or to nobody waiting
        fut, since, resub = self._pending.pop(ref)
        if kind == "subscribed" and isinstance(channel, str) \
                and (channel in self._subs or not resub):
            # Here, not in subscribe(): the Resync must precede the replay that follows.
            # (A re-subscribe of a channel unsubscribed meanwhile must not bring it back.)
            pos = _position(obj)
            if pos is not None:
                self._epochs[channel] = pos.epoch
            if self._subs.get(channel) is None:
                self._subs[channel] = since if since is not None and obj.get("recovered") \
                    else pos
            if since is not None and obj.get("recovered") is False and pos is not None:
                self._events.put_nowait(Resync(channel, pos))
        if fut.done():
            return
        if kind == "error":
            fut.set_exception(CommandError(str(obj.get("code")), str(obj.get("reason", ""))))
        else:
            fut.set_result(obj)
