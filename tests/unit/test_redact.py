"""Credentials in URLs never reach an error message or a log line."""

from __future__ import annotations

import json
import logging

import pytest

from ringcast.cli import JsonFormatter, TextFormatter
from ringcast.redact import mask_credentials
from ringcast.server.cluster import RedisBridge


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://app:s3cret@db:6379/0", "redis://app:***@db:6379/0"),
        ("redis://:s3cret@db", "redis://:***@db"),
        ("redis://s3cret@db", "redis://***@db"),
        ("lost redis://a:b@h1 and nats://c:d@h2", "lost redis://a:***@h1 and nats://c:***@h2"),
        ("https://example.com/path?who=me@example.com", "https://example.com/path?who=me@example.com"),
        ("redis://db:6379", "redis://db:6379"),
        ("no url here: user:pass@host", "no url here: user:pass@host"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("ringcast", logging.WARNING, __file__, 1, "%s", (message,), None)


@pytest.mark.parametrize("formatter", [TextFormatter("%(message)s"), JsonFormatter()])
def test_log_lines_are_masked_whatever_the_format(formatter: logging.Formatter) -> None:
    line = formatter.format(_record("cannot reach redis://app:s3cret@db:6379"))
    assert "s3cret" not in line
    assert "redis://app:***@db:6379" in (json.loads(line)["msg"] if line.startswith("{") else line)


def test_a_bad_redis_url_is_masked_by_the_bridge_too() -> None:
    with pytest.raises(ValueError, match=r"redis://app:\*\*\*@") as error:
        RedisBridge("redis://app:s3cret@", None, lambda *_: None, list)  # type: ignore[arg-type]
    assert "s3cret" not in str(error.value)
