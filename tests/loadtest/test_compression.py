"""``ringcast loadtest --compression --payload json`` end to end, over loopback sockets:
against a permessage-deflate broadcast server made with websockets (deflate_server.py),
with and without server_no_context_takeover; a server that declines; and json without
compression, over WebSocket and HTTP publishing (faulty_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringcast.cli import main
from ringcast.loadtest.client import LoadError

from .helpers import faulty_server, run, server_module

N, M = 12, 150

ZERO = {"lost": 0, "undelivered": 0, "duplicated": 0, "out_of_order": 0, "corrupted": 0,
        "bad_opcode": 0, "protocol_errors": 0, "connections_refused": 0, "connections_failed": 0,
        "closed_by_server": 0, "publish_errors": 0}


@pytest.mark.parametrize(("args", "answer", "ratio"), [
    ((), "server_no_context_takeover", (0.15, 0.35)),
    (("--context-takeover",), "(no parameters)", (0.05, 0.25)),
    (("--context-takeover", "--server-max-window-bits", "10"), "server_max_window_bits=10",
     (0.05, 0.3)),
], ids=["no-context-takeover", "context-takeover", "window-10"])
def test_compressed_json_fan_out_zero_faults(args: tuple[str, ...], answer: str,
                                             ratio: tuple[float, float]) -> None:
    with server_module("deflate_server", *args) as port:
        r = run(port, connections=N, messages=M, size=1024, compression=True, payload="json")
    assert r["faults"] == ZERO, r["closed_by_server"]
    assert r["pass"] is True
    assert r["run"]["deliveries"] == N * M
    z = r["compression"]
    assert z["negotiated_subscribers"] == N and z["negotiated_publishers"] == 1
    assert z["parameters"] == {answer: N + 1} and z["declined"] == 0
    assert z["compressed_messages"] == N * M            # websockets compresses every one
    assert z["inflate_errors"] == z["inflate_oversize"] == 0
    run_ = r["run"]
    assert run_["payload_bytes_per_delivery"] == 1024
    low, high = ratio
    assert low * 1024 < run_["wire_bytes_per_delivery"] < high * 1024
    if answer == "server_no_context_takeover":
        assert z["client_inflate_streams"] <= 16        # the pool, not one per connection
    else:
        assert z["client_inflate_streams"] == N         # one per subscriber, kept


def test_compressed_binary_and_several_publishers() -> None:
    """The binary pattern does not compress: more bytes on the wire than in the message."""
    with server_module("deflate_server") as port:
        r = run(port, connections=N, messages=M, size=300, compression=True, publishers=3,
                window=12)
    assert r["faults"] == ZERO
    assert r["compression"]["negotiated_publishers"] == 3
    assert r["run"]["wire_bytes_per_delivery"] > 300


def test_over_several_client_processes() -> None:
    with server_module("deflate_server") as port:
        r = run(port, connections=N, messages=M, size=512, compression=True, payload="json",
                processes=2)
    assert r["faults"] == ZERO and r["connect"]["processes"] == 2
    assert r["compression"]["negotiated_subscribers"] == N
    assert r["compression"]["compressed_messages"] == N * M


def test_without_compression_nothing_is_offered() -> None:
    """The same server, no offer: it answers no extension and sends plain frames."""
    with server_module("deflate_server") as port:
        r = run(port, connections=N, messages=M, size=1024, payload="json")
    assert r["faults"] == ZERO and r["compression"] is None
    assert r["run"]["wire_bytes_per_delivery"] == 1024 + 4


def test_a_server_that_declines_fails_every_connection() -> None:
    with server_module("deflate_server", "--decline") as port, \
            pytest.raises(LoadError) as info:
        run(port, connections=N, messages=M, compression=True)
    assert f"{N} the server declined permessage-deflate" in str(info.value)


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    with server_module("deflate_server") as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "--compression", "--payload",
                   "json", "--size", "1024", "-c", "5", "-m", "40", "-q", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "1024-byte json messages" in text
    assert ("compression permessage-deflate on 5/5 subscribers, 1/1 publishers "
            "(server_no_context_takeover x6)") in text
    assert "bytes      per delivery: 1,024 payload, " in text
    assert "200 messages came compressed" in text and "result     PASS" in text
    r = json.loads(out.read_text())
    assert r["options"]["compression"] is True and r["options"]["payload"] == "json"
    assert r["compression"]["negotiated_subscribers"] == 5


def test_declined_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with server_module("deflate_server", "--decline") as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "--compression", "-c", "3",
                   "-m", "5", "-q"])
    assert rc == 3
    assert "3 the server declined permessage-deflate" in capsys.readouterr().err


def test_json_needs_its_smallest_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "ws://127.0.0.1:1/x", "-m", "1", "--payload", "json",
                 "--size", "162"]) == 2
    assert "--payload json needs --size of at least 163 bytes" in capsys.readouterr().err


@pytest.mark.parametrize("publisher", ["ws", "http"])
def test_json_without_compression_as_text_frames(publisher: str) -> None:
    """faulty_server relays a WebSocket message with its opcode and an application/json
    POST as a text frame: the loadtest expects text, and checks every byte."""
    with faulty_server("--fragment", "3") as port:
        r = run(port, connections=N, messages=M, size=400, payload="json", publisher=publisher)
    assert r["faults"] == ZERO
    assert r["run"]["deliveries"] == N * M and r["run"]["fragmented_messages"] == N * M


def test_a_corrupted_json_message_is_counted() -> None:
    with faulty_server("--corrupt", "3,9", "--affect-every", "3") as port:
        r = run(port, connections=N, messages=M, size=400, payload="json")
    assert r["faults"] == {**ZERO, "corrupted": 2 * 4}
