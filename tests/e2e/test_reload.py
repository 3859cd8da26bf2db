"""SIGHUP: what a reload applies, with old and new values in the log, secrets masked."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.serverproc import ServerProcess

OLD_TOKEN = "old-publish-token-0123456789"
NEW_TOKEN = "new-publish-token-9876543210"


def wait_for_log(server: ServerProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := server.stderr_text()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{text!r} not in the log within {timeout}s:\n{log}")
        time.sleep(0.05)
    return log


def test_a_reload_logs_each_change_old_to_new_and_never_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "ringcast.toml"
    config.write_text(f'[auth]\npublish_tokens = ["{OLD_TOKEN}"]\n'
                      "[limits]\nmax_message_size = 65536\n")
    server = ServerProcess.spawn({}, config=str(config))
    server.wait_listening()
    try:
        config.write_text(f'[auth]\npublish_tokens = ["{NEW_TOKEN}", "{OLD_TOKEN}"]\n'
                          "[limits]\nmax_message_size = 1000\n")
        server.proc.send_signal(signal.SIGHUP)
        log = wait_for_log(server, "reload: applied")
        line = next(line for line in log.splitlines() if "reload: applied" in line)
        assert "limits.max_message_size 65536 -> 1000" in line
        assert "auth.publish_tokens [***] -> [***, ***]" in line
        assert OLD_TOKEN not in log and NEW_TOKEN not in log
    finally:
        server.stop()
        server.cleanup()
