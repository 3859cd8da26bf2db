"""Server frame encoding against wsproto's own server framing."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, TextMessage
from wsproto.frame_protocol import FrameProtocol

from ringcast.server.protocol import BINARY, TEXT, encode_frame, encode_frames, frame_header
from ringcast.server.protocol.framing import CLOSE, PING, PONG

EDGE_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
sizes = st.one_of(st.sampled_from(EDGE_SIZES), st.integers(0, 70000))


def wsproto_server() -> FrameProtocol:
    return FrameProtocol(client=False, extensions=[])


class TestRFC6455Section5_2_BaseFramingProtocol:
    @given(size=sizes, byte=st.binary(min_size=1, max_size=1))
    @example(size=0, byte=b"x")
    @example(size=125, byte=b"x")
    @example(size=126, byte=b"x")
    @example(size=65535, byte=b"x")
    @example(size=65536, byte=b"x")
    def test_binary_frames_equal_wsproto(self, size: int, byte: bytes) -> None:
        payload = byte * size
        assert encode_frame(BINARY, payload) == bytes(wsproto_server().send_data(payload))

    @given(size=sizes)
    @example(size=0)
    @example(size=125)
    @example(size=126)
    @example(size=65535)
    @example(size=65536)
    def test_text_frames_equal_wsproto(self, size: int) -> None:
        text = "é" * (size // 2) + "a" * (size % 2)
        expected = bytes(wsproto_server().send_data(text))
        assert encode_frame(TEXT, text.encode()) == expected

    @given(st.binary(max_size=125))
    def test_control_frames_equal_wsproto(self, payload: bytes) -> None:
        assert encode_frame(PING, payload) == bytes(wsproto_server().ping(payload))
        assert encode_frame(PONG, payload) == bytes(wsproto_server().pong(payload))

    def test_close_frame_equals_wsproto(self) -> None:
        assert encode_frame(CLOSE, b"\x03\xe9bye") == bytes(wsproto_server().close(1001, "bye"))

    @pytest.mark.parametrize(
        ("size", "header_size"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]
    )
    def test_shortest_length_encoding(self, size: int, header_size: int) -> None:
        assert len(frame_header(BINARY, size)) == header_size

    @given(st.lists(st.tuples(st.sampled_from([TEXT, BINARY]), st.binary(max_size=300))))
    def test_encode_frames_joins_encode_frame(self, frames: list[tuple[int, bytes]]) -> None:
        assert encode_frames(frames) == b"".join(encode_frame(op, p) for op, p in frames)

    def test_encode_frames_accepts_any_buffer(self) -> None:
        data = bytearray(b"abc")
        assert encode_frames([(BINARY, memoryview(data)), (BINARY, data)]) == 2 * b"\x82\x03abc"

    @given(st.lists(st.binary(max_size=70000), max_size=3))
    def test_a_client_reads_back_the_messages(self, payloads: list[bytes]) -> None:
        client = Connection(ConnectionType.CLIENT)
        client.receive_data(encode_frames([(BINARY, p) for p in payloads] + [(TEXT, b"\xc3\xa9")]))
        events = list(client.events())
        assert [bytes(e.data) for e in events[:-1] if isinstance(e, BytesMessage)] == payloads
        assert isinstance(events[-1], TextMessage)
        assert events[-1].data == "é"

    def test_ping_frame_is_understood(self) -> None:
        client = Connection(ConnectionType.CLIENT)
        client.receive_data(encode_frame(PING, b"hi"))
        assert list(client.events()) == [Ping(payload=b"hi")]


class TestRFC6455Section5_5_ControlFrames:
    def test_control_frame_payload_is_at_most_125_bytes(self) -> None:
        with pytest.raises(ValueError, match="control frame payload is 126 bytes, at most 125"):
            encode_frame(PING, b"x" * 126)

    @pytest.mark.parametrize("opcode", [-1, 16])
    def test_opcode_is_four_bits(self, opcode: int) -> None:
        with pytest.raises(ValueError, match="expected 0 to 15"):
            frame_header(opcode, 0)

    def test_negative_length(self) -> None:
        with pytest.raises(ValueError, match="at least 0"):
            frame_header(BINARY, -1)
