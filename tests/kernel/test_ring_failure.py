"""A ring that refuses the loop's work fails the loop for good: reap() raises a RingioError
naming the errno, every later reap() raises it again, the failure is counted, and close()
still frees everything.

The refusal is a real one: io_uring_enter from a thread other than the loop's creator,
which a SINGLE_ISSUER ring answers with EEXIST and a registered ring fd (known only to the
thread that registered it) with EINVAL or EBADF.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable

import pytest

from ringcast.ringio import Engine, RingioError

from .helpers import Server, ids

pytestmark = pytest.mark.kernel

IORING_SETUP_SINGLE_ISSUER = 1 << 12


@pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)
def test_a_refused_enter_fails_the_loop_for_good(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    loop = srv.loop
    probe = loop.probe()
    if not (probe.ring_fd_registered or probe.setup_flags & IORING_SETUP_SINGLE_ISSUER):
        pytest.skip("this ring accepts any thread: neither SINGLE_ISSUER nor a registered fd")
    (c,) = srv.connect(1)

    raised: list[RingioError] = []

    def reap_elsewhere() -> None:
        try:
            loop.reap(0)
        except RingioError as exc:
            raised.append(exc)

    other = threading.Thread(target=reap_elsewhere)
    other.start()
    other.join(10)
    assert not other.is_alive()
    assert len(raised) == 1, "reap() from another thread must fail"
    failure = raised[0]
    assert failure.errno in (errno.EEXIST, errno.EINVAL, errno.EBADF)
    assert str(failure).startswith(f"[Errno {failure.errno}] the loop has failed: "
                                   f"io_uring_enter failed with {errno.errorcode[failure.errno]}")
    assert str(failure).endswith("; close it")
    st = loop.stats()
    assert st["submit_errors"] == 1 and st["submit_retries"] == 0

    # Failed for good: the creating thread gets the same error, and nothing more is tried.
    with pytest.raises(RingioError) as again:
        loop.reap(0)
    assert again.value.errno == failure.errno
    slot = loop.slot(b"never sent")
    assert loop.fanout(slot, ids([c.conn]), 1) == 1      # queued, but nothing is submitted
    loop.release(slot)
    with pytest.raises(RingioError):
        loop.reap(0)
    assert loop.stats()["submit_errors"] == 1, "a failed loop does not enter the ring again"
    mine, theirs = socket.socketpair()
    with mine, theirs:
        with pytest.raises(RingioError) as adopting:
            loop.adopt(mine)
        assert adopting.value.errno == failure.errno
        assert mine.fileno() >= 0, "a socket the loop refused stays the caller's"

    # Closing still frees everything: the client sees the connection end.
    loop.close()
    c.sock.setblocking(True)
    c.sock.settimeout(5)
    assert c.sock.recv(100) == b"", "the loop's close must close its sockets"
