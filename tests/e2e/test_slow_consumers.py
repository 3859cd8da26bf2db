"""Slow consumers: a client that stops reading never delays the others or grows memory.

A raw-socket subscriber with a small receive buffer completes the handshake and
then reads nothing, while websockets subscribers on the same channel read 1 KiB
messages. The publisher paces itself on the healthy subscribers (a batch of
16 KiB, then wait until every healthy one has it), so a healthy subscriber
never has more than one batch queued: only the slow one can cross the 64 KiB
cap, and if it made anyone wait the pacing would stall.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RawWebSocket, close_payload

from .conftest import StartServer
from .helpers import (
    metrics,
    publish,
    run,
    wait_until,
)
from .server import ServerProcess

HEALTHY = 100
MESSAGES = 2000
SIZE = 1024
FRAME = SIZE + 4  # 2-byte header + 16-bit length
BATCH = 16
QUEUE_CAP = 65536
SEND_BUFFER = 128 << 10  # limits.socket_send_buffer (Linux doubles it)
RSS_HEADROOM = 64 << 20
# Small, but not tiny: with 4 KiB on loopback, draining it afterwards sometimes crawls at
# ~20 KB/s (TCP probing a near-zero window; seen only with SEND_ZC on), which would make
# the drain checks time out for reasons outside the server's policy code.
SLOW_RCVBUF = 16384
# What a non-reader may hold before the policy applies: the queue cap, the kernel send
# buffer (doubled by Linux), its own receive buffer (doubled too), and one 16 KiB batch.
MAX_HELD = QUEUE_CAP + 2 * SEND_BUFFER + 2 * SLOW_RCVBUF + BATCH * FRAME
OPEN: dict[str, Any] = {
    "ping_interval": None,
    "open_timeout": 20,
    "close_timeout": 5,
    "max_size": None,
}


def payload(i: int) -> bytes:
    return f"{i:08d}".encode().ljust(SIZE, b".")


def server_env(policy: str) -> dict[str, object]:
    return {
        "LIMITS_QUEUE_MAX_BYTES": QUEUE_CAP,
        "LIMITS_SLOW_CONSUMER_POLICY": policy,
        "LIMITS_SOCKET_SEND_BUFFER": SEND_BUFFER,
        "LIMITS_PING_INTERVAL": 0,
        # Long enough that the slow client can still drain and find the close frame.
        "LIMITS_CLOSE_TIMEOUT": 60,
    }


class Healthy:
    """Readers that check order as they go and tell when all reached a count."""

    def __init__(self, conns: list[ClientConnection]) -> None:
        self.conns = conns
        self.counts = [0] * len(conns)
        self.errors: list[str] = []
        self.target = 0
        self.reached = asyncio.Event()
        self.tasks = [asyncio.create_task(self._read(i, c)) for i, c in enumerate(conns)]

    async def _read(self, i: int, ws: ClientConnection) -> None:
        async for msg in ws:
            if isinstance(msg, str):
                continue  # the drop test's "tail" marker
            if msg != payload(self.counts[i]) and len(self.errors) < 10:
                self.errors.append(f"subscriber {i}: message {self.counts[i]} is {msg[:16]!r}")
            self.counts[i] += 1
            if self.counts[i] == self.target and all(c >= self.target for c in self.counts):
                self.reached.set()

    async def wait_all(self, target: int, timeout: float = 20.0) -> None:
        self.target = target
        self.reached.clear()
        if all(c >= target for c in self.counts):
            return
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"healthy subscribers stalled: want {target}, min {min(self.counts)}, "
                f"errors {self.errors}") from None

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def broadcast(server: ServerProcess, groups: list[Healthy], pub: ClientConnection,
                    first: int, count: int) -> int:
    """Publish messages first..first+count-1 in paced batches; return the peak RSS seen."""
    peak = server.rss_bytes()
    for start in range(first, first + count, BATCH):
        end = min(start + BATCH, first + count)
        for i in range(start, end):
            await pub.send(payload(i))
        for group in groups:
            await group.wait_all(end)
        peak = max(peak, server.rss_bytes())
    for group in groups:
        assert not group.errors, group.errors
    return peak


def slow_detected(port: int, policy: str) -> bool:
    m = metrics(port)
    if policy == "close":
        return m.value("ringcast_slow_consumer_closes_total") > 0
    return m.value("ringcast_dropped_deliveries_total") > 0


def drain(slow: RawWebSocket, until_text: str | None, timeout: float = 20.0) -> tuple[
        list[int], list[tuple[int, bytes]]]:
    """Read the slow socket: data frame indices, and the other frames, until a close
    frame, the end of the connection, or a text frame equal to ``until_text``."""
    indices: list[int] = []
    others: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = slow.recv_frame(timeout=max(0.1, deadline - time.monotonic()))
        if frame is None:
            return indices, others
        if frame.opcode == OP_BINARY:
            assert len(frame.payload) == SIZE
            indices.append(int(frame.payload[:8]))
            assert frame.payload == payload(indices[-1])
            continue
        others.append((frame.opcode, frame.payload))
        if frame.opcode == OP_CLOSE or (
                frame.opcode == OP_TEXT and frame.payload.decode() == until_text):
            return indices, others


def contiguous_prefix(indices: list[int]) -> int:
    """The length of the run 0, 1, 2, ... at the start of ``indices``."""
    n = 0
    while n < len(indices) and indices[n] == n:
        n += 1
    return n


async def check_policy(server: ServerProcess, slow: RawWebSocket, policy: str,
                       pub: ClientConnection, sent: int) -> int:
    """Check what the slow client sees; return how many messages reached it before the
    policy first applied (what the server and kernel held for it)."""
    port = server.port
    if policy == "close":
        m = await asyncio.to_thread(metrics, port)
        assert m.value("ringcast_slow_consumer_closes_total") >= 1, m.text
        # What reached it is an in-order prefix, then the close frame with 3008.
        indices, others = await asyncio.to_thread(drain, slow, None)
        assert indices == list(range(len(indices)))
        assert len(indices) < sent
        if slow.reset:
            return len(indices)  # allowed: the connection was reset instead
        assert others, f"no close frame after {len(indices)} messages (eof={slow.eof})"
        opcode, data = others[-1]
        assert opcode == OP_CLOSE, others
        assert int.from_bytes(data[:2], "big") == 3008, data
        slow.send_frame(OP_CLOSE, close_payload(3008))
        await asyncio.to_thread(slow.wait_eof, 10)
        return len(indices)

    m = await asyncio.to_thread(metrics, port)
    assert m.value("ringcast_dropped_deliveries_total") > 0, m.text
    assert m.value("ringcast_slow_consumer_closes_total") == 0
    # Drain in the background; once nothing is queued anywhere, a last message
    # must reach the slow client too: it was skipped, never closed.
    reader = asyncio.create_task(asyncio.to_thread(drain, slow, "tail"))

    def queue_empty() -> bool:
        return metrics(port).value("ringcast_queued_bytes") == 0

    deadline = time.monotonic() + 20
    while not await asyncio.to_thread(queue_empty):
        if reader.done():
            await reader  # the reader failed: its error says why
        assert time.monotonic() < deadline, "queued bytes never went back to 0"
        await asyncio.sleep(0.05)
    await pub.send("tail")
    indices, others = await reader
    assert not slow.eof, "the slow client was disconnected under the drop policy"
    assert others[-1] == (OP_TEXT, b"tail"), others
    assert all(op != OP_CLOSE for op, _ in others), others
    assert indices == sorted(set(indices)), "drops must never reorder or repeat"
    assert len(indices) < sent, "nothing was dropped for the slow client"
    return contiguous_prefix(indices)


class TestSlowConsumer:
    @pytest.mark.parametrize("policy", ["close", "drop"])
    def test_policy(self, start_server: StartServer, policy: str) -> None:
        """100 healthy subscribers get 2000 x 1 KiB in order while one client reads
        nothing; by then the server has applied the policy to that one, and only to it,
        holding about queue_max_bytes (+ the kernel send buffer) for it. RSS stays
        bounded throughout."""
        server = start_server(**server_env(policy))

        async def main() -> None:
            url = f"{server.ws_url}/firehose"
            conns = await asyncio.gather(*(connect(url, **OPEN) for _ in range(HEALTHY)))
            pub = await connect(url, **OPEN)
            slow = await asyncio.to_thread(
                RawWebSocket.connect, server.port, "/firehose", rcvbuf=SLOW_RCVBUF)
            healthy = Healthy(list(conns))
            try:
                baseline = server.rss_bytes()
                peak = await broadcast(server, [healthy], pub, 0, MESSAGES)
                assert await asyncio.to_thread(slow_detected, server.port, policy), (
                    f"no {policy} for a client that read nothing of {MESSAGES} x {SIZE} B")
                # Keep going a little: the healthy ones must not notice anything.
                peak = max(peak, await broadcast(server, [healthy], pub, MESSAGES, 256))
                assert peak - baseline < RSS_HEADROOM, (baseline, peak)
                held = await check_policy(server, slow, policy, pub, MESSAGES + 256) * FRAME
                print(f"{held} bytes reached the non-reader before the {policy} policy applied")
                assert held <= MAX_HELD, (
                    f"{held} bytes reached a client that never reads before the {policy} "
                    f"policy applied; queue_max_bytes {QUEUE_CAP}, socket_send_buffer "
                    f"{SEND_BUFFER}")
            finally:
                slow.close()
                await asyncio.gather(healthy.close(), pub.close())

        run(main(), timeout=150)

    def test_healthy_only_no_drops(self, start_server: StartServer) -> None:
        """Control: the same broadcast with nobody slow drops and closes nothing."""
        server = start_server(**server_env("close"))

        async def main() -> None:
            url = f"{server.ws_url}/firehose"
            conns = await asyncio.gather(*(connect(url, **OPEN) for _ in range(HEALTHY)))
            pub = await connect(url, **OPEN)
            healthy = Healthy(list(conns))
            try:
                await broadcast(server, [healthy], pub, 0, MESSAGES)
            finally:
                await asyncio.gather(healthy.close(), pub.close())
            m = await asyncio.to_thread(metrics, server.port)
            assert m.value("ringcast_dropped_deliveries_total") == 0
            assert m.value("ringcast_slow_consumer_closes_total") == 0

        run(main(), timeout=120)


def _server_sockets_to(server_port: int, client_port: int) -> list[str]:
    """TCP states (hex, /proc/net/tcp) of sockets from the server's port to a client's."""
    states = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                states.append(state)
    return states


def test_non_reader_past_close_timeout_is_reset_and_leaves_no_orphan(
        start_server: StartServer) -> None:
    """A slow consumer closed with 3008 that never reads is reset at close_timeout:
    no orphaned socket keeps its unsent bytes in the kernel afterwards."""
    env = server_env("close") | {"LIMITS_CLOSE_TIMEOUT": 1}
    server = start_server(**env)
    slow = RawWebSocket.connect(server.port, "/firehose", rcvbuf=SLOW_RCVBUF)
    client_port = slow.sock.getsockname()[1]
    try:
        for i in range(MESSAGES):
            publish(server.port, "firehose", payload(i))
            if i % 64 == 63 and slow_detected(server.port, "close"):
                break
        assert slow_detected(server.port, "close"), "the non-reader was never closed"
        # Its backlog was dropped at the 3008, not left to wait for close_timeout.
        assert metrics(server.port).value("ringcast_slow_consumer_dropped_bytes_total") > 0
        assert _server_sockets_to(server.port, client_port), "no server socket before the reset"

        def gone() -> bool:
            return not _server_sockets_to(server.port, client_port)

        run(wait_until(gone, 10, "the server's socket to the non-reader to go"))
        # The client, reading at last, finds whole frames and then the reset.
        while slow.recv_frame(timeout=10) is not None:
            pass
        assert slow.reset
    finally:
        slow.close()
