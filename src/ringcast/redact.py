"""Keeping secrets out of error messages and logs.

A URL may carry credentials (``redis://user:password@host``); wherever ringcast quotes a
URL or logs a line, :func:`mask_credentials` replaces the password, or the whole userinfo
when it has no ``:`` (it may be a password alone), with ``***``. Other secrets (tokens,
keys) are never quoted at all: configuration errors describe them by their length.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "mask_credentials"]

MASK: Final = "***"

# scheme "://" userinfo "@": userinfo stops at the first "/", "@" or whitespace, so a
# path or query holding "@" is not taken for credentials.
_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^\s/@]+)@")


def _masked(match: re.Match[str]) -> str:
    user, colon, _password = match["info"].partition(":")
    info = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{info}@"


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked.

    >>> mask_credentials("cannot reach redis://app:s3cret@db:6379/0")
    'cannot reach redis://app:***@db:6379/0'
    >>> mask_credentials("redis://s3cret@db")
    'redis://***@db'
    """
    if "://" not in text:
        return text
    return _USERINFO.sub(_masked, text)
