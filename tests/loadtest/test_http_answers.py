"""The HTTP publisher stays in step with any HTTP/1.1 framing of the server's answers.

Against answering_server.py, a real server on loopback whose answers to
``POST /publish/...`` come with Content-Length or in chunks, whole or a byte at
a time, on keep-alive connections: every answer is matched to its own request,
so a run has no publish error and every message reaches every subscriber. A
tester that read a chunked answer as an empty one would take the chunks for the
next answers and count errors (or stall).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from .helpers import run, server_module

N, M, WINDOW = 10, 60, 4        # subscribers, messages, HTTP connections (one per window slot)


def answering_server(*args: str) -> contextlib.AbstractContextManager[int]:
    """Run answering_server.py with ``args``; yields its port."""
    return server_module("answering_server", *args)


def http_run(port: int) -> dict[str, Any]:
    return run(port, connections=N, messages=M, publisher="http", window=WINDOW)


def undelivered(r: dict[str, Any]) -> int:
    return int(r["faults"]["lost"] + r["faults"]["undelivered"])


@pytest.mark.parametrize("answers", [
    ["--framing", "content-length"],
    ["--framing", "content-length", "--split"],
    ["--framing", "chunked"],
    ["--framing", "chunked", "--split"],
    ["--framing", "chunked", "--keep-alive-header"],
], ids=["content-length", "content-length-bytewise", "chunked", "chunked-bytewise",
        "chunked-keep-alive-header"])
def test_every_answer_is_matched_to_its_request(answers: list[str]) -> None:
    with answering_server(*answers) as port:
        r = http_run(port)
    assert r["publish_errors"] == {}
    assert r["pass"] is True, r["faults"]
    assert r["run"]["messages_sent"] == M
    assert r["run"]["deliveries"] == N * M
    # Keep-alive: the WINDOW connections opened first carried every publish.
    assert r["connect"]["publishers_opened"] == WINDOW


def test_refusals_are_counted_against_their_own_publishes() -> None:
    every = 7
    with answering_server("--framing", "chunked", "--refuse-every", str(every)) as port:
        r = http_run(port)
    refused = M // every
    assert r["publish_errors"] == {"HTTP 503": refused}
    assert r["run"]["messages_sent"] == M
    assert r["run"]["deliveries"] == N * (M - refused)
    assert undelivered(r) == N * refused, "each refused message is missing, once per subscriber"


def test_a_server_closing_a_publish_connection_is_counted_once() -> None:
    with answering_server("--framing", "chunked", "--close-first") as port:
        r = http_run(port)
    assert r["publish_errors"] == {"server closed the publish connection": 1}
    assert r["run"]["messages_sent"] == M
    assert r["run"]["deliveries"] == N * M, "the other connections carried the rest"
