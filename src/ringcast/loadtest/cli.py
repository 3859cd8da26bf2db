"""``ringcast loadtest URL ...``: the subcommand, added to ringcast's CLI by `add_parser`.

Exit codes: 0 the run passed (no fault), 1 a fault was counted (lost, duplicated,
out of order, corrupted, a failed or refused connection...), 2 bad arguments or
a target that is refused, 3 the run could not take place (nobody could connect).
``--resume-storm`` runs `ringcast.loadtest.resume` instead, with the same exit codes (1
also for a resync: a resume the server's history could not serve; 3 also for a channel
that keeps no history).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAULTS, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3

EXAMPLE = ("example: ringcast loadtest ws://127.0.0.1:8080/bench --connections 1000 "
           "--messages 10000 --size 64 --window 8")
RESUME_EXAMPLE = ("ringcast loadtest ws://127.0.0.1:8080/orders --resume-storm -c 2000 "
                  "--rate 100 --outage 1")

# The options of the fan-out measurement that a resume storm does not take: given with
# --resume-storm, they are refused rather than silently ignored.
NOT_WITH_RESUME = ("messages", "duration", "payload", "compression", "window", "publishers",
                   "http_connections", "message_timeout", "engine",
                   "source_addresses", "bind", "source_ports", "hold", "channel_per_process",
                   "rounds", "processes", "storm", "plot")
RESUME_ONLY = ("outage", "channels", "after_resume")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "loadtest", help="measure a WebSocket fan-out server (any server, not only ringcast)",
        description="Open subscribers to a ws:// URL, publish to them, check every delivery "
                    "and report throughput, latency and faults. " + EXAMPLE + ". With "
                    "--resume-storm, a ringcast.v1 resume storm instead: " + RESUME_EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("url", help="ws://host:port/channel; subscribers connect here")
    p.add_argument("--connections", "-c", type=int, default=100, help="subscribers")
    p.add_argument("--messages", "-m", type=int, default=None,
                   help="messages to publish (0: hold idle connections for --duration)")
    p.add_argument("--duration", "-d", type=float, default=None,
                   help="seconds of publishing (a bound: --messages and/or --duration)")
    p.add_argument("--size", "-s", type=int, default=64,
                   help="message bytes (>= 24; >= 163 with --payload json)")
    p.add_argument("--payload", choices=["binary", "json"], default="binary",
                   help="binary: binary frames, a 20-byte header (sequence, timestamp, "
                        "publisher) and a pseudo-random pattern that does not compress; "
                        "json: text frames, a ticker-like JSON object of exactly --size "
                        "bytes ({\"seq\":\"<hex>\",\"ts\":...,\"ticks\":[{\"sym\":\"AAPL\","
                        "\"bid\":\"0187.46\",...},...]}) that deflates as a real feed does, "
                        "to about 29%% of its size at 1024 bytes on its own (HTTP publishing "
                        "sends it as application/json). Every byte is checked either way")
    p.add_argument("--compression", action="store_true",
                   help="offer permessage-deflate (RFC 7692) on every WebSocket, as browsers "
                        "do ('permessage-deflate; client_max_window_bits'); a connection "
                        "whose server declines is a failed one. Compressed messages are "
                        "inflated and checked; the report gives the bytes on the wire per "
                        "delivery. Client memory: with server_no_context_takeover, an inflate "
                        "stream only while a message is arriving; without, one per "
                        "connection, about 7 KiB + the server's window (32 KiB at 15 bits). "
                        "Publishers send uncompressed")
    p.add_argument("--window", "-w", type=int, default=8,
                   help="closed loop: messages in flight")
    p.add_argument("--rate", "-r", type=float, default=None,
                   help="open loop: messages/s (latency from the scheduled send time); "
                        "--resume-storm: messages/s over all its channels (default 500)")
    p.add_argument("--publisher", choices=["ws", "http"], default="ws",
                   help="publish over WebSocket (the URL) or HTTP POST --publish-path")
    p.add_argument("--publishers", type=int, default=1, help="publisher ids (and ws connections)")
    p.add_argument("--publish-path", default=None,
                   help="HTTP publish path (default /publish/<channel>)")
    p.add_argument("--http-connections", type=int, default=16,
                   help="HTTP publisher connections (open loop; closed loop uses --window)")
    p.add_argument("--connect-concurrency", type=int, default=256,
                   help="connections and handshakes in flight while connecting")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds one connection may take to open")
    p.add_argument("--message-timeout", type=float, default=5.0,
                   help="seconds after which a message in flight is given up on")
    p.add_argument("--drain-timeout", type=float, default=5.0,
                   help="seconds to wait for messages in flight after the last send")
    p.add_argument("--max-time", type=float, default=600.0,
                   help="hard cap on the whole run, seconds")
    p.add_argument("--engine", choices=["auto", "io_uring", "epoll"], default="auto",
                   help="the client's own I/O engine")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="a local server process to measure (CPU per delivery, RSS); repeatable")
    p.add_argument("--source-addresses", type=int, default=0,
                   help="--bind kernel: spread connections over 127.0.0.1..N; --bind "
                        "explicit: source addresses per process (0: as needed)")
    p.add_argument("--bind", choices=["auto", "explicit", "kernel"], default="auto",
                   help="how each socket gets its source (address, port). explicit: bound "
                        "to a pair of its own before connect (SO_REUSEADDR); process k of "
                        "the team owns the addresses 127.(k+1).x.y with every port of "
                        "--source-ports, so no two processes share a pair, and a run that "
                        "needs more pairs than that fails at once. kernel: the kernel "
                        "picks the port at connect (IP_BIND_ADDRESS_NO_PORT over "
                        "127.0.0.1..N once one address is not enough). auto: explicit for "
                        "a loopback IPv4 target once the connections need more than one "
                        "source address, kernel below that. Why: past ~850,000 sockets on "
                        "the host the kernel's port search gets about half the ephemeral "
                        "range per address and takes ~10 ms per connect; explicit pairs "
                        "cost one bind() and find no conflict. Below that the kernel is "
                        "as fast and the connections keep coming from 127.0.0.1")
    p.add_argument("--source-ports", metavar="FIRST-LAST", type=_ports,
                   default="10000-32767",
                   help="--bind explicit: the ports of each source address. The default "
                        "stays below Linux's default ephemeral range (32768-60999): ports "
                        "bound here are skipped by the kernel's own port choice for every "
                        "other program's connects, so these leave that range alone")
    p.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                   help="once every process has all its subscribers, hold them connected "
                        "and idle that long before publishing; the server's CPU over it is "
                        "reported as keepalive CPU (hold longer than the server's ping "
                        "interval, 25 s for ringcast, to include its pings)")
    p.add_argument("--channel-per-process", action="store_true",
                   help="client process k subscribes to CHANNEL-k (k from 0) instead of "
                        "CHANNEL, and the lead has one WebSocket publisher per channel; with "
                        "--rounds, every channel publishes one message a round")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds: every publisher sends one message, the next round starts "
                        "when every subscriber of every process has them all; reports "
                        "each round's time (p50/p99). Instead of --messages/--rate")
    p.add_argument("--processes", "-p", type=int, default=0,
                   help="client processes sharing the subscribers, with one report "
                        "(0: as many as the open-files limit needs)")
    p.add_argument("--storm", metavar="FRACTION@SECONDS", type=_storm, default=None,
                   help="drop that fraction of the subscribers at once, that many seconds "
                        "into publishing (e.g. 1@5 or 25%%@10); report how long until all "
                        "are back and receiving")
    p.add_argument("--resume-storm", action="store_true",
                   help="a resume storm of ringcast.v1 subscribers (docs/history.md) instead "
                        "of the fan-out measurement: -c subscribers subscribe to the URL's "
                        "channel (the socket opens the URL's directory, / for ws://H:P/ch) "
                        "while one publisher per channel publishes numbered messages at "
                        "--rate; once each has had a few, all are reset at once (RST, no "
                        "close frame), stay away --outage seconds while publishing goes on, "
                        "then reconnect (--connect-concurrency in flight) and resubscribe "
                        "with since = their last position; publishing goes on "
                        "--after-resume seconds, stops, and the run waits (--drain-timeout) "
                        "for every subscriber to have everything. Reports messages "
                        "recovered, lost, duplicated, out of order, resyncs "
                        "(recovered:false) and time to recover (p50/p99/max). The channel "
                        "must keep history larger than what is published during the "
                        "outage, e.g. RINGCAST_HISTORY_CHANNELS and RINGCAST_HISTORY_SIZE. "
                        "Takes -c, --size, --rate, --publisher, --publish-path ({channel} "
                        "for the channel), --connect-*, --drain-timeout, --max-time, "
                        "--server-pid, --json, -q")
    # Not given: absent from the namespace (so --help shows no "default: None"), and
    # ResumeOptions' default applies.
    p.add_argument("--outage", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                   help="--resume-storm: seconds every subscriber stays away (default 1)")
    p.add_argument("--channels", type=int, default=argparse.SUPPRESS, metavar="K",
                   help="--resume-storm: spread the subscribers over K channels, "
                        "CHANNEL-0..CHANNEL-<K-1>, one publisher each (default 1: CHANNEL)")
    p.add_argument("--after-resume", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                   help="--resume-storm: seconds publishing goes on once every subscriber "
                        "is back (default 1)")
    p.add_argument("--i-own-this-host", action="store_true",
                   help="allow a target that is not a loopback address")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON ('-': stdout, "
                   "instead of the text)")
    p.add_argument("--plot", metavar="FILE.png", help="draw latency and throughput (matplotlib)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    p.set_defaults(fn=run)
    # What each option parses to when not given (types applied), for --resume-storm to
    # tell which of the options it does not take were given.
    untouched = vars(p.parse_args(["ws://127.0.0.1/x"]))
    p.set_defaults(not_with_resume={k: untouched[k] for k in NOT_WITH_RESUME})
    return p


def _ports(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--source-ports {text!r}: expected FIRST-LAST, "
                                         "e.g. 10000-32767") from None
    if not 1 <= first <= last <= 65535:
        raise argparse.ArgumentTypeError(f"--source-ports {text!r}: FIRST <= LAST within "
                                         "1-65535")
    return first, last


def _storm(text: str) -> tuple[float, float]:
    from ringcast.loadtest.storm import parse_storm  # noqa: PLC0415

    try:
        plan = parse_storm(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return (plan.fraction, plan.at)


def run(args: argparse.Namespace) -> int:
    if args.resume_storm:
        return run_resume(args)
    given = [_flag(k) for k in RESUME_ONLY if hasattr(args, k)]
    if given:
        print(f"ringcast loadtest: {', '.join(given)} only with --resume-storm",
              file=sys.stderr)
        return EXIT_USAGE
    from ringcast.loadtest.client import run_load_test  # noqa: PLC0415
    from ringcast.loadtest.options import LoadError, Options  # noqa: PLC0415
    from ringcast.loadtest.report import format_text, write_json  # noqa: PLC0415
    from ringcast.loadtest.target import TargetError, parse_target  # noqa: PLC0415

    opts = Options(
        url=args.url, connections=args.connections, messages=args.messages,
        duration=args.duration, size=args.size, window=args.window, rate=args.rate,
        publisher=args.publisher, publishers=args.publishers, publish_path=args.publish_path,
        http_connections=args.http_connections, connect_concurrency=args.connect_concurrency,
        connect_timeout=args.connect_timeout, message_timeout=args.message_timeout,
        drain_timeout=args.drain_timeout, max_time=args.max_time, engine=args.engine,
        server_pids=tuple(args.server_pid), allow_remote=args.i_own_this_host,
        source_addresses=args.source_addresses, progress=not args.quiet,
        processes=args.processes, storm=args.storm, compression=args.compression,
        payload=args.payload, bind=args.bind, source_ports=args.source_ports,
        hold=args.hold, rounds=args.rounds, channel_per_process=args.channel_per_process,
    )
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("ringcast loadtest: --plot needs matplotlib: pip install matplotlib",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        opts.validate()
        parse_target(opts.url, allow_remote=opts.allow_remote)
    except (LoadError, TargetError) as exc:
        print(f"ringcast loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_load_test(opts)
    except LoadError as exc:
        print(f"ringcast loadtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json == "-":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        print(format_text(result))
        if args.json:
            write_json(result, args.json)
    if args.plot:
        from ringcast.loadtest.plot import plot  # noqa: PLC0415

        plot(result, args.plot)
    return EXIT_PASS if result["pass"] else EXIT_FAULTS


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def run_resume(args: argparse.Namespace) -> int:
    """``--resume-storm``: run `ringcast.loadtest.resume` and print or write its result."""
    from ringcast.loadtest.resume import (  # noqa: PLC0415
        ResumeError,
        ResumeOptions,
        format_text,
        run_resume_storm,
    )
    from ringcast.loadtest.target import TargetError  # noqa: PLC0415

    given = [_flag(k) for k, v in args.not_with_resume.items() if getattr(args, k) != v]
    if given:
        print(f"ringcast loadtest: --resume-storm does not take {', '.join(given)}",
              file=sys.stderr)
        return EXIT_USAGE
    given_only = {k: getattr(args, k) for k in RESUME_ONLY if hasattr(args, k)}
    if args.rate is not None:
        given_only["rate"] = args.rate
    opts = ResumeOptions(
        url=args.url, connections=args.connections, size=args.size, **given_only,
        publisher=args.publisher, publish_path=args.publish_path,
        connect_concurrency=args.connect_concurrency, connect_timeout=args.connect_timeout,
        drain_timeout=args.drain_timeout, max_time=args.max_time,
        allow_remote=args.i_own_this_host, server_pids=tuple(args.server_pid),
    )
    try:
        opts.validate()
        from ringcast.loadtest.target import parse_target  # noqa: PLC0415

        parse_target(opts.url, allow_remote=opts.allow_remote)
    except (ResumeError, TargetError) as exc:
        print(f"ringcast loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_resume_storm(opts, progress_stream=None if args.quiet else sys.stderr)
    except ResumeError as exc:
        print(f"ringcast loadtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    text = json.dumps(result, indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        print(format_text(result))
        if args.json:
            Path(args.json).write_text(text)
    return EXIT_PASS if result["pass"] else EXIT_FAULTS
