"""The load test's plot, read back from the matplotlib figure it draws (no pixels compared).

A short run has a few one-second timeline points and, for the latency "to the last
subscriber", one sample per message: the plot must show each interval as measured, with axes
from zero, one y-axis per panel, and no percentile its samples cannot support.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringcast.loadtest.plot import figure, percentile_label, plot

MESSAGES, SUBSCRIBERS = 2_000, 100


def _curve(scale: float) -> list[list[float]]:
    """Points as report._curve makes them: 61 percentiles dense towards the tail, then 100."""
    pts = [[round(100.0 * (1 - 10 ** (-i / 10)), 5), scale * (1 + i / 10)] for i in range(61)]
    return [*pts, [100.0, scale * 9]]


def short_run() -> dict[str, Any]:
    return {
        "target": "ws://127.0.0.1:8080/bench", "mode": "closed loop", "pass": True,
        "options": {"connections": SUBSCRIBERS},
        "latency_ms": {"delivery": {"count": MESSAGES * SUBSCRIBERS, "max": 9.0},
                       "to_last_subscriber": {"count": MESSAGES, "max": 18.0}},
        "percentile_curves": {"delivery": _curve(1.0), "to_last_subscriber": _curve(2.0)},
        "timeline": [
            {"t": 1.0, "deliveries_per_s": 100_000.0, "p99_ms": 4.0},
            {"t": 2.0, "deliveries_per_s": 90_000.0, "p99_ms": 5.0},
            {"t": 2.4, "deliveries_per_s": 10_000.0, "p99_ms": -1.0},   # no delivery: no p99
        ],
    }


@pytest.fixture
def axes() -> Any:
    fig = figure(short_run())
    yield fig.axes
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.close(fig)


def test_one_y_axis_per_panel_each_labelled(axes: Any) -> None:
    assert len(axes) == 3               # no twin axes sharing a panel
    spectrum = axes[0]
    assert [ax.get_ylabel() for ax in axes] == [
        "latency (ms)", "deliveries/s", "p99 latency in\nthe interval (ms)"]
    labels = [t.get_text() for t in spectrum.get_legend().get_texts()]
    assert labels == [f"per delivery: {MESSAGES * SUBSCRIBERS:,} samples, max 9.00 ms",
                      f"to the last subscriber: {MESSAGES:,} samples, max 18.00 ms"]


def test_throughput_shows_each_interval_from_zero(axes: Any) -> None:
    _, rate, p99 = axes
    assert rate.get_ylim()[0] == 0 and p99.get_ylim()[0] == 0
    assert rate.get_xlim() == pytest.approx((0.0, 2.4))
    # Steps over the intervals each point measured, not a line through three points.
    (filled, outline) = rate.patches
    assert filled.get_fill() and not outline.get_fill()
    values, edges, _ = outline.get_data()
    assert list(values) == [100_000.0, 90_000.0, 10_000.0]
    assert list(edges) == pytest.approx([0.0, 1.0, 2.0, 2.4])
    (p99_steps,) = p99.patches
    values, _, _ = p99_steps.get_data()
    assert list(values[:2]) == [4.0, 5.0] and values[2] != values[2]   # NaN: a gap


def test_percentiles_stop_where_the_samples_do(axes: Any) -> None:
    spectrum = axes[0]
    per_delivery, to_last = spectrum.get_lines()
    # 2,000 samples support 1 - 10/2,000 = 99.5 %: x = 1 / (1 - p) up to 200.
    assert max(to_last.get_xdata()) <= MESSAGES / 10
    assert max(to_last.get_xdata()) > MESSAGES / 10 / 1.3     # ... and reach close to it
    assert max(per_delivery.get_xdata()) <= MESSAGES * SUBSCRIBERS / 10
    shown = [t.get_text() for t in spectrum.get_xticklabels()]
    assert shown == ["0%", "90%", "99%", "99.9%", "99.99%"]
    assert spectrum.get_xlim()[1] <= MESSAGES * SUBSCRIBERS / 10


@pytest.mark.parametrize(("x", "label"), [(1, "0%"), (10, "90%"), (100, "99%"),
                                          (1000, "99.9%"), (1e6, "99.9999%")])
def test_percentile_label(x: float, label: str) -> None:
    assert percentile_label(x) == label


def test_plot_writes_an_image(tmp_path: Path) -> None:
    out = tmp_path / "run.png"
    plot(short_run(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
