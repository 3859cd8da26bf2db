"""The records workers exchange over their links: one framed message (or one worker's
numbers) per record, whatever way the bytes are cut."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringcast.server.links import (
    KIND_HOST_STATS,
    KIND_PUBLISH,
    KIND_STATS,
    MAX_BODY,
    ORDERING_KINDS,
    LinkProtocolError,
    Record,
    RecordReader,
    encode_record,
)

records = st.lists(
    st.builds(Record, st.sampled_from([KIND_PUBLISH, KIND_STATS, KIND_HOST_STATS,
                                       *sorted(ORDERING_KINDS)]),
              st.text(max_size=40), st.binary(max_size=3000)),
    max_size=6,
)


@given(records, st.lists(st.integers(0, 20000), max_size=8))
def test_records_come_back_whole_and_in_order_for_any_split(
    sent: list[Record], cuts: list[int]
) -> None:
    data = b"".join(encode_record(r.kind, r.channel, r.body) for r in sent)
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    reader = RecordReader()
    got: list[Record] = []
    for a, b in itertools.pairwise(bounds):
        got += reader.feed(data[a:b])
    assert got == sent


def test_a_partial_record_waits_for_the_rest() -> None:
    data = encode_record(KIND_PUBLISH, "news", b"frame")
    reader = RecordReader()
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [Record(KIND_PUBLISH, "news", b"frame")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (bytes([9, 0, 0, 0, 0, 0, 0]), "kind 9"),
        (bytes([1, 0, 0]) + (MAX_BODY + 1).to_bytes(4, "big"), f"body {MAX_BODY + 1} bytes"),
    ],
)
def test_bytes_that_are_not_records_are_a_bug_named_at_once(header: bytes, message: str) -> None:
    with pytest.raises(LinkProtocolError, match=message):
        RecordReader().feed(header)
