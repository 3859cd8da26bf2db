"""Draw a run: the latency distribution (percentile spectrum), and deliveries/s and p99 latency
over time, each in its own panel with its own y-axis.

matplotlib is optional; it is imported only here, only when a plot is asked for.
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Any

__all__ = ["PlotUnavailable", "figure", "percentile_label", "plot"]

TAIL_SAMPLES = 10
"""A percentile is drawn only where at least this many samples lie beyond it: with n samples
the spectrum stops at 1 - 10/n (99.5 % of 2,000), where its points are still measurements."""


class PlotUnavailable(RuntimeError):
    pass


def percentile_label(x: float) -> str:
    """The percentile at ``x = 1 / (1 - p)`` on the spectrum's axis: 1 -> ``0%``, 10 ->
    ``90%``, 1000 -> ``99.9%``."""
    pct = 100.0 * (1.0 - 1.0 / x)
    decimals = max(0, math.ceil(math.log10(x) - 1e-9) - 2)
    return f"{pct:.{decimals}f}%"


def _pyplot() -> Any:
    try:
        # Imported by name: type checking must not depend on an optional package.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        importlib.import_module("matplotlib.ticker")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(the JSON result holds the same data)"
        ) from None


def _spectrum(ax: Any, result: dict[str, Any]) -> None:
    """Latency by percentile, each curve cut where its samples stop supporting it."""
    curves = result.get("percentile_curves", {})
    counts = result.get("latency_ms", {})
    widest = 2.0
    for key, label in (("delivery", "per delivery"),
                       ("to_last_subscriber", "to the last subscriber")):
        stats = counts.get(key, {})
        n = int(stats.get("count", 0))
        cap = max(2.0, n / TAIL_SAMPLES)
        pts = [(1.0 / (1.0 - p / 100.0), ms) for p, ms in curves.get(key) or [] if p < 100.0]
        pts = [(x, ms) for x, ms in pts if x <= cap]
        if not pts:
            continue
        widest = max(widest, pts[-1][0])
        ax.plot([x for x, _ in pts], [ms for _, ms in pts],
                label=f"{label}: {n:,} samples, max {stats.get('max', 0):,.2f} ms")
    ax.set_xscale("log")
    ticks = [10.0**k for k in range(math.floor(math.log10(widest)) + 1)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([percentile_label(x) for x in ticks])
    ax.minorticks_off()
    ax.set_xlim(1.0, widest)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"percentile (up to 1 - {TAIL_SAMPLES}/samples)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")


def _timeline(rate_ax: Any, p99_ax: Any, timeline: list[dict[str, float]]) -> None:
    """Deliveries/s and p99 as steps: each point is a measurement over the interval (about a
    second) that ends at its ``t``, so a short run shows what each interval held rather than
    a line between three dots."""
    ts = [p["t"] for p in timeline]
    edges = [max(0.0, ts[0] - 1.0), *ts]
    thousands = importlib.import_module("matplotlib.ticker").StrMethodFormatter("{x:,.0f}")
    rate_ax.yaxis.set_major_formatter(thousands)
    rate_ax.stairs([p["deliveries_per_s"] for p in timeline], edges, fill=True, alpha=0.35,
                   color="tab:blue")
    rate_ax.stairs([p["deliveries_per_s"] for p in timeline], edges, color="tab:blue")
    # -1: no delivery in that interval, so no p99: a gap, not a zero.
    p99 = [p["p99_ms"] if p["p99_ms"] >= 0 else math.nan for p in timeline]
    p99_ax.stairs(p99, edges, color="tab:red", baseline=None)
    for ax in (rate_ax, p99_ax):
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)


def figure(result: dict[str, Any]) -> Any:
    """The plot of a load test ``result`` (the JSON report) as a matplotlib Figure."""
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 5.4))
    grid = fig.add_gridspec(2, 2, width_ratios=(1.1, 1.0))
    spectrum = fig.add_subplot(grid[:, 0])
    rate = fig.add_subplot(grid[0, 1])
    p99 = fig.add_subplot(grid[1, 1], sharex=rate)
    _spectrum(spectrum, result)
    rate.set_title("over time")
    rate.set_ylabel("deliveries/s")
    rate.tick_params(labelbottom=False)
    p99.set_ylabel("p99 latency in\nthe interval (ms)")
    p99.set_xlabel("time since publishing began (s)")
    timeline = result.get("timeline") or []
    if timeline:
        _timeline(rate, p99, timeline)
    fig.suptitle(f"{result.get('target')}  {result.get('mode')}  "
                 f"{result.get('options', {}).get('connections')} subscribers  "
                 f"{'PASS' if result.get('pass') else 'FAIL'}")
    fig.tight_layout()
    return fig


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw ``result`` (the JSON report) into the image file ``path`` (PNG, SVG... by its
    suffix). Raises PlotUnavailable without matplotlib."""
    fig = figure(result)
    try:
        fig.savefig(path, dpi=110)
    finally:
        _pyplot().close(fig)
