"""probe(): what the kernel offers, in a report a person can read."""

from __future__ import annotations

import errno
import platform
import re
from collections.abc import Callable

import pytest

from ringcast.ringio import Engine, Loop, Probe, RingUnavailable, probe

pytestmark = pytest.mark.kernel


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    assert m, platform.release()
    return int(m.group(1)), int(m.group(2))


def test_io_uring_probe_reports_kernel_version_flags_and_features(
        uring_probe: Probe | RingUnavailable) -> None:
    if isinstance(uring_probe, RingUnavailable):
        # The failure itself must be a readable diagnosis.
        assert uring_probe.cause and uring_probe.remedy
        pytest.skip(f"io_uring unavailable: {uring_probe}")
    p = uring_probe
    assert p.engine is Engine.IO_URING
    assert (p.kernel_major, p.kernel_minor) == _kernel_version()
    assert p.setup_flags != 0
    names = p.flag_names()
    assert names, "a ring is always created with some setup flags (CQSIZE at least)"
    assert p.features != 0
    assert p.sq_entries > 0 and p.cq_entries >= p.sq_entries
    assert p.has_recv_multishot and p.has_accept_multishot  # the loop refuses kernels < 6.0
    # ringio uses a sparse file table from 6.13 on (see uring.c), sized within RLIMIT_NOFILE.
    if (p.kernel_major, p.kernel_minor) >= (6, 13):
        assert p.fixed_files > 0 and p.fixed_files_errno == 0
    else:
        assert p.fixed_files == 0 and p.fixed_files_errno == errno.EOPNOTSUPP
    assert p.zc_enabled == (p.has_send_zc and p.arena_registered
                            and (p.kernel_major, p.kernel_minor) >= (6, 10))

    text = str(p)
    assert f"io_uring (kernel {p.kernel_major}.{p.kernel_minor})" in text
    for name in names:
        assert name in text
    assert "multishot accept: yes" in text and "multishot recv: yes" in text
    assert (f"fixed files: {p.fixed_files} table slots" if p.fixed_files
            else "fixed files: no (needs kernel >= 6.13)") in text
    assert "zero-copy sends: " + ("on" if p.zc_enabled else "off") in text
    assert len(text.splitlines()) >= 5
    assert "rio_probe" not in text and "<cdata" not in text  # no raw cffi objects leak out


def test_epoll_probe_says_epoll() -> None:
    p = probe(Engine.EPOLL)
    assert isinstance(p, Probe)
    assert p.engine is Engine.EPOLL
    assert str(p) == "engine: epoll"


def test_loop_probe_names_the_engine_it_runs(make_loop: Callable[..., Loop],
                                             engine: Engine) -> None:
    loop = make_loop()
    assert loop.probe().engine is engine
    assert loop.engine is engine
