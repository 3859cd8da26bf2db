"""ringcast.server.ordering: the records of a history channel's order between workers
round-trip, the owner is the same in every process, and what an owner does not answer
is given up at its deadline or when its link goes down."""

from __future__ import annotations

import subprocess
import sys

from ringcast.server.history import Position
from ringcast.server.ordering import (
    Joined,
    Sequenced,
    Tickets,
    decode_forward,
    decode_join,
    decode_joined,
    decode_sequenced,
    encode_forward,
    encode_join,
    encode_joined,
    encode_sequenced,
    owner_of,
)


def test_records_round_trip() -> None:
    position = Position("k3Xw9a", 2**40)
    assert decode_forward(encode_forward(3, 7, b"\x81\x02hi")) == (3, 7, b"\x81\x02hi")
    assert decode_sequenced(encode_sequenced(1, 9, position, b"raw", b"v1")) == Sequenced(
        1, 9, position, b"raw", b"v1")
    assert decode_join(encode_join(2, 5, None)) == (2, 5, None)
    assert decode_join(encode_join(2, 5, position)) == (2, 5, position)
    for recovered in (None, True, False):
        joined = Joined(11, recovered, position, b"frames" if recovered else b"")
        assert decode_joined(encode_joined(11, recovered, position, joined.frames)) == joined


def test_the_owner_is_the_same_in_every_process() -> None:
    """crc32, not hash(): str hashes are salted per process."""
    here = [owner_of(f"chat.{n}", 7) for n in range(50)]
    there = subprocess.run(
        [sys.executable, "-c", "from ringcast.server.ordering import owner_of; "
         "print([owner_of(f'chat.{n}', 7) for n in range(50)])"],
        capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}).stdout
    assert str(here) == there.strip()
    assert set(here) == set(range(7))  # and they spread over the workers


def test_tickets_are_given_up_at_their_deadline_or_with_their_owner() -> None:
    tickets: Tickets[str] = Tickets()
    first = tickets.add(owner=1, deadline=10.0, what="a")
    tickets.add(owner=2, deadline=10.0, what="b")
    tickets.add(owner=1, deadline=20.0, what="c")
    assert tickets.expire(5.0, lambda owner: False) == []
    assert tickets.expire(5.0, lambda owner: owner == 2) == ["b"]
    assert tickets.expire(10.0, lambda owner: False) == ["a"]
    assert tickets.pop(first) is None and len(tickets) == 1
