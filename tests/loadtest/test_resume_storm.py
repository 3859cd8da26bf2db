"""``ringcast loadtest --resume-storm`` against a real `ringcast serve` with history, on
both backends: a storm within history recovers everything, once and in order; one beyond
it is reported as resyncs and a failed run, not as zero loss."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringcast.cli import main
from ringcast.loadtest.resume_connections import SubscriberConn as _SubConn
from ringcast.loadtest.resume_counts import Subscriber
from ringcast.loadtest.resume_options import ResumeOptions, body
from ringcast.loadtest.resume_run import ResumeRun as _Run
from ringcast.loadtest.resume_ws import mask_frame
from ringcast.loadtest.target import parse_target
from ringcast.ringio import Engine, RingUnavailable, probe

from .helpers import ringcast_server

SUBSCRIBERS = 200
STORM = ["-c", str(SUBSCRIBERS), "--rate", "500", "--outage", "0.5", "--after-resume", "0.5",
         "-q", "--max-time", "25"]


@pytest.fixture(params=["io_uring", "epoll"], scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "io_uring":
        p = probe(Engine.IO_URING)
        if isinstance(p, RingUnavailable):
            pytest.skip(f"io_uring unavailable: {p.cause}")
    return str(request.param)


@pytest.fixture(scope="module")
def deep(backend: str) -> Iterator[int]:
    """A server keeping far more history than a storm publishes while away (~250)."""
    with ringcast_server(backend, HISTORY_CHANNELS="rs*", HISTORY_SIZE="5000") as (port, _):
        yield port


@pytest.fixture(scope="module")
def shallow(backend: str) -> Iterator[int]:
    """A server keeping 20 messages per channel: a 0.5 s outage at 500/s outruns it."""
    with ringcast_server(backend, HISTORY_CHANNELS="rs*", HISTORY_SIZE="20") as (port, _):
        yield port


def storm(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["loadtest", url, "--resume-storm", *STORM, *args, "--json", "-"])
    return rc, json.loads(capsys.readouterr().out)


def assert_everything_recovered(r: dict[str, Any], subscribers: int) -> None:
    f, m, st = r["faults"], r["messages"], r["storm"]
    assert f["lost"] == f["duplicated"] == f["out_of_order"] == f["resyncs"] == 0, f
    assert not any(f.values()), f
    assert r["pass"] is True and not r["cut_short"]
    assert r["connect"]["subscribers_opened"] == st["dropped"] == st["back"] == subscribers
    assert st["resumed"] == subscribers and st["resynced"] == 0
    assert st["published_during_outage"] > 0
    assert m["recovered"] > 0 and m["complete_subscribers"] == subscribers
    assert st["recovered_subscribers"] == subscribers
    assert st["recover_ms"]["count"] == subscribers and st["recover_ms"]["max"] > 0
    for p in r["subscribers"]:
        assert p["complete"] and p["expected"] == p["received"] > 0, p
        # Each missed at least what was published while it was away, and got it replayed.
        assert p["recovered"] > 0 and p["resumed"] == 1 and p["recover_ms"] is not None, p
    # Every message acknowledged reached every subscriber of its channel: the per
    # subscriber counts add up to the channel's positions.
    for ch in r["channels"]:
        subs = [p for p in r["subscribers"] if p["channel"] == ch["channel"]]
        assert all(p["expected"] == ch["last_offset"] - p["first_offset"] for p in subs)
    assert m["published"] == sum(ch["published"] for ch in r["channels"]) > 0


def test_a_storm_within_history_recovers_every_message_once(
        deep: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc, r = storm(capsys, f"ws://127.0.0.1:{deep}/rs-one")
    assert rc == 0, r["verdict"]
    assert_everything_recovered(r, SUBSCRIBERS)
    assert r["verdict"].startswith("every subscriber resumed")


def test_over_channels_with_an_http_publisher(
        deep: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc, r = storm(capsys, f"ws://127.0.0.1:{deep}/rs-http", "--channels", "3",
                  "--publisher", "http")
    assert rc == 0, r["verdict"]
    assert_everything_recovered(r, SUBSCRIBERS)
    assert [ch["channel"] for ch in r["channels"]] == ["rs-http-0", "rs-http-1", "rs-http-2"]
    assert [ch["subscribers"] for ch in r["channels"]] == [67, 67, 66]


def test_a_storm_beyond_history_reports_resyncs_not_zero_loss(
        shallow: int, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main(["loadtest", f"ws://127.0.0.1:{shallow}/rs-short", "--resume-storm", *STORM,
               "--json", str(out)])
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert rc == 1
    f, st = r["faults"], r["storm"]
    assert f["resyncs"] == st["resynced"] == SUBSCRIBERS and st["resumed"] == 0
    assert f["lost"] == r["messages"]["not_replayed"] > 0
    assert f["duplicated"] == f["out_of_order"] == 0
    assert r["pass"] is False and r["verdict"].startswith("RESYNC")
    assert all(p["resyncs"] == 1 and not p["complete"] and p["lost"] > 0
               for p in r["subscribers"])
    # The text says so, where a reader looks: the resume line, the verdict, the result.
    assert f"{SUBSCRIBERS} recovered:false" in text and "<- RESYNC:" in text
    assert "NOT a zero-loss resume" in text
    assert "lost 0," not in text and "result     FAIL" in text


def test_a_channel_without_history_is_refused_with_the_setting_to_change(
        deep: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["loadtest", f"ws://127.0.0.1:{deep}/plain", "--resume-storm", "-c", "5", "-q"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "keeps no history" in err and "RINGCAST_HISTORY_CHANNELS='plain'" in err


@pytest.mark.parametrize(("args", "says"), [
    (["--resume-storm", "--storm", "1@1"], "--resume-storm does not take --storm"),
    (["--resume-storm", "-m", "10", "--window", "4"],
     "--resume-storm does not take --messages, --window"),
    (["--outage", "1", "-m", "1"], "--outage only with --resume-storm"),
    (["--resume-storm", "--channels", "0"], "--channels must be in"),
    (["--resume-storm", "--size", "8"], "--size must be in"),
    (["--resume-storm", "--channels", "2", "--publisher", "http", "--publish-path", "/p"],
     "must hold {channel}"),
])
def test_resume_storm_usage_errors(args: list[str], says: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before anything connects: nothing listens at port 9.
    assert main(["loadtest", "ws://127.0.0.1:9/rs", *args]) == 2
    assert says in capsys.readouterr().err


# -- the counting, frame by frame (no server: what a real one never sends) ------------------


def test_frames_in_and_out() -> None:
    for payload in (b"", b"x" * 125, b"y" * 126, b"z" * 70_000):
        frame = mask_frame(1, payload)
        assert frame[0] == 0x81 and frame[1] & 0x80          # final text frame, masked
        n, at = frame[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(frame[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(frame[2:10], "big"), 10
        key, body = frame[at : at + 4], frame[at + 4 :]
        assert n == len(payload) == len(body)
        assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def frame(obj: dict[str, Any]) -> bytes:
    """``obj`` as the server's unmasked text frame (under 64 KiB)."""
    data = json.dumps(obj).encode()
    assert len(data) < 1 << 16
    return (bytes((0x81, len(data))) if len(data) < 126
            else bytes((0x81, 126)) + len(data).to_bytes(2, "big")) + data


