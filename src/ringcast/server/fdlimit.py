"""The open-files limit a server process needs for ``limits.max_connections``.

Every connection is a file descriptor, so a soft ``RLIMIT_NOFILE`` below
``max_connections`` refuses connections the configuration allows (accept fails
with EMFILE). Shells and many service managers start processes with a soft limit
of 1024 and a far higher hard limit: an unprivileged process may raise its own
soft limit up to the hard one, which is what this does, at start-up and only as
far as the configuration needs. It never lowers a limit.
"""

from __future__ import annotations

import resource

# Beyond the loop's connection ids (clients, listeners, worker links, the broker):
# the ring, the epoll set, log files, /proc reads.
FD_HEADROOM = 64


def raise_nofile(connections: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward ``connections + FD_HEADROOM``, where
    ``connections`` counts every connection the loop may hold.

    Returns ``(soft, needed)``: the soft limit now in force and what the
    configuration needs; ``soft < needed`` when the hard limit is lower.
    """
    needed = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError):
                pass    # e.g. a sandbox that forbids it: the warning below tells
    return (needed if soft == resource.RLIM_INFINITY else soft), needed
