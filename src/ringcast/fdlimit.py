"""The open-files limit a process needs for the connections it is about to hold.

Every connection is a file descriptor, so a soft ``RLIMIT_NOFILE`` below the
connection count refuses connections (accept or socket() fail with EMFILE).
Shells and many service managers start processes with a soft limit of 1024 and
a far higher hard limit: an unprivileged process may raise its own soft limit up
to the hard one, which `raise_nofile` does, only as far as needed. It never
lowers a limit. The server calls it for ``limits.max_connections``, the load
tester for its subscribers and publishers, both before their ring exists (a
ring sizes its file table by this limit).
"""

from __future__ import annotations

import resource

# Beyond the loop's connection ids (clients, listeners, worker links, the broker):
# the ring, the epoll set, log files, /proc reads.
FD_HEADROOM = 64


def raise_nofile(connections: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward ``connections + FD_HEADROOM``, where
    ``connections`` counts every connection the loop may hold.

    Returns ``(soft, needed)``: the soft limit now in force and what is needed;
    ``soft < needed`` when the hard limit is lower (or raising it was refused).
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
                pass    # e.g. a sandbox that forbids it: the caller says what this costs
    return (needed if soft == resource.RLIM_INFINITY else soft), needed
