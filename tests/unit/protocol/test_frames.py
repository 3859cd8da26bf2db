"""The frame reader on its own: client bytes in, frame events or a FrameError out.

Frames are built by hand (tests.support.rawws) so that every rule can be broken. The
reader is wsproto's frame protocol with two limits added; the differential tests at the
end read the same bytes with wsproto's whole server connection and expect the same
messages, control frames and failures, and ``TestWsprotoInternals`` pins what the reader
needs of wsproto.
"""

from __future__ import annotations

import codecs
import itertools
import os
from collections import deque
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.events import CloseConnection as WsClose
from wsproto.frame_protocol import FrameDecoder, FrameProtocol, Opcode

from ringcast.server.protocol import Session, SessionState
from ringcast.server.protocol.frames import Event as FrameEvent
from ringcast.server.protocol.frames import (
    FrameError,
    FrameReader,
    Kind,
    _LimitedDecoder,
    _ServerFrames,
    close_frame,
)
from ringcast.server.protocol.ratelimit import TokenBucket
from ringcast.server.protocol.websocket_phase import WebSocketPhase
from tests.support.rawws import (
    ACCEPT,
    KEY,
    LENGTH_16,
    LENGTH_64,
    Frame,
    accept_key,
    close_payload,
    frame,
    handshake_request,
    parse_frames,
)

from .harness import SETTINGS, WsClient, open_client
from .harness import settings as with_settings

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
START = int(Kind.START)
NO_LIMIT = 2**63
NO_FRAME_LIMIT = 2**31
Event = tuple[int, bytes]


def as_tuple(event: FrameEvent) -> Event:
    """An event as (kind, payload); a close as its payload on the wire, so that the
    differential tests compare bytes."""
    if event.kind is Kind.CLOSE:
        if event.code == 1005:
            return (CLOSE, b"")
        return (CLOSE, close_payload(event.code, event.reason.encode()))
    return (int(event.kind), event.payload)


def feed(reader: FrameReader, data: bytes) -> list[Event]:
    return [as_tuple(event) for event in reader.feed(data)]


def read(
    pieces: Iterable[bytes],
    limit: int = NO_LIMIT,
    *,
    starts: bool = False,
    max_frames: int = NO_FRAME_LIMIT,
) -> tuple[list[Event], tuple[int, str] | None]:
    """Feed ``pieces`` to a reader the way the WebSocket phase does (a new reader once
    the last one is idle); return the events and the failure, if any."""
    reader = FrameReader(limit, max_frames)
    events: list[Event] = []
    try:
        for piece in pieces:
            for event in reader.feed(piece):
                if event.kind is not Kind.START or starts:
                    events.append(as_tuple(event))
                if event.kind is Kind.CLOSE:
                    return events, None
            if reader.idle:
                reader = FrameReader(limit, max_frames)
    except FrameError as exc:
        return events, (exc.code, exc.reason)
    return events, None


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def failure(data: bytes | Sequence[bytes], limit: int = NO_LIMIT) -> tuple[int, str] | None:
    return read([data] if isinstance(data, bytes) else data, limit)[1]


def assert_invalid_data(data: bytes, reason_start: str) -> None:
    """Reading ``data`` fails with 1007 and a reason that starts with ``reason_start``
    (the rest of wsproto's reason, the decoder's wording, is not ours to pin)."""
    got = failure(data)
    assert got is not None, "read without a failure"
    code, reason = got
    assert (code, reason[: len(reason_start)]) == (1007, reason_start), got


SECTION_5_7_KEY = bytes.fromhex("37fa213d")
SECTION_5_7_EXAMPLES = [
    pytest.param(frame(TEXT, b"Hello", masked=False), "810548656c6c6f", id="unmasked text"),
    pytest.param(frame(TEXT, b"Hello", key=SECTION_5_7_KEY), "818537fa213d7f9f4d5158",
                 id="masked text"),
    pytest.param(frame(TEXT, b"Hel", fin=False, masked=False), "010348656c",
                 id="first fragment"),
    pytest.param(frame(CONTINUATION, b"lo", masked=False), "80026c6f", id="last fragment"),
    pytest.param(frame(PING, b"Hello", masked=False), "890548656c6c6f", id="unmasked ping"),
    pytest.param(frame(PONG, b"Hello", key=SECTION_5_7_KEY), "8a8537fa213d7f9f4d5158",
                 id="masked pong"),
    pytest.param(frame(BINARY, bytes(256), masked=False)[:4], "827e0100", id="256 bytes"),
    pytest.param(frame(BINARY, bytes(65536), masked=False)[:10], "827f0000000000010000",
                 id="64 KiB"),
]


