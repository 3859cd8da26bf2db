"""Headless Chromium driven over the DevTools protocol, for tests that need a real browser.

`Browser` starts ``chromium --headless=new`` with a throw-away profile, reads the DevTools
port from the profile's ``DevToolsActivePort`` file and talks to page targets over their
WebSocket (the ``websockets`` synchronous client; no other dependency). `Browser.open`
gives a `Page`, whose `Page.evaluate` runs JavaScript, `Page.wait_for` polls an expression
until it is truthy, and `Page.screenshot` saves a PNG. Every wait has a deadline; running
out of time is an error saying what was awaited.

`chromium_path` finds the executable; a test fails (never skips) without it: CI installs
it with ``apt-get install chromium``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from websockets.sync.client import ClientConnection, connect

INSTALL_HINT = "apt-get install chromium"
START_TIMEOUT = 30.0     # chromium started and its page target listed
COMMAND_TIMEOUT = 30.0   # one DevTools command answered (a navigation loaded)
STOP_TIMEOUT = 10.0      # chromium gone after SIGTERM, before SIGKILL
POLL_INTERVAL = 0.05

# DevTools listens on loopback: never through a proxy named in the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chromium_path() -> str | None:
    """The chromium executable on PATH (``chromium``, else ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


class ChromiumError(RuntimeError):
    """Chromium did not start, or a DevTools command failed."""


class JavaScriptError(ChromiumError):
    """An expression given to `Page.evaluate` threw (or its promise rejected)."""


class Page:
    """One page target (a tab), driven over its DevTools WebSocket."""

    def __init__(self, ws: ClientConnection, timeout: float = COMMAND_TIMEOUT) -> None:
        self._ws = ws
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []  # events received while awaiting answers

    # -- the protocol ------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send DevTools command ``method`` and return its result; ChromiumError on an
        error answer or when none comes within ``timeout`` (COMMAND_TIMEOUT)."""
        timeout = self._timeout if timeout is None else timeout
        command_id = next(self._ids)
        self._ws.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline, f"the answer to {method}")
            if message.get("id") != command_id:
                if "method" in message:
                    self._events.append(message)
                continue
            if "error" in message:
                raise ChromiumError(f"{method} failed: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The params of the first event ``method`` received (kept ones first)."""
        timeout = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    del self._events[i]
                    params: dict[str, Any] = event.get("params", {})
                    return params
            message = self._receive(deadline, f"the event {method}")
            if "method" in message:
                self._events.append(message)

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        """The next message from the target, or ChromiumError at ``deadline``."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            raw = self._ws.recv(timeout=left)
        except TimeoutError:
            raise ChromiumError(f"timed out waiting for {what}") from None
        message: dict[str, Any] = json.loads(raw)
        return message

    # -- what tests use ----------------------------------------------------------------

    def navigate(self, url: str, timeout: float | None = None) -> None:
        """Load ``url`` and return once its load event fired."""
        self.send("Page.enable")
        self._events.clear()
        result = self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise ChromiumError(f"cannot load {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of JavaScript ``expression`` (a promise is awaited), as JSON would
        carry it (undefined is None); JavaScriptError when it throws."""
        result = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        details = result.get("exceptionDetails")
        if details is not None:
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text") or details
            raise JavaScriptError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll ``expression`` until its value is truthy and return that value;
        AssertionError naming it and its last value after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {expression!r}; "
                                     f"last value: {value!r}")
            time.sleep(POLL_INTERVAL)

    def screenshot(self, path: Path) -> None:
        """Save what the page shows as a PNG at ``path``."""
        # A background tab draws no frames: the capture would wait for one for seconds.
        self.send("Page.bringToFront")
        result = self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(result["data"]))


