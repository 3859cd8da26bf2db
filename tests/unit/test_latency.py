"""The latency histograms: Prometheus's cumulative buckets, and the percentiles the status
page reads from the last second's counts."""

from __future__ import annotations

import pytest

from ringcast.server.latency import BOUNDS, Latency, quantile


def test_buckets_are_cumulative_and_end_in_inf() -> None:
    h = Latency()
    h.observe(0.00005)          # first bucket
    h.observe(0.003, n=3)       # le 0.005
    h.observe(99.0)             # +Inf
    buckets = dict(h.buckets())
    assert buckets["0.0001"] == 1
    assert buckets["0.0025"] == 1
    assert buckets["0.005"] == 4
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5 == h.count
    assert h.sum == pytest.approx(0.00005 + 0.009 + 99.0)


def test_an_observation_on_a_bound_falls_in_that_bucket() -> None:
    """Prometheus's ``le``: less than or equal."""
    h = Latency()
    h.observe(0.001)
    assert dict(h.buckets())["0.001"] == 1
    assert dict(h.buckets())["0.0005"] == 0


def test_take_recent_gives_what_came_since_the_last_call() -> None:
    h = Latency()
    h.observe(0.002, n=10)
    first = h.take_recent()
    assert sum(first) == 10
    assert sum(h.take_recent()) == 0
    h.observe(0.02)
    assert sum(h.take_recent()) == 1
    assert h.count == 11  # the cumulative counts are untouched


def test_quantiles_interpolate_within_a_bucket() -> None:
    counts = [0] * (len(BOUNDS) + 1)
    counts[BOUNDS.index(0.01)] = 100    # all between 5 ms and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert quantile(counts, 0.99) == pytest.approx(0.00995)


def test_quantiles_of_nothing_are_none_and_past_the_last_bound_its_value() -> None:
    counts = [0] * (len(BOUNDS) + 1)
    assert quantile(counts, 0.5) is None
    counts[-1] = 5
    assert quantile(counts, 0.99) == BOUNDS[-1]