class TestRFC6455Section5_7_TheHandBuiltFramesOfEverySuite:
    """tests.support.rawws, which builds the frames of these tests and of every suite, writes
    and reads the examples of RFC 6455 section 5.7 byte for byte."""

    @pytest.mark.parametrize(("built", "wire"), SECTION_5_7_EXAMPLES)
    def test_built_as_the_rfc_shows(self, built: bytes, wire: str) -> None:
        assert built.hex() == wire

    def test_read_back_masked_or_not(self) -> None:
        data = bytearray(bytes.fromhex("010348656c" "818537fa213d7f9f4d5158" "80026c6f" "81"))
        assert parse_frames(data) == [
            Frame(TEXT, b"Hel", fin=False),
            Frame(TEXT, b"Hello", masked=True),
            Frame(CONTINUATION, b"lo"),
        ]
        assert data == b"\x81"  # an unfinished frame stays

    @pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
    def test_wsproto_reads_what_they_build_and_they_read_what_wsproto_writes(
        self, n: int
    ) -> None:
        payload = os.urandom(n)
        server = FrameProtocol(client=False, extensions=[])
        server.receive_bytes(frame(BINARY, payload))
        received = [(f.opcode, f.payload, f.frame_finished) for f in server.received_frames()]
        assert received == [(Opcode.BINARY, payload, True)]
        data = bytearray(server.send_data(payload) + server.ping(b"p") + server.close(1001, "x"))
        assert parse_frames(data) == [
            Frame(BINARY, payload),
            Frame(PING, b"p"),
            Frame(CLOSE, close_payload(1001, "x")),
        ]
        assert data == b""

    def test_the_opening_handshake_of_section_1_3(self) -> None:
        request = handshake_request("/chat", Origin="http://example.com")
        assert request == (
            b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n"
        )
        assert accept_key(KEY) == ACCEPT == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class TestRFC6455Section5_2_BaseFraming:
    @pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
    def test_each_length_encoding(self, n: int) -> None:
        payload = os.urandom(n)
        assert read([frame(BINARY, payload)]) == ([(BINARY, payload)], None)

    @pytest.mark.parametrize(
        ("n", "encoding", "reason"),
        [
            (5, LENGTH_16, "Payload length used 2 bytes when 1 would have sufficed"),
            (125, LENGTH_16, "Payload length used 2 bytes when 1 would have sufficed"),
            (5, LENGTH_64, "Payload length used 8 bytes when 2 would have sufficed"),
            (65535, LENGTH_64, "Payload length used 8 bytes when 2 would have sufficed"),
        ],
    )
    def test_length_must_use_the_shortest_encoding(
        self, n: int, encoding: int, reason: str
    ) -> None:
        assert failure(frame(BINARY, b"x" * n, encoding=encoding)) == (1002, reason)

    def test_64_bit_length_with_the_top_bit_set(self) -> None:
        data = frame(BINARY, length=1 << 63)
        assert failure(data) == (1002, "8-byte payload length with non-zero MSB")

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes(self, opcode: int) -> None:
        assert failure(frame(opcode, b"x")) == (1002, f"Invalid opcode {opcode:#x}")

    @pytest.mark.parametrize("rsv", [1, 2, 4, 7])
    def test_rsv_bits_without_an_extension(self, rsv: int) -> None:
        assert failure(frame(TEXT, b"x", rsv=rsv)) == (1002, "Reserved bit set unexpectedly")

    def test_several_frames_in_one_piece(self) -> None:
        data = frame(TEXT, b"a") + frame(BINARY, b"b") + frame(PING, b"c") + frame(PONG, b"")
        expected = [(TEXT, b"a"), (BINARY, b"b"), (PING, b"c"), (PONG, b"")]
        assert read([data]) == (expected, None)

    def test_headers_and_payloads_split_at_every_byte(self) -> None:
        data = (
            frame(TEXT, "é".encode() * 100)
            + frame(BINARY, b"x" * 70000)
            + frame(BINARY, b"y" * 300, fin=False)
            + frame(PING, b"ping")
            + frame(CONTINUATION, b"z" * 3)
        )
        expected = [
            (TEXT, "é".encode() * 100),
            (BINARY, b"x" * 70000),
            (PING, b"ping"),
            (BINARY, b"y" * 300 + b"zzz"),
        ]
        assert read(bytewise(data)) == (expected, None)
        for cut in range(1, 20):
            assert read([data[:cut], data[cut:]]) == (expected, None)

    def test_a_header_without_its_payload_yet(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        whole = frame(BINARY, b"hello")
        assert feed(reader, whole[:6]) == []
        assert not reader.idle
        assert feed(reader, whole[6:]) == [(START, b""), (BINARY, b"hello")]
        assert reader.idle


class TestRFC6455Section5_3_ClientToServerMasking:
    def test_an_unmasked_frame_is_a_protocol_error(self) -> None:
        data = frame(TEXT, b"x", masked=False)
        assert failure(data) == (1002, "server received unexpected unmasked frame")

    @given(
        payload=st.binary(max_size=3000),
        cuts=st.lists(st.integers(0, 3020), max_size=6),
        key=st.binary(min_size=4, max_size=4),
    )
    def test_the_mask_continues_across_pieces(
        self, payload: bytes, cuts: list[int], key: bytes
    ) -> None:
        data = frame(BINARY, payload, key=key)
        bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
        pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
        assert read(pieces) == ([(BINARY, payload)], None)


class TestRFC6455Section5_4_Fragmentation:
    def test_fragments_are_joined_once(self) -> None:
        data = (
            frame(BINARY, b"ab", fin=False)
            + frame(CONTINUATION, b"", fin=False)
            + frame(CONTINUATION, b"cd", fin=False)
            + frame(CONTINUATION, b"ef")
        )
        assert read([data], starts=True) == ([(START, b""), (BINARY, b"abcdef")], None)

    def test_control_frames_in_the_middle(self) -> None:
        data = (
            frame(TEXT, b"a", fin=False)
            + frame(PING, b"1")
            + frame(PONG, b"2")
            + frame(CONTINUATION, b"b")
        )
        expected = [(START, b""), (PING, b"1"), (PONG, b"2"), (TEXT, b"ab")]
        assert read([data], starts=True) == (expected, None)

    def test_empty_fragments_make_an_empty_message(self) -> None:
        data = frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"")
        assert read([data]) == ([(TEXT, b"")], None)

    def test_continuation_without_a_message(self) -> None:
        assert failure(frame(CONTINUATION, b"x")) == (1002, "unexpected CONTINUATION")

    def test_continuation_after_a_finished_message(self) -> None:
        data = frame(TEXT, b"a") + frame(CONTINUATION, b"b")
        assert read([data]) == ([(TEXT, b"a")], (1002, "unexpected CONTINUATION"))

    @pytest.mark.parametrize(("opcode", "name"), [(TEXT, "TEXT"), (BINARY, "BINARY")])
    def test_new_message_inside_a_fragmented_one(self, opcode: int, name: str) -> None:
        data = frame(BINARY, b"a", fin=False) + frame(opcode, b"b")
        reason = f"expected CONTINUATION, got <Opcode.{name}: {opcode}>"
        assert failure(data) == (1002, reason)

    def test_the_start_event_comes_with_the_first_payload_byte(self) -> None:
        # When wsproto reported the first frame of a message.
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        first = frame(BINARY, b"abc", fin=False)
        assert feed(reader, first[:6]) == []  # the whole header
        assert feed(reader, first[6:7]) == [(START, b"")]
        assert feed(reader, first[7:] + frame(CONTINUATION, b"d")) == [
            (BINARY, b"abcd")
        ]

    def test_an_empty_first_frame_starts_the_message_with_its_header(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        assert feed(reader, frame(TEXT, b"", fin=False)) == [(START, b"")]

    def test_invalid_utf8_comes_before_the_start_event(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        events: list[Event] = []
        with pytest.raises(FrameError) as error:
            events.extend(feed(reader, frame(TEXT, b"ok\xff", fin=False)))
        assert (events, error.value.code) == ([], 1007)

    def test_a_reader_with_a_message_in_progress_is_not_idle(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        feed(reader, frame(TEXT, b"a", fin=False))
        assert not reader.idle
        feed(reader, frame(CONTINUATION, b"b"))
        assert reader.idle

    def test_a_discarding_reader_still_reads_but_keeps_nothing(self) -> None:
        reader = FrameReader(10, 2)
        feed(reader, frame(TEXT, b"a", fin=False))
        assert reader.discarding() is reader
        data = (
            frame(CONTINUATION, b"b" * 1000, fin=False)
            + frame(CONTINUATION, b"c", fin=False)
            + frame(CONTINUATION, b"c")
        )
        assert feed(reader, data) == []  # neither the size nor the frame count limit
        assert reader.idle
        with pytest.raises(FrameError) as error:
            feed(reader, frame(TEXT, b"\xff"))
        assert error.value.code == 1007  # still checked


class TestRFC6455Section5_5_ControlFrames:
    @pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
    def test_fragmented_control_frame(self, opcode: int) -> None:
        reason = "Invalid attempt to fragment control frame"
        assert failure(frame(opcode, b"", fin=False)) == (1002, reason)

    @pytest.mark.parametrize("opcode", [CLOSE, PING, PONG])
    def test_control_frame_over_125_bytes(self, opcode: int) -> None:
        reason = "Control frame with payload len > 125"
        assert failure(frame(opcode, b"x" * 126)) == (1002, reason)

    def test_125_bytes_is_fine(self) -> None:
        assert read([frame(PING, b"x" * 125)]) == ([(PING, b"x" * 125)], None)

    def test_a_control_frame_split_across_pieces(self) -> None:
        data = frame(PING, b"0123456789")
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        assert feed(reader, data[:9]) == []
        assert not reader.idle
        assert feed(reader, data[9:12]) == []
        assert feed(reader, data[12:]) == [(PING, b"0123456789")]
        assert reader.idle

    def test_control_frames_do_not_count_toward_the_message_size(self) -> None:
        data = frame(BINARY, b"x" * 10, fin=False) + frame(PING, b"p" * 100)
        assert read([data + frame(CONTINUATION, b"")], 10) == (
            [(PING, b"p" * 100), (BINARY, b"x" * 10)],
            None,
        )


class TestRFC6455Section5_5_1_Close:
    def test_empty_close(self) -> None:
        events, error = read([frame(CLOSE)])
        assert (events, error) == ([(CLOSE, b"")], None)
        (event,) = FrameReader(NO_LIMIT, NO_FRAME_LIMIT).feed(frame(CLOSE))
        assert (event.code, event.reason) == (1005, "")

    def test_code_and_reason(self) -> None:
        payload = close_payload(1000, "bye é".encode())
        assert read([frame(CLOSE, payload)]) == ([(CLOSE, payload)], None)
        (event,) = FrameReader(NO_LIMIT, NO_FRAME_LIMIT).feed(frame(CLOSE, payload))
        assert (event.code, event.reason) == (1000, "bye é")

    def test_one_byte_payload(self) -> None:
        assert failure(frame(CLOSE, b"\x03")) == (1002, "CLOSE with 1 byte payload")

    def test_reason_must_be_utf8(self) -> None:
        assert_invalid_data(
            frame(CLOSE, close_payload(1000, b"ok\xff")),
            "Error decoding CLOSE reason: 'utf-8' codec can't decode byte 0xff in position 2",
        )

    def test_nothing_after_a_close_frame_is_read(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        data = frame(CLOSE) + frame(TEXT, b"late") + b"\x00garbage"
        assert feed(reader, data) == [(CLOSE, b"")]


class TestRFC6455Section7_4_StatusCodes:
    ALLOWED = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999)

    @pytest.mark.parametrize("code", ALLOWED)
    def test_codes_an_endpoint_may_send(self, code: int) -> None:
        payload = close_payload(code)
        assert read([frame(CLOSE, payload)]) == ([(CLOSE, payload)], None)

    @pytest.mark.parametrize(
        ("code", "reason"),
        [
            (0, "CLOSE with invalid code"),
            (999, "CLOSE with invalid code"),
            (5000, "CLOSE with invalid code"),
            (65535, "CLOSE with invalid code"),
            (1005, "remote CLOSE with local-only reason"),
            (1006, "remote CLOSE with local-only reason"),
            (1015, "remote CLOSE with local-only reason"),
            (1004, "CLOSE with unknown reserved code"),
            (1014, "CLOSE with unknown reserved code"),
            (1016, "CLOSE with unknown reserved code"),
            (2999, "CLOSE with unknown reserved code"),
        ],
    )
    def test_codes_an_endpoint_may_not_send(self, code: int, reason: str) -> None:
        assert failure(frame(CLOSE, close_payload(code))) == (1002, reason)

    def test_every_code_is_judged_as_wsproto_judges_it(self) -> None:
        for code in range(0, 5100):
            payload = close_payload(code, b"r")
            assert failure(frame(CLOSE, payload)) == wsproto_reading([frame(CLOSE, payload)])[1]


class TestRFC6455Section8_1_UTF8:
    def test_valid_text_split_inside_characters(self) -> None:
        text = "aé€𝄞" * 20
        data = frame(TEXT, text.encode())
        assert read(bytewise(data)) == ([(TEXT, text.encode())], None)

    def test_fragments_may_split_a_character(self) -> None:
        encoded = "€".encode()
        data = (
            frame(TEXT, encoded[:1], fin=False)
            + frame(CONTINUATION, encoded[1:2], fin=False)
            + frame(CONTINUATION, encoded[2:])
        )
        assert read([data]) == ([(TEXT, encoded)], None)

    @pytest.mark.parametrize(
        "payload",
        [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82", b"\x80"],
    )
    def test_invalid_text(self, payload: bytes) -> None:
        assert_invalid_data(frame(TEXT, payload), "'utf-8' codec can't decode byte")

    def test_fails_fast_in_the_middle_of_a_frame(self) -> None:
        # The first invalid byte fails the connection before the frame is complete.
        payload = b"hello \xf4\x90\x80\x80 world" + b"x" * 1000
        data = frame(TEXT, payload)
        header = len(data) - len(payload)
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        fed = 0
        with pytest.raises(FrameError) as error:
            for byte in bytewise(data):
                fed += 1
                feed(reader, byte)
        assert error.value.code == 1007
        assert fed == header + len(b"hello \xf4\x90")

    def test_invalid_across_fragments(self) -> None:
        reader = FrameReader(NO_LIMIT, NO_FRAME_LIMIT)
        feed(reader, frame(TEXT, b"\xc3", fin=False))
        with pytest.raises(FrameError) as error:
            feed(reader, frame(CONTINUATION, b"("))
        assert error.value.code == 1007

    def test_truncated_character_at_the_end_of_the_message(self) -> None:
        # Only the end of the message says the character will not be completed.
        first = frame(TEXT, b"a\xc3", fin=False)
        assert read([first], starts=True) == ([(START, b"")], None)
        assert_invalid_data(
            first + frame(CONTINUATION, b""),
            "'utf-8' codec can't decode byte 0xc3 in position 0: unexpected end of data",
        )

    def test_binary_is_not_checked(self) -> None:
        assert read([frame(BINARY, b"\xff")]) == ([(BINARY, b"\xff")], None)


def reference_size_failure(frames: list[tuple[int, bool, int]], limit: int) -> int | None:
    """Index of the first frame taking its message over ``limit`` (the obvious way)."""
    size = 0
    for index, (opcode, _fin, length) in enumerate(frames):
        if opcode & 8:
            continue
        size = size + length if opcode == CONTINUATION else length
        if size > limit:
            return index
    return None


@st.composite
def valid_frame_sequences(draw: st.DrawFn) -> list[tuple[int, bool, int]]:
    """(opcode, fin, length) of frames that follow the fragmentation rules."""
    frames: list[tuple[int, bool, int]] = []
    in_message = False
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["data", "data", "control"]))
        if kind == "control":
            frames.append((draw(st.sampled_from([PING, PONG])), True, draw(st.integers(0, 125))))
            continue
        opcode = CONTINUATION if in_message else draw(st.sampled_from([TEXT, BINARY]))
        fin = draw(st.booleans())
        length = draw(st.one_of(st.integers(0, 200), st.sampled_from([125, 126, 65535, 65536])))
        frames.append((opcode, fin, length))
        in_message = not fin
    return frames


class TestRFC6455Section10_4_MessageSizeLimit:
    def test_at_the_limit(self) -> None:
        assert read([frame(BINARY, b"x" * 10)], 10) == ([(BINARY, b"x" * 10)], None)

    def test_over_the_limit_is_decided_on_the_header(self) -> None:
        reader = FrameReader(1 << 20, NO_FRAME_LIMIT)
        with pytest.raises(FrameError) as error:
            feed(reader, frame(BINARY, length=2**62))  # no payload at all
        assert error.value.code == 1009
        assert error.value.reason == f"message is at least {2**62} bytes, at most {1 << 20} allowed"

    def test_fragments_add_up(self) -> None:
        data = frame(TEXT, b"x" * 6, fin=False) + frame(PING, b"p" * 100)
        events, error = read([data + frame(CONTINUATION, length=5)], 10)
        assert events == [(PING, b"p" * 100)]
        assert error == (1009, "message is at least 11 bytes, at most 10 allowed")

    def test_each_message_starts_from_zero(self) -> None:
        data = frame(BINARY, b"x" * 10) * 5
        assert read([data], 10) == ([(BINARY, b"x" * 10)] * 5, None)

    def test_protocol_errors_in_the_same_header_come_first(self) -> None:
        data = frame(BINARY, length=1 << 63)
        assert failure(data, 100) == (1002, "8-byte payload length with non-zero MSB")

    @given(
        frames=valid_frame_sequences(),
        limit=st.integers(0, 300),
        cuts=st.lists(st.integers(0, 2000), max_size=6),
    )
    def test_matches_the_obvious_computation_for_any_split(
        self, frames: list[tuple[int, bool, int]], limit: int, cuts: list[int]
    ) -> None:
        encoded = [frame(op, b"\0" * n, fin=fin) for op, fin, n in frames]
        data = b"".join(encoded)
        offending = reference_size_failure(frames, limit)
        bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
        reader = FrameReader(limit, NO_FRAME_LIMIT)
        consumed = 0
        events: list[Event] = []
        error: FrameError | None = None
        try:
            for a, b in itertools.pairwise(bounds):
                consumed = b
                events.extend(e for e in feed(reader, data[a:b]) if e[0] != START)
        except FrameError as exc:
            error = exc
        if offending is None:
            assert error is None
            assert len(events) == len([f for f in frames if f[0] & 8 or f[1]])
        else:
            assert error is not None, f"no failure, frame {offending} is over {limit}"
            assert error.code == 1009
            # Raised by the piece that completed the offending header, before its payload.
            header_end = (
                sum(map(len, encoded[:offending])) + len(encoded[offending]) - frames[offending][2]
            )
            assert consumed >= header_end
            assert not [b for b in bounds if header_end <= b < consumed]


class TestIdleSessionsHoldNoBuffers:
    """An open WebSocket between frames keeps references and numbers only."""

    CONTAINERS = (
        bytearray,
        deque,
        list,
        dict,
        set,
        memoryview,
        codecs.IncrementalDecoder,
        FrameReader,
    )

    def held(self, obj: object) -> dict[str, object]:
        assert not hasattr(obj, "__dict__"), f"{type(obj).__name__} has a __dict__"
        names = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
        return {name: getattr(obj, name) for name in names if hasattr(obj, name)}

    def assert_idle(self, session: Session) -> None:
        assert session.state is SessionState.OPEN
        state = self.held(session)
        phase = state["_phase"]
        assert isinstance(phase, WebSocketPhase)
        for name, value in self.held(phase).items():
            assert not isinstance(value, self.CONTAINERS), (name, value)
            assert not isinstance(value, bytes | str) or name == "channel", (name, value)
            assert type(value).__module__.split(".")[0] not in ("wsproto", "h11"), (name, value)
        assert self.held(phase)["_reader"] is None
        assert self.held(phase)["_gate"] is None

    def test_right_after_the_handshake(self) -> None:
        client = open_client()
        self.assert_idle(client.session)

    def test_after_messages_and_a_fragmented_message(self) -> None:
        client = open_client()
        client.send(TextMessage("héllo"))
        client.send(BytesMessage(b"ab", message_finished=False))
        reader = self.held(self.held(client.session)["_phase"])["_reader"]
        assert isinstance(reader, FrameReader)  # a message is in progress
        client.send(BytesMessage(b"cd"))
        self.assert_idle(client.session)

    def test_after_a_keepalive_round_trip(self) -> None:
        client = open_client()
        client.tick(20.0)
        (ping,) = client.take_events()
        assert isinstance(ping, Ping)
        client.send(ping.response(), now=21.0)
        self.assert_idle(client.session)

    def test_the_channel_name_is_shared(self) -> None:
        first, second = open_client(), open_client()
        assert first.session.channel is second.session.channel

    def test_a_clients_own_ping_makes_only_the_control_budget(self) -> None:
        # Pings and unsolicited pongs are paid for: the budget is made at the first.
        client = open_client()
        client.send(Ping(b"x"))
        client.send(Pong(b"y"))
        gate = self.held(self.held(client.session)["_phase"])["_gate"]
        control = self.held(gate)["control"]
        assert isinstance(control, TokenBucket)
        assert self.held(gate) == {
            "bucket": None,
            "control": control,
            "may_publish": True,
            "until": None,
        }

    def test_a_rate_limit_or_token_creates_the_gate(self) -> None:
        client = WsClient(with_settings(max_messages_per_second=5.0, message_burst=3))
        client.connect()
        gate = self.held(self.held(client.session)["_phase"])["_gate"]
        bucket = self.held(gate)["bucket"]
        assert isinstance(bucket, TokenBucket)
        assert self.held(gate) == {
            "bucket": bucket,
            "control": None,
            "may_publish": True,
            "until": None,
        }


# -- differential: the same bytes through wsproto ------------------------------------


def wsproto_reading(pieces: Iterable[bytes]) -> tuple[list[Event], tuple[int, str] | None]:
    """What the server read with wsproto before: complete messages and control frames
    (close as its payload), and the failure."""
    conn = Connection(ConnectionType.SERVER)
    events: list[Event] = []
    parts: list[bytes] = []
    for piece in pieces:
        conn.receive_data(piece)
        for event in conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data.encode() if isinstance(event, TextMessage) else event.data
                parts.append(bytes(data))
                if event.message_finished:
                    events.append(
                        (TEXT if isinstance(event, TextMessage) else BINARY, b"".join(parts))
                    )
                    parts.clear()
            elif isinstance(event, Ping):
                events.append((PING, bytes(event.payload)))
            elif isinstance(event, Pong):
                events.append((PONG, bytes(event.payload)))
            elif isinstance(event, WsClose):
                if conn.state is not ConnectionState.REMOTE_CLOSING:
                    return events, (int(event.code), event.reason or "")
                payload = (
                    b""
                    if event.code == 1005
                    else close_payload(event.code, (event.reason or "").encode())
                )
                events.append((CLOSE, payload))
                return events, None
    return events, None


TEXTS = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=12),  # mostly invalid UTF-8
    st.sampled_from([b"\xf4\x90\x80\x80", b"\xed\xa0\x80", b"\xc3", "é€𝄞".encode()]),
)
CLOSE_PAYLOADS = st.one_of(
    st.sampled_from([b"", b"\x03"]),
    st.builds(
        close_payload,
        st.one_of(st.integers(0, 65535), st.sampled_from([1000, 1004, 1005, 1014, 3000, 4999])),
        st.one_of(st.just(b""), st.text(max_size=10).map(str.encode), st.just(b"\xff")),
    ),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Client frames, mostly valid, some breaking one rule."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["message", "message", "control", "close", "raw"]))
        if kind == "message":
            opcode = draw(st.sampled_from([TEXT, BINARY]))
            payload = draw(TEXTS) if opcode == TEXT else draw(st.binary(max_size=300))
            cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
            bounds = [0, *cuts, len(payload)]
            pieces = [payload[a:b] for a, b in itertools.pairwise(bounds)]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                out.append(frame(opcode if index == 0 else CONTINUATION, piece, fin=last))
                if draw(st.integers(0, 4)) == 0:
                    out.append(frame(PING, draw(st.binary(max_size=5))))
        elif kind == "control":
            out.append(frame(draw(st.sampled_from([PING, PONG])), draw(st.binary(max_size=125))))
        elif kind == "close":
            out.append(frame(CLOSE, draw(CLOSE_PAYLOADS)))
        else:
            out.append(
                frame(
                    draw(st.integers(0, 15)),
                    draw(st.binary(max_size=130)),
                    fin=draw(st.booleans()),
                    rsv=draw(st.sampled_from([0, 0, 0, 1, 4])),
                    masked=draw(st.sampled_from([True, True, True, False])),
                    encoding=draw(st.sampled_from([None, None, LENGTH_16, LENGTH_64])),
                )
            )
    return b"".join(out)


class TestSameAsWsproto:
    @settings(max_examples=500)
    @given(data=streams(), cuts=st.lists(st.integers(0, 3000), max_size=8))
    def test_same_events_and_failure_for_any_split(self, data: bytes, cuts: list[int]) -> None:
        bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
        pieces = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        assert read(pieces) == wsproto_reading(pieces)

    def test_close_frames_are_what_wsproto_sends(self) -> None:
        for code in (1000, 1001, 1002, 1009, 1011, 3008, 4999):
            for reason in ("", "bye", "é" * 70, "x" * 200, "€" * 42):
                expected = FrameProtocol(client=False, extensions=[]).close(code, reason)
                assert close_frame(code, reason) == bytes(expected)


class TestMessageFrameLimit:
    """ringcast's own limit: a message in more than ``max_frames`` frames closes with 1008
    at the header of the frame one too many, before its payload."""

    def test_at_the_limit(self) -> None:
        data = frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"b", fin=False)
        data += frame(CONTINUATION, b"c")
        assert read([data], max_frames=3) == ([(TEXT, b"abc")], None)

    def test_one_frame_more(self) -> None:
        data = frame(BINARY, b"", fin=False) + frame(CONTINUATION, b"", fin=False) * 2
        reason = "message in more than 2 frames"
        assert read([data], max_frames=2) == ([], (1008, reason))

    def test_decided_on_the_header(self) -> None:
        reader = FrameReader(NO_LIMIT, 1)
        feed(reader, frame(BINARY, b"x", fin=False))
        with pytest.raises(FrameError) as error:
            feed(reader, frame(CONTINUATION, length=100))  # header only
        assert error.value.code == 1008

    def test_each_message_counts_from_one(self) -> None:
        data = (frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"b")) * 10
        assert read([data], max_frames=2) == ([(TEXT, b"ab")] * 10, None)

    def test_control_frames_do_not_count(self) -> None:
        data = frame(TEXT, b"a", fin=False) + frame(PING, b"p") * 5 + frame(CONTINUATION, b"b")
        assert read([data], max_frames=2) == ([(PING, b"p")] * 5 + [(TEXT, b"ab")], None)

    def test_a_million_empty_fragments_cost_nothing_to_hold(self) -> None:
        # The flood that once grew a server by 57 MiB: ended at the limit, and the
        # message held so far is one bytearray, never one object per fragment.
        reader = FrameReader(NO_LIMIT, 1024)
        feed(reader, frame(BINARY, b"x", fin=False))
        fed = 1
        with pytest.raises(FrameError) as error:
            for _ in range(2000):
                feed(reader, frame(CONTINUATION, b"y", fin=False))
                fed += 1
        assert (error.value.code, error.value.reason) == (1008, "message in more than 1024 frames")
        assert fed == 1024  # the 1025th frame failed
        assert type(reader._message) is bytearray
        assert len(reader._message) == 1024