class Browser:
    """A headless chromium with a temporary profile, for a ``with`` block.

    Leaving the block (or `close`) closes the pages, kills chromium's process group and
    removes the temporary directory, whatever happened inside.
    """

    def __init__(self, executable: str | None = None, *,
                 start_timeout: float = START_TIMEOUT,
                 window_size: tuple[int, int] = (1280, 900)) -> None:
        found = executable or chromium_path()
        if found is None:
            raise ChromiumError(f"no chromium on PATH: {INSTALL_HINT}")
        self.executable = found
        self.start_timeout = start_timeout
        self.window_size = window_size
        self.tmp = Path(tempfile.mkdtemp(prefix="ringcast-chromium-"))
        self.profile = self.tmp / "profile"
        self.log_path = self.tmp / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._connections = contextlib.ExitStack()  # the pages' DevTools WebSockets
        self._blank_target: str | None = None  # the first tab's WebSocket, for the first open

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start chromium; return once its DevTools port and first page target are known."""
        width, height = self.window_size
        args = [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
                "--disable-background-networking", f"--window-size={width},{height}",
                "about:blank"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        self.port = self._wait_port(deadline)
        self._blank_target = self._wait_page_target(deadline)

    def _wait_port(self, deadline: float) -> int:
        """The port in ``DevToolsActivePort`` (its first line), once chromium wrote it."""
        port_file = self.profile / "DevToolsActivePort"
        while True:
            try:
                lines = port_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2 and lines[0].isdigit():
                return int(lines[0])
            self._check_running(deadline, f"{port_file} (the DevTools port)")

    def _wait_page_target(self, deadline: float) -> str:
        """The DevTools WebSocket URL of a page target listed at ``/json``."""
        while True:
            try:
                targets = self._json("/json")
            except OSError:
                targets = []
            for target in targets:
                if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                    url: str = target["webSocketDebuggerUrl"]
                    return url
            self._check_running(deadline, "a page target at /json")

    def _check_running(self, deadline: float, what: str) -> None:
        """Sleep one poll interval; ChromiumError with its log if chromium exited or
        ``deadline`` passed."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ChromiumError(f"{self.executable} exited with {code} before writing {what}; "
                                f"stderr:\n{self.log_text()}")
        if time.monotonic() >= deadline:
            raise ChromiumError(f"no {what} within {self.start_timeout}s of starting "
                                f"{self.executable}; stderr:\n{self.log_text()}")
        time.sleep(POLL_INTERVAL)

    def _json(self, path: str, method: str = "GET") -> Any:
        """A DevTools HTTP endpoint's JSON answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with _NO_PROXY.open(request, timeout=COMMAND_TIMEOUT) as response:
            return json.loads(response.read())

    def log_text(self) -> str:
        """Chromium's stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def open(self, url: str, timeout: float = COMMAND_TIMEOUT) -> Page:
        """A page that loaded ``url`` (its load event fired): the first tab the first
        time, a new tab after that."""
        if self._blank_target is not None:
            target, self._blank_target = self._blank_target, None
        else:
            target = self._json("/json/new?about:blank", method="PUT")["webSocketDebuggerUrl"]
        # No proxy (websockets honours *_proxy variables); screenshots exceed 1 MiB.
        ws = self._connections.enter_context(
            connect(target, proxy=None, max_size=None, open_timeout=timeout))
        page = Page(ws, timeout)
        page.navigate(url, timeout)
        return page

    def close(self) -> None:
        """Close the pages, end chromium (SIGTERM, then SIGKILL to its process group) and
        remove the temporary directory. Safe to call more than once."""
        self._connections.close()
        if self.proc is not None:
            self._stop(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        """End ``proc`` and the renderers and helpers it started (its own process group).

        SIGTERM first; after STOP_TIMEOUT, or once it exited, SIGKILL to what is left of its
        group. The process is reaped only after that, so its pid, the group's id, still
        names it and nothing else.
        """
        if proc.returncode is None:  # not reaped: the pid is still chromium's
            os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while (os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
                   and time.monotonic() < deadline):
                time.sleep(POLL_INTERVAL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
