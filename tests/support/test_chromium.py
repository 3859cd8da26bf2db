"""tests/support/chromium.py against a real headless Chromium and a page served here.

The page is served by ``http.server`` on 127.0.0.1 (port 0) from a thread; it loads
nothing from anywhere else. Without chromium the test fails, saying how to install it:
CI installs it, so a skip would hide a broken CI image.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.chromium import INSTALL_HINT, Browser, JavaScriptError, chromium_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Sets its values 300 ms after loading: wait_for has to poll for them.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>driver test</title></head>
<body><p id="greeting">waiting</p>
<script>
setTimeout(() => {
  document.getElementById("greeting").textContent = "ready";
  window.answer = 6 * 7;
}, 300);
</script></body></html>
"""


class _PageHandler(BaseHTTPRequestHandler):
    """``/`` is `PAGE`; anything else is a 404."""

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no line on stderr per request."""


@pytest.fixture
def site() -> Iterator[str]:
    """The URL of `PAGE`, served from a thread for the test's duration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def chromium() -> str:
    """The chromium executable; the test fails without one."""
    path = chromium_path()
    if path is None:
        pytest.fail(f"chromium is not installed (neither chromium nor chromium-browser on "
                    f"PATH): {INSTALL_HINT}")
    return path


def test_browser_loads_waits_evaluates_and_screenshots(chromium: str, site: str,
                                                        tmp_path: Path) -> None:
    with Browser(chromium) as browser:
        page = browser.open(site)
        assert page.evaluate("location.href") == site
        assert page.wait_for("window.answer", timeout=10) == 42
        assert page.evaluate("document.getElementById('greeting').textContent") == "ready"
        assert page.evaluate("document.title") == "driver test"
        assert page.evaluate("Promise.resolve({n: 1 + 2, s: 'x'})") == {"n": 3, "s": "x"}
        assert page.evaluate("undefined") is None
        with pytest.raises(JavaScriptError, match="boom"):
            page.evaluate("(() => { throw new Error('boom'); })()")
        with pytest.raises(AssertionError, match=r"window\.never.*last value: None"):
            page.wait_for("window.never", timeout=0.3)

        second = browser.open(site)  # a new tab
        assert second.wait_for("document.getElementById('greeting').textContent === 'ready'",
                               timeout=10) is True

        shot = tmp_path / "page.png"
        page.screenshot(shot)
        assert shot.read_bytes().startswith(PNG_SIGNATURE)
        assert shot.stat().st_size > 1000
    assert browser.proc is not None and browser.proc.returncode is not None
    assert not browser.tmp.exists()
