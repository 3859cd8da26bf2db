"""Channel names: what a subscriber puts in its URL and a publisher in its POST path.

Rules:

- 1 to ``max_length`` characters (``server.max_channel_name`` in the config);
- only ``A-Z a-z 0-9 _ - . : @`` (so ``news``, ``user:42``, ``room.7@eu-1``).

The alphabet is the set that needs no escaping anywhere a channel name travels: URL
paths, Redis and NATS subjects (``.`` and ``:`` are conventional separators there),
Prometheus label values, log lines. ``/`` is excluded on purpose: ``/a/b`` is not the
channel ``a/b``.

The request path is *not* percent-decoded: ``/caf%C3%A9`` names no channel (``%`` is
refused), rather than the channel ``café``. The raw path segment must already be valid,
so one channel has exactly one spelling.
"""

from __future__ import annotations

import re
from typing import Final

from ringcast.errors import ChannelNameError

__all__ = ["ALLOWED_CHARACTERS", "validate_channel"]

#: The allowed characters, as written in error messages.
ALLOWED_CHARACTERS: Final = "A-Z a-z 0-9 _ - . : @"

_VALID: Final = re.compile(r"[A-Za-z0-9_\-.:@]+")
_INVALID_CHAR: Final = re.compile(r"[^A-Za-z0-9_\-.:@]")


def validate_channel(name: str, max_length: int) -> str:
    """Return ``name`` if it is a valid channel name, else raise :exc:`ChannelNameError`.

    The error says which rule broke: the name is empty, too long ("is 200 characters, at
    most 128 allowed") or holds a character outside the alphabet, with its position
    counted from 0 ("character '/' at position 3 is not allowed; use A-Z a-z 0-9 _ - . :
    @"). Length is checked before the alphabet, so a message never quotes a huge name.
    """
    length = len(name)
    if 0 < length <= max_length and _VALID.fullmatch(name):
        return name
    if not length:
        msg = f"channel name is empty; use 1 to {max_length} characters from {ALLOWED_CHARACTERS}"
        raise ChannelNameError(msg)
    if length > max_length:
        msg = f"channel name is {length} characters, at most {max_length} allowed"
        raise ChannelNameError(msg)
    bad = _INVALID_CHAR.search(name)
    assert bad is not None  # the full match failed, so some character is outside the set
    msg = (
        f"channel name {name!r}: character {bad.group()!r} at position {bad.start()} "
        f"is not allowed; use {ALLOWED_CHARACTERS}"
    )
    raise ChannelNameError(msg)
