"""README.md's shell blocks, as the tests that run README's examples read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Command:
    where: str    # README.md:<line of its first line>
    text: str     # continuation lines ("\" at the end) joined
    after: str    # the block's line after it ("" at the end of the block)


def shell_blocks() -> list[list[Command]]:
    """The commands of every ```sh block of README.md, block by block."""
    text = README.read_text()
    blocks = []
    for block in re.finditer(r"^```sh\n(.*?)^```", text, re.M | re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        raw, commands, i = block[1].splitlines(), [], 0
        while i < len(raw):
            start, command = i, raw[i]
            while command.endswith("\\") and i + 1 < len(raw):
                i += 1
                command = command[:-1] + raw[i].strip()
            i += 1
            commands.append(Command(f"README.md:{first + start}", command,
                                    raw[i] if i < len(raw) else ""))
        blocks.append(commands)
    return blocks
