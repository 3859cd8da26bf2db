"""Draw a run: latency distribution (percentile spectrum) and throughput over time.

matplotlib is optional; it is imported only here, only when a plot is asked for.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


class PlotUnavailable(RuntimeError):
    pass


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    try:
        # Imported by name: type checking must not depend on an optional package.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(the JSON result holds the same data)"
        ) from None

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    curves = result.get("percentile_curves", {})
    for key, label in (("delivery", "per delivery"),
                       ("to_last_subscriber", "to the last subscriber")):
        pts = curves.get(key) or []
        pts = [p for p in pts if p[0] < 100.0]
        if pts:
            xs = [1.0 / (1.0 - p[0] / 100.0) for p in pts]
            ax1.plot(xs, [p[1] for p in pts], label=label)
    ax1.set_xscale("log")
    ax1.set_xticks([1, 10, 100, 1000, 10000, 100000, 1000000])
    ax1.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"])
    ax1.minorticks_off()
    ax1.set_xlabel("percentile")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("latency distribution")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    tl = result.get("timeline") or []
    if tl:
        ts = [p["t"] for p in tl]
        ax2.plot(ts, [p["deliveries_per_s"] for p in tl], color="tab:blue", label="deliveries/s")
        ax2.set_xlabel("time (s)")
        ax2.set_ylabel("deliveries/s", color="tab:blue")
        ax3 = ax2.twinx()
        ax3.plot(ts, [max(0.0, p["p99_ms"]) for p in tl], color="tab:red", label="p99")
        ax3.set_ylabel("p99 latency in that second (ms)", color="tab:red")
    ax2.set_title("throughput over time")
    ax2.grid(True, alpha=0.3)
    fig.suptitle(f"{result.get('target')}  {result.get('mode')}  "
                 f"{result.get('options', {}).get('connections')} subscribers  "
                 f"{'PASS' if result.get('pass') else 'FAIL'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