class TestWsprotoInternals:
    """What FrameReader and the frame writers need of wsproto beyond its public API.

    A wsproto release that renames or reshapes any of these fails here, naming it, rather
    than somewhere downstream."""

    def test_the_frame_protocol_reads_through_a_replaceable_frame_decoder(self) -> None:
        proto = FrameProtocol(client=False, extensions=[])
        assert isinstance(proto._frame_decoder, FrameDecoder)
        marker = FrameDecoder(client=False, extensions=[])
        proto._frame_decoder = marker
        data = frame(BINARY, b"x")
        proto.receive_bytes(data)
        assert marker.buffer.buffer == data  # the bytes went to the decoder set after __init__
        assert [f.payload for f in proto.received_frames()] == [b"x"]

    def test_frame_protocol_init_sets_what_the_reader_sets(self) -> None:
        theirs = vars(FrameProtocol(client=False, extensions=[]))
        ours = vars(_ServerFrames(_LimitedDecoder(10, 10, None)))
        assert sorted(ours) == sorted(theirs)
        for name, value in theirs.items():
            assert type(ours[name]) is type(value) or name == "_frame_decoder", name
        assert isinstance(ours["_frame_decoder"], FrameDecoder)

    def test_parse_header_sets_header_with_the_announced_length(self) -> None:
        decoder = FrameDecoder(client=False, extensions=[])
        decoder.receive_bytes(frame(BINARY, length=70000)[:10])  # no mask yet
        assert decoder.parse_header() is False
        assert decoder.header is None
        decoder.receive_bytes(b"\0\0\0\0")
        assert decoder.parse_header() is True
        header = decoder.header
        assert header is not None
        assert (header.opcode, header.fin, header.payload_len) == (Opcode.BINARY, True, 70000)

    def test_the_decoder_is_empty_between_frames(self) -> None:
        decoder = FrameDecoder(client=False, extensions=[])
        decoder.receive_bytes(frame(TEXT, b"abc"))
        got = decoder.process_buffer()
        assert got is not None
        assert (got.opcode, got.payload, got.frame_finished) == (Opcode.TEXT, b"abc", True)
        assert decoder.header is None
        assert len(decoder.buffer) == 0

    def test_the_message_decoder_knows_a_message_is_in_progress(self) -> None:
        proto = FrameProtocol(client=False, extensions=[])
        assert proto._message_decoder.opcode is None
        proto.receive_bytes(frame(TEXT, b"a", fin=False))
        list(proto.received_frames())
        assert proto._message_decoder.opcode is Opcode.TEXT
        proto.receive_bytes(frame(CONTINUATION, b"b"))
        list(proto.received_frames())
        assert proto._message_decoder.opcode is None

    def test_serialize_frame_writes_a_text_frame_from_bytes(self) -> None:
        proto = FrameProtocol(client=False, extensions=[])
        assert proto._serialize_frame(Opcode.TEXT, "é".encode()) == b"\x81\x02\xc3\xa9"
        assert proto._serialize_frame(Opcode.TEXT, "é".encode()) == proto.send_data("é")


def test_settings_used_here_keep_keepalive_on() -> None:
    assert SETTINGS.ping_interval > 0  # test_after_a_keepalive_round_trip relies on it
