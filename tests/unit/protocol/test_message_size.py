"""The message size guard on its own: frame headers in, offending offset out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringcast.server.protocol.message_size import MessageSizeGuard

from .harness import client_frame

TEXT, BINARY, CONTINUATION, PING = 1, 2, 0, 9


def reference(frames: list[tuple[int, bool, int]], limit: int) -> int | None:
    """Index of the first frame taking a message over ``limit`` (the obvious way)."""
    size = 0
    for index, (opcode, _fin, length) in enumerate(frames):
        if opcode & 8:
            continue
        size = size + length if opcode == CONTINUATION else length
        if size > limit:
            return index
    return None


class TestRFC6455Section10_4_ImplementationSpecificLimits:
    def test_frames_within_the_limit(self) -> None:
        guard = MessageSizeGuard(10)
        data = client_frame(TEXT, b"x" * 10) + client_frame(BINARY, b"y" * 10)
        assert guard.feed(data) is None

    def test_a_frame_over_the_limit_is_found_by_its_header(self) -> None:
        guard = MessageSizeGuard(10)
        first = client_frame(TEXT, b"ok")
        assert guard.feed(first + client_frame(BINARY, length=11)) == len(first)
        assert guard.size == 11

    def test_huge_announced_length_needs_no_payload(self) -> None:
        guard = MessageSizeGuard(1 << 20)
        assert guard.feed(client_frame(BINARY, length=2**62)) == 0

    def test_fragments_add_up(self) -> None:
        guard = MessageSizeGuard(10)
        first = client_frame(TEXT, b"x" * 6, fin=False)
        ping = client_frame(PING, b"p" * 100)  # control frames do not count
        assert guard.feed(first + ping) is None
        assert guard.feed(client_frame(CONTINUATION, b"y" * 5)) == 0
        assert guard.size == 11

    def test_a_new_message_starts_from_zero(self) -> None:
        guard = MessageSizeGuard(10)
        for _ in range(5):
            assert guard.feed(client_frame(BINARY, b"x" * 10)) is None

    def test_header_split_across_receives(self) -> None:
        guard = MessageSizeGuard(100)
        data = client_frame(BINARY, b"x" * 50) + client_frame(BINARY, length=70000)
        results = [guard.feed(data[i : i + 1]) for i in range(len(data))]
        # The offending header is reported on its last byte, at offset 0 of that chunk.
        assert results[-1] == 0
        assert results[:-1] == [None] * (len(data) - 1)

    @given(
        frames=st.lists(
            st.tuples(
                st.sampled_from([TEXT, BINARY, CONTINUATION, PING]),
                st.booleans(),
                st.one_of(st.integers(0, 200), st.sampled_from([125, 126, 65535, 65536])),
            ),
            max_size=8,
        ),
        limit=st.integers(0, 300),
        cuts=st.lists(st.integers(0, 2000), max_size=6),
        masked=st.booleans(),
    )
    def test_matches_the_obvious_computation_for_any_split(
        self,
        frames: list[tuple[int, bool, int]],
        limit: int,
        cuts: list[int],
        masked: bool,
    ) -> None:
        frames = [(op, fin, min(n, 125) if op & 8 else n) for op, fin, n in frames]
        encoded = [client_frame(op, b"\0" * n, fin=fin, masked=masked) for op, fin, n in frames]
        data = b"".join(encoded)
        expected = reference(frames, limit)
        expected_offset = None if expected is None else sum(map(len, encoded[:expected]))
        guard = MessageSizeGuard(limit)
        start = 0
        found = None
        for end in [*sorted(c for c in cuts if c < len(data)), len(data)]:
            if end < start:
                continue
            result = guard.feed(data[start:end])
            if result is not None:
                found = start + result
                break
            start = end
        if expected_offset is None:
            assert found is None
        else:
            # Reported at the offending header's start, or at the start of the chunk
            # that completed it when the header was split.
            assert found is not None
            assert expected_offset <= found <= expected_offset + 14
            assert found == max(expected_offset, start)