def msg(offset: int, data: str | None = None, epoch: str | None = None) -> bytes:
    """A message frame of channel rs: no "type"; an epoch only where the server names one
    (give it for offset 1)."""
    obj: dict[str, Any] = {"channel": "rs"}
    if epoch is not None:
        obj["epoch"] = epoch
    obj["offset"] = offset
    obj["data"] = body(offset, 64) if data is None else data
    return frame(obj)


def two_subscribers() -> tuple[_Run, tuple[Subscriber, Subscriber], list[_SubConn]]:
    """A resume-storm run of two subscribers of "rs", with their connections open (as
    after their 101s), nothing received yet."""
    opts = ResumeOptions(url="ws://127.0.0.1:9/rs", connections=2)
    run = _Run(opts, parse_target(opts.url), None)
    a, b = run.subs
    conns = [_SubConn(run, a), _SubConn(run, b)]
    for c in conns:
        c._open = True
    return run, (a, b), conns


def test_a_subscriber_counts_duplicates_gaps_disorder_replays_and_bad_data() -> None:
    async def go() -> None:
        run, (a, b), conns = two_subscribers()
        reply = frame({"type": "subscribed", "channel": "rs", "epoch": "E", "offset": 10})
        # One read cut anywhere (here mid-frame) reads alike: a and b share the frames.
        stream = reply + msg(11) + msg(12) + msg(12) + msg(14) + msg(13) + msg(3)
        for c in conns:
            c.data_received(stream[:50])
            c.data_received(stream[50:])
        for s in (a, b):
            assert (s.start, s.highest, s.contig) == (10, 14, 14)
            assert (s.duplicated, s.out_of_order, s.unexpected) == (1, 1, 1)
        # a resumes: since 14, the server replays 15..17 (16 with data not the run's), then
        # 18 live; b resyncs from 20: 15..20 are never sent to it; 21 reaches both, with
        # another message's data for b (two messages at one position).
        a.since = b.since = 14
        conns[0].data_received(
            frame({"type": "subscribed", "channel": "rs", "epoch": "E", "offset": 17,
                   "recovered": True}) + msg(15) + msg(16, "garbage") + msg(17) + msg(18)
            + msg(21))
        conns[1].data_received(
            frame({"type": "subscribed", "channel": "rs", "epoch": "E", "offset": 20,
                   "recovered": False}) + msg(21, body(7, 64)) + msg(1, epoch="other"))
        assert (a.resumes, a.recovered, a.contig, a.highest) == (1, 3, 18, 21)
        assert (b.resyncs, b.not_replayed, b.contig, b.highest, b.foreign) == (1, 6, 14, 21, 1)
        assert run.bad_data == 2
        for ch in run.channels:
            ch.final = 21
        assert a.expected() == b.expected() == 11
        assert a.received_expected() == 9 and b.received_expected() == 5
        await run.close()

    asyncio.run(go())


