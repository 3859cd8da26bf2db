"""The CLI's pure parts: log formats, the start-up line's summary, the help text."""

from __future__ import annotations

import argparse
import json
import logging
import re
from datetime import UTC, datetime

import pytest

from ringcast.cli import JsonFormatter, TextFormatter, build_parser, describe_sources, rfc3339

# 2026-12-03T10:00:00.123Z, and a moment whose milliseconds round up into the next second.
NOON = datetime(2026, 12, 3, 10, 0, 0, 123_000, UTC).timestamp()
ROLLOVER = datetime(2026, 12, 31, 23, 59, 59, 999_900, UTC).timestamp()


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("ringcast", logging.INFO, __file__, 1, "started", (), None)
    record.created = created
    return record


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(NOON) == "2026-12-03T10:00:00.123Z"
    # isoformat truncates to milliseconds: never a 60th second or a date that moved back
    assert rfc3339(ROLLOVER) == "2026-12-31T23:59:59.999Z"


def test_json_and_text_lines_carry_the_same_rfc3339_time() -> None:
    doc = json.loads(JsonFormatter(worker=1).format(_record(NOON)))
    assert doc == {"ts": "2026-12-03T10:00:00.123Z", "pid": doc["pid"], "worker": 1,
                   "level": "info", "logger": "ringcast", "msg": "started"}
    text = TextFormatter("%(asctime)s %(levelname)s %(message)s").format(_record(NOON))
    assert text == "2026-12-03T10:00:00.123Z INFO started"


@pytest.mark.parametrize(
    ("path", "env", "flags", "described"),
    [
        (None, {}, [], "built-in defaults"),
        ("/etc/ringcast/ringcast.toml", {"HOME": "/root"}, [], "/etc/ringcast/ringcast.toml"),
        (None, {"RINGCAST_SERVER_PORT": "1", "RINGCAST_AUTH_JWT_SECRET": "s3cret", "PATH": "/"},
         ["--backend"],
         "built-in defaults with RINGCAST_AUTH_JWT_SECRET, RINGCAST_SERVER_PORT, --backend"),
    ],
)
def test_describe_sources_names_overrides_never_their_values(
        path: str | None, env: dict[str, str], flags: list[str], described: str) -> None:
    assert describe_sources(path, env, flags) == described


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand's, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_help_shows_no_rest_markup() -> None:
    parsers = _parsers(build_parser())
    assert {p.prog for p in parsers} >= {"ringcast", "ringcast serve", "ringcast health",
                                          "ringcast loadtest"}
    markup = re.compile(r"``|:[a-z]+:`|\.\. [a-z]+::")
    for parser in parsers:
        found = markup.findall(parser.format_help())
        assert not found, f"{parser.prog} --help shows reST markup {found}"
