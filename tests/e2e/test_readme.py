"""README's `curl` publish examples, run as written against a real server.

Each example is taken from README.md (shell blocks, continuation lines joined) and run with
the real curl, only its port changed to the test server's. The channels it publishes to get
as many subscribers (the websockets library's client) as the answer README prints under it
says, so that answer must match byte for byte; and every subscriber must receive the message
as a text frame (a str), as README promises for a text body.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from websockets.sync.client import connect

from .conftest import StartServer
from .readme import shell_blocks

URL = re.compile(r"http://127\.0\.0\.1:\d+")
TIMEOUT = 10.0


@dataclass(frozen=True)
class Example:
    where: str           # README.md:<line>
    command: str
    answer: str | None   # the `# {...}` line README shows under it


def curl_examples() -> list[Example]:
    """Every `curl` command that publishes, in README's shell blocks."""
    found = []
    for command in (c for block in shell_blocks() for c in block):
        if command.text.startswith("curl ") and "/publish" in command.text:
            answer = command.after[2:] if command.after.startswith("# {") else None
            found.append(Example(command.where, command.text.strip(), answer))
    return found


EXAMPLES = curl_examples()


def test_readme_has_the_examples() -> None:
    # Guards the parser above: the single publish, the batch and the cluster one.
    assert len(EXAMPLES) >= 3, EXAMPLES


def _subscribers(example: Example) -> dict[str, int]:
    """Channel -> how many subscribers the example's answer counts (1 without an answer)."""
    if example.answer is None:
        return {URL.sub("", example.command).split("/publish/")[1].split()[0]: 1}
    answer = json.loads(example.answer)
    return {r["channel"]: r["subscribers"] for r in answer.get("results", [answer])}


def _published_texts(example: Example) -> dict[str, list[str]]:
    """Channel -> the texts the example publishes to it."""
    args = shlex.split(example.command)
    data = args[args.index("--data") + 1]
    if "/publish/" in example.command:
        return {URL.sub("", example.command).split("/publish/")[1].split()[0]: [data]}
    out: dict[str, list[str]] = {}
    for message in json.loads(data)["messages"]:
        out.setdefault(message["channel"], []).append(message["text"])
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_readme_curl_publishes_text(example: Example, start_server: StartServer) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed: apt-get install curl (.ci/run does it)"
    server = start_server()
    with ExitStack() as stack:
        subs = {channel: [stack.enter_context(connect(f"{server.ws_url}/{channel}",
                                                      open_timeout=TIMEOUT))
                          for _ in range(count)]
                for channel, count in _subscribers(example).items()}
        command = URL.sub(f"http://127.0.0.1:{server.port}", example.command)
        res = subprocess.run([curl, "--silent", "--show-error", *shlex.split(command)[1:]],
                             capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert res.returncode == 0, res.stderr
        if example.answer is not None:
            assert res.stdout.strip() == example.answer
        for channel, texts in _published_texts(example).items():
            for ws in subs.get(channel, []):
                got = [ws.recv(timeout=TIMEOUT) for _ in texts]
                assert got == texts, f"{channel}: {got!r} (bytes: a binary frame)"
