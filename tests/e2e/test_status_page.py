"""The status page in a real browser (headless Chromium, Debian's ``chromium``): it loads
from ringcast with nothing fetched elsewhere, goes live over ``/status/live``, and the
figures it shows follow what clients do. A screenshot is kept as a test artefact
(``test-artifacts/status-page.png``). Without chromium the test fails, saying how to
install it: CI installs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.chromium import INSTALL_HINT, Browser, chromium_path

from .conftest import StartServer
from .helpers import TIMEOUT, publish

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def number(text: object) -> float:
    assert isinstance(text, str), text
    return float(text.replace(",", "").replace("\u2009", "").replace(" ", ""))


def test_the_page_shows_live_figures_that_follow_the_clients(
        start_server: StartServer) -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.fail(f"chromium is not installed: {INSTALL_HINT}")
    server = start_server(STATUS_ENABLED="true")
    base = f"127.0.0.1:{server.port}"
    with Browser(chromium) as browser, \
            connect(f"ws://{base}/news", open_timeout=TIMEOUT) as first, \
            connect(f"ws://{base}/news", open_timeout=TIMEOUT), \
            connect(f"ws://{base}/sport", open_timeout=TIMEOUT):
        page = browser.open(f"http://{base}/status")
        text = "(id) => document.getElementById(id).textContent"
        page.wait_for(f"({text})('live') === 'live'", timeout=3 * TIMEOUT)
        page.wait_for(f"({text})('connections').trim() !== ''", timeout=TIMEOUT)
        published = number(page.evaluate(f"({text})('messages-published')"))

        for n in range(5):
            assert publish(server.port, "news", f"m{n}", "text/plain").status == 200
            assert first.recv(timeout=TIMEOUT) == f"m{n}"

        # Pushed within a second or two over the page's own WebSocket, not reloaded.
        page.wait_for(f"Number(({text})('messages-published').replace(/[^0-9.]/g, ''))"
                      f" >= {published + 5}", timeout=3 * TIMEOUT)
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        # Three subscribers, and the page's live WebSocket and HTTP connections.
        assert number(page.evaluate(f"({text})('connections')")) >= 4
        assert number(page.evaluate(f"({text})('subscribers')")) == 3
        assert number(page.evaluate(f"({text})('channels')")) == 2
        row = "document.querySelector('#channel-table tr[data-channel=\"news\"]')"
        assert number(page.evaluate(f"{row}.lastElementChild.textContent")) == 2
        assert page.evaluate(f"({text})('state')") == "ok"
        assert int(page.evaluate("document.body.dataset.updates")) >= 2

        # Nothing was fetched from anywhere but ringcast.
        hosts = page.evaluate("[...new Set(performance.getEntriesByType('resource')"
                              ".map(e => new URL(e.name).host))]")
        assert set(hosts) <= {base}, hosts
        ARTEFACTS.mkdir(exist_ok=True)
        page.screenshot(ARTEFACTS / "status-page.png")
    assert (ARTEFACTS / "status-page.png").read_bytes().startswith(b"\x89PNG")
