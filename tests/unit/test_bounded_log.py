"""The bounded logs: the refusal log (one INFO line per refusal) and the access log, each
at most N lines a second, the rest counted."""

from __future__ import annotations

import logging

import pytest

from ringcast.server.bounded_log import BoundedLog, RefusalLog


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


def access_log(per_second: int, level: int, clock: Clock) -> BoundedLog:
    return BoundedLog("ringcast.access", title="access", what="connections and requests",
                      counted_in="ringcast_connections_accepted_total",
                      per_second=lambda: per_second, level=lambda: level, clock=clock)


def test_the_access_log_writes_at_its_level_and_counts_what_it_leaves_out(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ringcast.access")
    clock = Clock()
    log = access_log(2, logging.DEBUG, clock)
    for conn in range(5):
        log.line("connection %d accepted from %s", conn, "127.0.0.1:5000")
    assert not log.enabled  # the second's budget is spent: callers skip costly arguments
    clock.now += 1.0
    assert log.enabled
    log.line("connection %d closed: %s by the %s", 9, "client_close", "client")
    records = [r for r in caplog.records if r.name == "ringcast.access"]
    assert [r.getMessage() for r in records] == [
        "connection 0 accepted from 127.0.0.1:5000",
        "connection 1 accepted from 127.0.0.1:5000",
        "access log: 3 more connections and requests in the last second left out (more than "
        "2 a second; ringcast_connections_accepted_total counts them all)",
        "connection 9 closed: client_close by the client",
    ]
    assert {r.levelno for r in records} == {logging.DEBUG}


def test_the_access_log_is_off_below_the_loggers_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringcast.access")
    log = access_log(100, logging.DEBUG, Clock())
    assert not log.enabled
    log.line("connection %d accepted from %s", 1, "x")
    assert not [r for r in caplog.records if r.name == "ringcast.access"]