def test_a_subscriber_reads_epoch_less_messages_in_the_epoch_it_is_in() -> None:
    """A message names its epoch only at offset 1: the ones after it are in the epoch of
    the subscribed reply or of the last message that named one. A new epoch named
    mid-connection (history restarted) makes the rest foreign, though the bytes of an
    epoch-less frame are the same in both epochs (and parsed once)."""

    async def go() -> None:
        run, (a, b), conns = two_subscribers()
        for c in conns:
            c.data_received(frame({"type": "subscribed", "channel": "rs", "epoch": "E",
                                   "offset": 0}))
        conns[0].data_received(msg(1, epoch="E") + msg(2) + msg(3))
        assert (a.contig, a.highest, a.foreign, a.current) == (3, 3, 0, "E")
        # b: the same, then the channel's history restarts in epoch F.
        conns[1].data_received(msg(1, epoch="E") + msg(2) + msg(1, epoch="F") + msg(2)
                               + msg(3))
        assert (b.contig, b.highest, b.foreign, b.current) == (2, 2, 3, "F")
        assert (b.duplicated, b.out_of_order, b.unexpected) == (0, 0, 0)
        assert len(run.cache) == 4                              # msg(2) parsed once
        # A resync in F (its subscribed reply) does not make F's messages its own: its
        # expectations are in E, whose positions F's do not continue.
        conns[1].data_received(frame({"type": "subscribed", "channel": "rs", "epoch": "F",
                                      "offset": 3, "recovered": False}) + msg(4))
        assert (b.resyncs, b.epoch_changes, b.foreign, b.highest) == (1, 1, 4, 2)
        assert run.bad_data == 0
        await run.close()

    asyncio.run(go())


def test_a_subscriber_subscribed_before_any_message_takes_the_first_epoch() -> None:
    """Subscribed at offset 0 (epoch "" when the server has none yet, or one that is then
    forgotten), the first epoch to begin is the subscriber's own: nothing came before."""

    async def go() -> None:
        run, (a, b), conns = two_subscribers()
        for c, (epoch, offset) in zip(conns, (("", 0), ("E", 2)), strict=True):
            c.data_received(frame({"type": "subscribed", "channel": "rs", "epoch": epoch,
                                   "offset": offset}))
        conns[0].data_received(msg(1, epoch="X") + msg(2))
        assert (a.epoch, a.current, a.contig, a.foreign) == ("X", "X", 2, 0)
        # Past offset 0, another epoch is not adopted: its messages are foreign.
        conns[1].data_received(msg(3) + msg(1, epoch="X") + msg(2))
        assert (b.epoch, b.current, b.contig, b.foreign) == ("E", "X", 3, 2)
        await run.close()

    asyncio.run(go())
