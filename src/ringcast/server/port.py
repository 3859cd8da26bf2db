"""One server per port: refusing a port that another process already listens on.

A server alone listens without ``SO_REUSEPORT``, so its bind fails on a busy port. The
workers of one supervisor set it to share their port, and the kernel lets any process of
the same user join such a group: without a check a second ``ringcast serve`` could start
on a supervisor's port (or a supervisor on a busy one) and take part of the first one's
connections: two servers, each with some of the subscribers, each publish reaching only
its own.

The check is a probe bound *without* ``SO_REUSEPORT``: Linux refuses it while any socket
listens on the port (or holds it bound without ``SO_REUSEADDR``, as a supervisor's
:func:`hold_port` socket does), whatever its options. It has ``SO_REUSEADDR``, so connections
of a server that just stopped, left in TIME_WAIT, do not block a restart. A probe and the
listener that follows it are two binds: two servers started within the same few microseconds
could both pass. That window is left open; closing it would take a lock outside the socket API.
"""

from __future__ import annotations

import errno
import socket

from ringcast.errors import ListenError

__all__ = ["check_port_free", "hold_port", "listen_error", "tcp_socket"]


def tcp_socket(host: str) -> socket.socket:
    """A TCP socket of the family of ``host`` (IPv6 when it has a colon): the listener's,
    and the probes' that must meet it."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    """Why ``host:port`` cannot be listened on, and what to do about it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = (f"another process already listens on port {port} (a ringcast started earlier? "
               f"`ss -ltnp 'sport = :{port}'` names it); stop it, or give this server another "
               "port: --port, server.port or RINGCAST_SERVER_PORT")
    elif exc.errno == errno.EACCES:
        why = ("permission denied: ports below 1024 need CAP_NET_BIND_SERVICE "
               "(AmbientCapabilities= in a systemd unit); or use a port from 1024 up")
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = (f"{host} is not an address of this machine; set server.host (--host, "
               "RINGCAST_SERVER_HOST) to one of its addresses, 0.0.0.0 or ::")
    else:
        why = f"{exc.strerror or exc}; check server.host and server.port"
    return ListenError(f"cannot listen on {where}: {why}")


def check_port_free(host: str, port: int) -> None:
    """Return if a new listener may take ``host:port``; raise :class:`ListenError` when another
    process listens on it (on any address that overlaps ``host``) or cannot be bound at all.

    Port 0 is always free: the kernel picks an unused port when the listener binds.
    """
    if port == 0:
        return
    with tcp_socket(host) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise listen_error(host, port, exc) from None


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that never listens, for a supervisor to keep while its
    workers come and go; raises :class:`ListenError` as :func:`check_port_free` does.

    It has ``SO_REUSEPORT``, so the workers' listeners join it on the same port (port 0: the
    one the kernel picked for it, ``getsockname()[1]``), and no ``SO_REUSEADDR`` (unless a
    stopped server's TIME_WAIT connections refuse it without), so another server's probe
    fails on it even before any worker listens. It receives no connections.
    """
    check_port_free(host, port)
    try:
        return _bound_holder(host, port, reuseaddr=False)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise listen_error(host, port, exc) from None
    # The probe passed, so nothing listens: what refused the bind is a TIME_WAIT connection
    # of a server that just stopped. A single server's listener has no SO_REUSEPORT, so its
    # TIME_WAIT sockets refuse a holder without SO_REUSEADDR for a minute (a `systemctl
    # restart` that raised `workers` exited 1). With it, the holder binds; another server's
    # probe then passes it too while none of its workers listens (between the first
    # worker's start and its listen): the window the module docstring leaves open, wider.
    try:
        return _bound_holder(host, port, reuseaddr=True)
    except OSError as exc:
        raise listen_error(host, port, exc) from None


def _bound_holder(host: str, port: int, *, reuseaddr: bool) -> socket.socket:
    holder = tcp_socket(host)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuseaddr))
        holder.bind((host, port))
    except BaseException:
        holder.close()
        raise
    return holder
