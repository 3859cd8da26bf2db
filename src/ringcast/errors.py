"""The one exception hierarchy of ringcast (``ringcast.ringio`` has its own, as it
stands alone).

::

    RingcastError
    ├── ConfigError          a configuration file or override is invalid
    ├── ChannelNameError     a channel name breaks the documented rules
    ├── BackendError         the chosen I/O backend cannot run here
    └── ListenError          the server cannot listen where it was told to

Every message says what happened and what to do about it.
"""

from __future__ import annotations


class RingcastError(Exception):
    """Root of every error ringcast raises on purpose."""


class ConfigError(RingcastError):
    """A configuration file, key or environment override is invalid."""


class ChannelNameError(RingcastError, ValueError):
    """A channel name is empty, too long or uses a character outside the allowed set."""


class BackendError(RingcastError):
    """The I/O backend that was asked for cannot run on this machine."""


class ListenError(RingcastError):
    """The configured address and port cannot be listened on (in use, not permitted, not an
    address of this machine)."""
