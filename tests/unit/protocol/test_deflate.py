"""permessage-deflate, RFC 7692: negotiation, reading compressed messages, compressing once.

The client side is wsproto's own PerMessageDeflate wherever it can say what is tested;
frames a client library would not send are built with tests.support.rawws.
"""

from __future__ import annotations

import zlib

import pytest
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from ringcast.server.protocol import Publish, Refused, Session, SessionState
from ringcast.server.protocol.deflate import Agreement, Compressor, deflated_bound, negotiate
from ringcast.server.protocol.frames import data_frame
from ringcast.server.protocol.refusals import Refusal
from tests.support.rawws import RSV1, frame

from .harness import WsClient, settings, upgrade_request

BINARY, TEXT, CONTINUATION, PING = Opcode.BINARY, Opcode.TEXT, Opcode.CONTINUATION, Opcode.PING
BOTH_WAYS = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def deflated(payload: bytes, bits: int = 15) -> bytes:
    """``payload`` compressed as a client sends it (RFC 7692 section 7.2.1)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def inflated(payload: bytes, bits: int = 15) -> bytes:
    """What a client with no context between messages reads (section 7.2.2)."""
    return zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")


def payload_of(server_frame: bytes) -> bytes:
    """The payload of an unmasked frame (RFC 6455 section 5.2)."""
    short = server_frame[1] & 0x7F
    return server_frame[2 if short < 126 else 4 if short == 126 else 10:]


class TestRFC7692Section7_1_Negotiation:
    def test_an_offer_without_parameters_is_answered_with_no_context_takeover_both_ways(
        self,
    ) -> None:
        """Sections 7.1.1.1 and 7.1.1.2: the server may add both parameters unasked."""
        assert negotiate("permessage-deflate") == Agreement(15, BOTH_WAYS)

    def test_a_browsers_offer(self) -> None:
        assert negotiate("permessage-deflate; client_max_window_bits") == Agreement(15, BOTH_WAYS)

    @pytest.mark.parametrize("bits", range(9, 16))
    def test_section_7_1_2_1_server_max_window_bits_is_honoured_and_answered(
        self, bits: int
    ) -> None:
        agreement = negotiate(f"permessage-deflate; server_max_window_bits={bits}")
        assert agreement == Agreement(bits, f"{BOTH_WAYS}; server_max_window_bits={bits}")

    def test_a_window_of_8_is_declined_and_the_next_offer_taken(self) -> None:
        """zlib cannot compress raw deflate with a 256-byte window: decline that offer."""
        offers = ("permessage-deflate; server_max_window_bits=8, "
                  "permessage-deflate; server_no_context_takeover")
        assert negotiate(offers) == Agreement(15, BOTH_WAYS)
        assert negotiate("permessage-deflate; server_max_window_bits=8") is None

    @pytest.mark.parametrize("params", [
        "server_max_window_bits",  # a value is required
        "server_max_window_bits=16",
        "server_max_window_bits=09",  # no leading zero
        "client_max_window_bits=7",
        "client_max_window_bits=x",
        "server_no_context_takeover=1",  # takes no value
        "client_no_context_takeover; client_no_context_takeover",  # twice
        "mystery=1",  # unknown
        "a b",
    ])
    def test_section_7_1_an_offer_a_server_must_decline(self, params: str) -> None:
        assert negotiate(f"permessage-deflate; {params}") is None

    def test_a_quoted_value_is_read(self) -> None:
        """RFC 6455 section 9.1 allows a quoted-string value."""
        agreement = negotiate('permessage-deflate; server_max_window_bits="10"')
        assert agreement is not None
        assert agreement.window_bits == 10

    def test_other_extensions_are_passed_over(self) -> None:
        assert negotiate("x-webkit-deflate-frame, Permessage-Deflate") == Agreement(15, BOTH_WAYS)
        assert negotiate("x-webkit-deflate-frame") is None

    @pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "h11"])
    def test_the_101_names_the_agreement_and_a_real_client_takes_it(self, fast_path: bool) -> None:
        client = WsClient(settings(compression=True, fast_path=fast_path))
        ext = PerMessageDeflate()
        client.connect(extensions=[ext])
        assert client.session.state is SessionState.OPEN
        assert ext.enabled()
        assert ext.server_no_context_takeover and ext.client_no_context_takeover
        assert client.actions[1].window_bits == 15  # type: ignore[attr-defined]

    def test_both_paths_answer_byte_for_byte_alike(self) -> None:
        request = upgrade_request(
            Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
            Sec_WebSocket_Extensions="permessage-deflate; server_max_window_bits=12")
        fast = Session(settings(compression=True), 0.0).receive_data(request, 0.0)
        slow = Session(settings(compression=True, fast_path=False), 0.0).receive_data(request,
                                                                                      0.0)
        assert fast[0] == slow[0]
        answer = fast[0].data  # type: ignore[attr-defined]
        assert answer.startswith(b"HTTP/1.1 101 ")
        assert (b"\r\nSec-WebSocket-Extensions: " + BOTH_WAYS.encode()
                + b"; server_max_window_bits=12\r\n") in answer

    @pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "h11"])
    def test_compression_off_declines_by_naming_no_extension(self, fast_path: bool) -> None:
        client = WsClient(settings(compression=False, fast_path=fast_path))
        ext = PerMessageDeflate()
        client.connect(extensions=[ext])
        assert client.session.state is SessionState.OPEN
        assert not ext.enabled()
        assert client.actions[1].window_bits == 0  # type: ignore[attr-defined]


def open_deflate(max_size: int = 4096) -> WsClient:
    client = WsClient(settings(compression=True, max_message_size=max_size))
    client.connect(extensions=[PerMessageDeflate()])
    client.actions.clear()
    return client


class TestRFC7692Section7_2_2_Decompression:
    def test_a_real_clients_compressed_messages_are_published_inflated(self) -> None:
        client = open_deflate()
        text = "price " * 200
        assert client.send(TextMessage(text)) == [Publish("news", text.encode(), True)]
        blob = bytes(range(256)) * 4
        assert client.send(BytesMessage(blob)) == [Publish("news", blob, False)]

    def test_a_message_may_go_uncompressed(self) -> None:
        """Section 6: RSV1 clear, the payload is taken as it is."""
        client = open_deflate()
        assert client.feed(frame(BINARY, b"plain")) == [Publish("news", b"plain", False)]

    def test_a_fragmented_message_with_a_ping_between_its_frames(self) -> None:
        """RSV1 is on the first frame only (section 6.1); a control frame in between does
        not end the message (wsproto's own extension forgets it there)."""
        client = open_deflate()
        data = deflated(b"hello, compressed world " * 20)
        half = len(data) // 2
        actions = client.feed(frame(TEXT, data[:half], fin=False, rsv=RSV1)
                              + frame(PING, b"p")
                              + frame(CONTINUATION, data[half:]))
        assert actions[-1] == Publish("news", b"hello, compressed world " * 20, True)

    def test_each_message_stands_alone(self) -> None:
        """client_no_context_takeover was agreed: a message compressed on its own reads."""
        client = open_deflate()
        for word in (b"first", b"second", b"third"):
            assert client.feed(frame(BINARY, deflated(word * 50), rsv=RSV1)) == [
                Publish("news", word * 50, False)]

    def test_a_deflate_bomb_ends_with_1009_once_the_limit_is_passed(self) -> None:
        client = open_deflate(max_size=4096)
        bomb = deflated(b"\0" * 1_000_000)  # about 1 KB on the wire
        actions = client.feed(frame(BINARY, bomb, rsv=RSV1))
        assert Refused(Refusal.MESSAGE_TOO_BIG, 1009,
                       "message inflates past 4096 bytes, the most allowed") in actions
        assert client.session.state is SessionState.CLOSED

    def test_a_message_at_the_limit_inflates(self) -> None:
        client = open_deflate(max_size=4096)
        payload = b"a" * 4096
        assert client.feed(frame(BINARY, deflated(payload), rsv=RSV1)) == [
            Publish("news", payload, False)]

    def test_a_compressed_message_past_what_deflate_can_make_of_the_limit(self) -> None:
        """Decided on the frame header, before any payload is read."""
        client = open_deflate(max_size=4096)
        bound = deflated_bound(4096)
        actions = client.feed(frame(BINARY, b"", rsv=RSV1, length=bound + 1)[:8])
        assert Refused(Refusal.MESSAGE_TOO_BIG, 1009,
                       f"compressed message is at least {bound + 1} bytes, at most {bound} "
                       "allowed") in actions

    def test_data_that_does_not_inflate_closes_with_1007(self) -> None:
        client = open_deflate()
        actions = client.feed(frame(BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1))
        (refused,) = [a for a in actions if isinstance(a, Refused)]
        assert (refused.reason, refused.code) == (Refusal.INVALID_COMPRESSION, 1007)

    def test_text_that_inflates_to_invalid_utf8_closes_with_1007(self) -> None:
        client = open_deflate()
        actions = client.feed(frame(TEXT, deflated(b"ok \xc3\x28 not utf-8"), rsv=RSV1))
        (refused,) = [a for a in actions if isinstance(a, Refused)]
        assert (refused.reason, refused.code) == (Refusal.INVALID_UTF8, 1007)

    @pytest.mark.parametrize("frames", [
        frame(PING, b"x", rsv=RSV1),
        frame(BINARY, b"a", fin=False) + frame(CONTINUATION, deflated(b"b"), rsv=RSV1),
    ], ids=["control frame", "continuation frame"])
    def test_section_6_1_rsv1_only_on_a_messages_first_frame(self, frames: bytes) -> None:
        client = open_deflate()
        (refused,) = [a for a in client.feed(frames) if isinstance(a, Refused)]
        assert (refused.reason, refused.code) == (Refusal.PROTOCOL_ERROR, 1002)

    def test_rsv1_without_the_agreement_is_a_protocol_error(self) -> None:
        client = WsClient(settings(compression=False))
        client.connect()
        (refused,) = [a for a in client.feed(frame(BINARY, deflated(b"x"), rsv=RSV1))
                      if isinstance(a, Refused)]
        assert (refused.reason, refused.code) == (Refusal.PROTOCOL_ERROR, 1002)

    def test_no_inflater_outlives_its_message(self) -> None:
        client = open_deflate()
        client.feed(frame(BINARY, deflated(b"x" * 300), rsv=RSV1))
        phase = client.session._phase
        assert phase is not None
        assert not phase.mid_message  # no reader, so no inflate state, between messages


def server_reader(agreement: str) -> FrameProtocol:
    """A client's frame reader that agreed on ``agreement`` (wsproto's extension)."""
    ext = PerMessageDeflate()
    ext.finalize(agreement)
    return FrameProtocol(client=True, extensions=[ext])


class TestRFC7692Section7_2_1_Compression:
    def test_a_compressed_frame_reads_in_a_real_client_message_after_message(self) -> None:
        compressor = Compressor(6, 0)
        reader = server_reader(BOTH_WAYS)
        sent = [b"{\"price\": %d, \"symbol\": \"ABC\"} " % i * 10 for i in range(5)]
        for payload in sent:
            reader.receive_bytes(compressor.frame(data_frame(payload, True), 15))
        got = [f.payload for f in reader.received_frames()]
        assert got == [p.decode() for p in sent]
        assert compressor.compressed == 5
        assert compressor.bytes_out < compressor.bytes_in

    def test_rsv1_set_and_the_opcode_kept(self) -> None:
        out = Compressor(6, 0).frame(data_frame(b"z" * 500, False), 15)
        assert out[0] == 0x80 | 0x40 | Opcode.BINARY
        assert inflated(payload_of(out)) == b"z" * 500

    @pytest.mark.parametrize("bits", [9, 12])
    def test_a_smaller_window_reads_with_that_window(self, bits: int) -> None:
        compressor = Compressor(6, 0)
        payload = bytes(range(256)) * 40  # repeats 256 bytes apart: within every window
        out = compressor.frame(data_frame(payload, False), bits)
        reader = server_reader(f"{BOTH_WAYS}; server_max_window_bits={bits}")
        reader.receive_bytes(out)
        assert [f.payload for f in reader.received_frames()] == [payload]

    def test_under_the_threshold_or_not_smaller_the_frame_is_sent_as_it_is(self) -> None:
        compressor = Compressor(6, 128)
        short = data_frame(b"a" * 127, True)
        assert compressor.frame(short, 15) is short
        noise = data_frame(bytes(range(256)) * 2 + b"\x01\x02", False)  # does not shrink
        random_like = zlib.compress(noise)  # compressed data does not compress again
        frame_ = data_frame(random_like, False)
        assert compressor.frame(frame_, 15) == frame_
        assert compressor.compressed == 0

    def test_a_new_level_takes_effect(self) -> None:
        compressor = Compressor(1, 0)
        payload = b"abcdefgh" * 100 + bytes(range(200))
        fast = compressor.frame(data_frame(payload, False), 15)
        compressor.configure(9, 0)
        assert compressor.level == 9
        assert inflated(payload_of(compressor.frame(data_frame(payload, False), 15))) == payload
        assert inflated(payload_of(fast)) == payload
