"""The server's ``/metrics`` text, parsed the one way every suite shares.

Each suite fetches ``/metrics`` its own way (blocking HTTP, an asyncio connection
pinned to one worker, a raw socket) and hands the text to :class:`Metrics`.
prometheus_client, which renders the text on the server, also parses it here: label
escapes, ``# HELP``/``# TYPE`` lines and number syntax are its business, not ours.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families


class Sample(NamedTuple):
    """One sample line; unpacks as ``name, labels, value``."""

    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """One scrape of ``/metrics``: its raw text and its samples, in the text's order.

    Sample names are those of the text, not of the families: a counter's carry its
    ``_total`` (``ringcast_refusals_total``), a gauge's stand as they are
    (``ringcast_connections``), an info metric's end in ``_info``. Label values are
    unescaped. ``_created`` samples would be kept like any other, but the server's
    collector emits none, so nothing relies on them.
    """

    def __init__(self, text: str) -> None:
        """Parse ``text``; raises ValueError if it is not Prometheus text exposition."""
        self.text = text
        self.samples = [Sample(s.name, s.labels, s.value)
                        for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def _matching(self, name: str, labels: dict[str, str]) -> list[float]:
        return [s.value for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def has(self, name: str, **labels: str) -> bool:
        """Whether some sample ``name`` has labels that include ``labels``."""
        return bool(self._matching(name, labels))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels``.

        With no ``labels``, the sum over every label set (e.g. every worker, every
        reason). Fails with an AssertionError naming the sample and showing the text
        when none match: a missing metric is a test failure, never a silent 0.
        """
        found = self._matching(name, labels)
        assert found, f"no sample {name}{labels or ''} in /metrics:\n{self.text}"
        return sum(found)

    def __getitem__(self, name: str) -> float:
        """``m[name]`` is ``m.value(name)``: the sum over every label set."""
        return self.value(name)
