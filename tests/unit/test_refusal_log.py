"""The refusal log: one INFO line per refusal, at most N a second, the rest counted."""

from __future__ import annotations

import logging

import pytest

from ringcast.server.refusal_log import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ringcast.refusals"]


def test_each_refusal_is_a_line_with_status_reason_and_quoted_detail(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringcast.refusals")
    log = RefusalLog(lambda: 5, Clock())
    log.refused(401, "unauthorized", "missing token\r\nInjected: yes", 7)
    log.refused(0, "handshake_timeout", "no complete request within 10 seconds", 8)
    assert lines(caplog) == [
        "refused connection 7: 401 unauthorized 'missing token\\r\\nInjected: yes'",
        "refused connection 8: closed handshake_timeout 'no complete request within 10 seconds'",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_past_the_budget_refusals_are_counted_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringcast.refusals")
    clock = Clock()
    log = RefusalLog(lambda: 3, clock)
    for i in range(10):
        log.refused(403, "forbidden", "no", i)
    assert len(lines(caplog)) == 3
    clock.now += 1.0
    log.refused(403, "forbidden", "no", 10)
    got = lines(caplog)
    assert got[3] == ("refusal log: 7 more refusals in the last second left out (more than 3 "
                      "a second; ringcast_refusals_total counts them all)")
    assert got[4] == "refused connection 10: 403 forbidden 'no'"


def test_zero_logs_none(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringcast.refusals")
    clock = Clock()
    log = RefusalLog(lambda: 0, clock)
    log.refused(401, "unauthorized", "x", 1)
    clock.now += 1.0
    log.refused(401, "unauthorized", "x", 2)
    assert lines(caplog) == []
