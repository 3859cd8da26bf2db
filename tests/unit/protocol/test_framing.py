"""Server frames (RFC 6455 section 5.2), written by wsproto's serialiser once per message,
read back by a wsproto client."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import FrameProtocol

from ringcast.server.protocol import CloseCode, close_frame, data_frame
from ringcast.server.protocol.frames import ping_frame, pong_frame

EDGE_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
sizes = st.one_of(st.sampled_from(EDGE_SIZES), st.integers(0, 70000))


def wsproto_server() -> FrameProtocol:
    return FrameProtocol(client=False, extensions=[])


def client_reads(data: bytes) -> list[object]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


class TestRFC6455Section5_2_BaseFramingProtocol:
    @given(size=sizes, byte=st.binary(min_size=1, max_size=1))
    @example(size=0, byte=b"x")
    @example(size=125, byte=b"x")
    @example(size=126, byte=b"x")
    @example(size=65535, byte=b"x")
    @example(size=65536, byte=b"x")
    def test_binary_frames_are_wsprotos(self, size: int, byte: bytes) -> None:
        payload = byte * size
        assert data_frame(payload, text=False) == bytes(wsproto_server().send_data(payload))

    @given(size=sizes)
    @example(size=0)
    @example(size=125)
    @example(size=126)
    @example(size=65535)
    @example(size=65536)
    def test_text_frames_are_wsprotos(self, size: int) -> None:
        text = "é" * (size // 2) + "a" * (size % 2)
        assert data_frame(text.encode(), text=True) == bytes(wsproto_server().send_data(text))

    @pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4),
                                                  (65536, 10)])
    def test_shortest_length_encoding(self, size: int, header: int) -> None:
        assert len(data_frame(b"x" * size, text=False)) == size + header

    @given(st.lists(st.binary(max_size=70000), max_size=3))
    def test_a_client_reads_back_the_messages(self, payloads: list[bytes]) -> None:
        data = b"".join(data_frame(p, text=False) for p in payloads)
        events = client_reads(data + data_frame("é".encode(), text=True))
        assert [bytes(e.data) for e in events[:-1] if isinstance(e, BytesMessage)] == payloads
        assert isinstance(events[-1], TextMessage)
        assert events[-1].data == "é"

    def test_frames_are_bytes(self) -> None:
        # Handed to the fan-out and to other workers as they are.
        for frame in (data_frame(b"x", text=True), ping_frame(b""), pong_frame(b""),
                      close_frame(1000)):
            assert type(frame) is bytes


class TestRFC6455Section5_5_ControlFrames:
    @given(st.binary(max_size=125))
    def test_ping_and_pong_are_wsprotos(self, payload: bytes) -> None:
        assert ping_frame(payload) == bytes(wsproto_server().ping(payload))
        assert pong_frame(payload) == bytes(wsproto_server().pong(payload))

    def test_a_client_reads_them(self) -> None:
        assert client_reads(ping_frame(b"hi") + pong_frame(b"yo")) == [
            Ping(payload=b"hi"),
            Pong(payload=b"yo"),
        ]

    def test_a_control_frame_payload_is_at_most_125_bytes(self) -> None:
        with pytest.raises(ValueError, match="payload too long for control frame"):
            ping_frame(b"x" * 126)


class TestRFC6455Section5_5_1_Close:
    @pytest.mark.parametrize("code", [1000, 1001, 1002, 1009, 1011, 3008, 4999])
    @pytest.mark.parametrize("reason", ["", "bye", "é" * 70, "x" * 200, "€" * 42])
    def test_close_frames_are_wsprotos(self, code: int, reason: str) -> None:
        assert close_frame(code, reason) == bytes(wsproto_server().close(code, reason))

    def test_the_reason_is_cut_to_whole_characters(self) -> None:
        (event,) = client_reads(close_frame(1000, "€" * 42))
        assert isinstance(event, CloseConnection)
        assert event.reason == "€" * 41  # 123 bytes hold 41 three-byte characters

    def test_no_status_sends_an_empty_close(self) -> None:
        assert close_frame(CloseCode.NO_STATUS) == b"\x88\x00"
