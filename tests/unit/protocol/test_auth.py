"""Tokens: where they come from (RFC 6750 section 2, RFC 6455 section 4.2.2), how they
are refused (RFC 6750 section 3), JWTs (RFC 7519 / RFC 8725), and what they allow."""

from __future__ import annotations

import base64
import hmac

import pytest
from wsproto.events import AcceptConnection, BytesMessage, Ping, Pong, TextMessage
from wsproto.events import CloseConnection as WsClose

from ringcast.server.protocol import (
    Action,
    CloseConnection,
    HttpPublish,
    ProtocolSettings,
    Publish,
    Refusal,
    Refused,
    SendBytes,
    Session,
    SessionState,
    Subscribe,
)
from ringcast.server.protocol.auth import ChannelPatterns

from .harness import (
    SETTINGS,
    HttpResponse,
    WsClient,
    http_request,
    parse_response,
    refusals,
    settings,
    upgrade_request,
)
from .tokens import (
    NOW,
    PUBLISHER,
    SECRET,
    SUBSCRIBER,
    auth_settings,
    claims,
    forged,
    hs256,
    key_for,
    public_pem,
    rsa_key,
    signed,
)

AUTH = auth_settings()
REALM = b'Bearer realm="ringcast"'


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handshake(
    protocol_settings: ProtocolSettings,
    target: str = "/news",
    *,
    now: float = 0.0,
    unix_offset: float | None = NOW,
    **headers: str | None,
) -> tuple[Session, list[Action]]:
    """A hand-made opening handshake (headers named with underscores)."""
    session = Session(protocol_settings, now, unix_offset=unix_offset)
    return session, session.receive_data(upgrade_request(target, **headers), now)


def assert_accepted(actions: list[Action], channel: str = "news") -> bytes:
    """The handshake succeeded; gives the 101 response."""
    assert [type(a) for a in actions] == [SendBytes, Subscribe], actions
    assert actions[1] == Subscribe(channel)
    response = actions[0]
    assert isinstance(response, SendBytes)
    assert response.data.startswith(b"HTTP/1.1 101 ")
    return response.data


def assert_refused(actions: list[Action], status: int, reason: Refusal) -> HttpResponse:
    """Refused with ``status``: a Refused, the response, the close."""
    assert [type(a) for a in actions] == [Refused, SendBytes, CloseConnection], actions
    refusal, answer = actions[0], actions[1]
    assert isinstance(refusal, Refused)
    assert isinstance(answer, SendBytes)
    response = parse_response(answer.data)
    assert (response.status, refusal.code, refusal.reason) == (status, status, reason)
    assert refusal.detail == response.text
    assert response.headers[b"connection"] == b"close"
    return response


def publish(
    protocol_settings: ProtocolSettings,
    target: str = "/publish/chat.1",
    headers: list[tuple[str, str]] | None = None,
    *,
    unix_offset: float | None = NOW,
) -> list[Action]:
    session = Session(protocol_settings, 0.0, unix_offset=unix_offset)
    data = http_request("POST", target, [("Content-Type", "text/plain"), *(headers or [])], b"m")
    return session.receive_data(data, 0.0)


# ---------------------------------------------------------------------------------------------
# Where the token comes from
# ---------------------------------------------------------------------------------------------


class TestRFC6750Section2_1_AuthorizationRequestHeaderField:
    def test_static_publish_token(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"Bearer {PUBLISHER}")[1])

    def test_static_subscribe_token(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"Bearer {SUBSCRIBER}")[1])

    def test_jwt(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"Bearer {hs256()}")[1])

    def test_scheme_is_case_insensitive_and_spaces_are_trimmed(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"bEaReR   {PUBLISHER}  ")[1])

    def test_another_scheme_is_not_a_bearer_token(self) -> None:
        response = assert_refused(
            handshake(AUTH, Authorization="Basic dXNlcjpwYXNz")[1], 401, Refusal.MISSING_TOKEN
        )
        assert response.headers[b"www-authenticate"] == REALM

    def test_two_authorization_headers_are_a_bad_request(self) -> None:
        session = Session(AUTH, 0.0, unix_offset=NOW)
        data = upgrade_request().replace(
            b"\r\n\r\n",
            f"\r\nAuthorization: Bearer {PUBLISHER}\r\nAuthorization: Bearer x\r\n\r\n".encode(),
        )
        response = assert_refused(session.receive_data(data, 0.0), 400, Refusal.BAD_CREDENTIALS)
        assert response.headers[b"www-authenticate"] == REALM + b', error="invalid_request"'

    def test_http_publish(self) -> None:
        actions = publish(AUTH, headers=[("Authorization", f"Bearer {PUBLISHER}")])
        assert actions == [HttpPublish("chat.1", b"m", True)]


class TestRFC6750Section2_3_URIQueryParameter:
    def test_jwt_in_the_query(self) -> None:
        assert_accepted(handshake(AUTH, f"/news?token={hs256()}")[1])

    def test_percent_encoded_static_token(self) -> None:
        settings_ = auth_settings(publish_tokens=("a+b/c=d~e.f_g-h0123",))
        assert_accepted(handshake(settings_, "/news?x=1&token=a%2Bb%2Fc%3Dd~e.f_g-h0123")[1])

    def test_other_parameters_are_ignored(self) -> None:
        assert_accepted(handshake(AUTH, f"/news?since=4&token={PUBLISHER}&x")[1])

    def test_two_token_parameters_are_a_bad_request(self) -> None:
        target = f"/news?token={PUBLISHER}&token={SUBSCRIBER}"
        assert_refused(handshake(AUTH, target)[1], 400, Refusal.BAD_CREDENTIALS)

    def test_empty_token_is_invalid(self) -> None:
        assert_refused(handshake(AUTH, "/news?token=")[1], 401, Refusal.INVALID_TOKEN)

    def test_http_publish(self) -> None:
        actions = publish(AUTH, f"/publish/chat.1?token={hs256()}")
        assert actions == [HttpPublish("chat.1", b"m", True)]


class TestRFC6455Section4_2_2_SubprotocolCarriesTheToken:
    """Browsers can set no header but Sec-WebSocket-Protocol."""

    def test_bearer_subprotocol_with_ringcast_selects_ringcast(self) -> None:
        token = hs256()
        client = WsClient(AUTH, unix_offset=NOW)
        actions = client.connect(subprotocols=["ringcast", f"ringcast.bearer.{token}"])
        response = assert_accepted(actions)
        assert b"sec-websocket-protocol: ringcast\r\n" in response.lower()
        assert token.encode() not in response  # never echoed
        (accept,) = client.take_events()
        assert isinstance(accept, AcceptConnection)
        assert accept.subprotocol == "ringcast"

    def test_the_order_of_the_offer_does_not_matter(self) -> None:
        header = f"ringcast.bearer.{PUBLISHER}, ringcast"
        assert_accepted(handshake(AUTH, Sec_WebSocket_Protocol=header)[1])

    def test_bearer_subprotocol_without_ringcast_is_a_bad_request(self) -> None:
        _, actions = handshake(AUTH, Sec_WebSocket_Protocol=f"ringcast.bearer.{PUBLISHER}")
        response = assert_refused(actions, 400, Refusal.BAD_CREDENTIALS)
        assert "offer the subprotocol 'ringcast'" in response.text

    def test_even_when_tokens_are_off(self) -> None:
        _, actions = handshake(SETTINGS, Sec_WebSocket_Protocol="ringcast.bearer.x")
        assert_refused(actions, 400, Refusal.BAD_CREDENTIALS)

    def test_ringcast_alone_is_selected_without_auth(self) -> None:
        client = WsClient()
        assert_accepted(client.connect(subprotocols=["chat", "ringcast"]))
        (accept,) = client.take_events()
        assert isinstance(accept, AcceptConnection)
        assert accept.subprotocol == "ringcast"

    def test_other_subprotocols_are_never_selected(self) -> None:
        response = assert_accepted(WsClient().connect(subprotocols=["chat", "mqtt"]))
        assert b"sec-websocket-protocol" not in response.lower()

    def test_two_bearer_subprotocols_are_a_bad_request(self) -> None:
        header = f"ringcast, ringcast.bearer.{PUBLISHER}, ringcast.bearer.{SUBSCRIBER}"
        _, actions = handshake(AUTH, Sec_WebSocket_Protocol=header)
        assert_refused(actions, 400, Refusal.BAD_CREDENTIALS)


class TestRFC6750Section2_OneMethodPerRequest:
    @pytest.mark.parametrize(
        ("target", "headers"),
        [
            (f"/news?token={PUBLISHER}", {"Authorization": f"Bearer {PUBLISHER}"}),
            (
                "/news",
                {
                    "Authorization": f"Bearer {PUBLISHER}",
                    "Sec_WebSocket_Protocol": f"ringcast, ringcast.bearer.{PUBLISHER}",
                },
            ),
            (
                f"/news?token={PUBLISHER}",
                {"Sec_WebSocket_Protocol": f"ringcast, ringcast.bearer.{PUBLISHER}"},
            ),
        ],
    )
    def test_two_places_are_a_bad_request(self, target: str, headers: dict[str, str]) -> None:
        response = assert_refused(
            handshake(AUTH, target, **headers)[1], 400, Refusal.BAD_CREDENTIALS
        )
        assert "more than one token" in response.text

    def test_tokens_are_not_read_when_no_source_is_configured(self) -> None:
        target = "/news?token=a&token=b"
        assert_accepted(handshake(SETTINGS, target, Authorization="Bearer whatever")[1])


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


class TestRFC6750Section3_1_ErrorCodes:
    def test_missing_token_is_401_with_the_bare_challenge(self) -> None:
        response = assert_refused(handshake(AUTH)[1], 401, Refusal.MISSING_TOKEN)
        assert response.headers[b"www-authenticate"] == REALM
        assert response.text == "subscribing needs a token"

    @pytest.mark.parametrize(
        "token",
        [
            "not-a-known-token-0000",
            PUBLISHER[:-1],  # a prefix of a real one
            PUBLISHER + "x",
            "a.b.c",
            hs256().replace(".", ".x", 1),
        ],
    )
    def test_invalid_token_is_401_invalid_token(self, token: str) -> None:
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        response = assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        assert response.headers[b"www-authenticate"] == REALM + b', error="invalid_token"'

    def test_invalid_token_is_refused_even_when_not_required(self) -> None:
        _, actions = handshake(
            auth_settings(require_subscribe_auth=False), Authorization="Bearer wrong"
        )
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_expired_token_is_401_invalid_token(self) -> None:
        _, actions = handshake(AUTH, Authorization=f"Bearer {hs256(exp=NOW - 1)}")
        response = assert_refused(actions, 401, Refusal.EXPIRED_TOKEN)
        assert response.headers[b"www-authenticate"] == REALM + b', error="invalid_token"'
        assert response.text == "token expired"

    def test_token_without_the_channel_is_403_insufficient_scope(self) -> None:
        _, actions = handshake(AUTH, "/sports", Authorization=f"Bearer {hs256()}")
        response = assert_refused(actions, 403, Refusal.CHANNEL_FORBIDDEN)
        assert response.headers[b"www-authenticate"] == REALM + b', error="insufficient_scope"'
        assert response.text == "the token may not subscribe to sports"

    def test_the_handshake_is_validated_before_the_token(self) -> None:
        _, actions = handshake(AUTH, Sec_WebSocket_Key=None)  # and no token
        assert_refused(actions, 400, Refusal.BAD_HANDSHAKE)

    def test_no_token_needed_when_not_required(self) -> None:
        assert_accepted(handshake(auth_settings(require_subscribe_auth=False))[1])


# ---------------------------------------------------------------------------------------------
# JWTs
# ---------------------------------------------------------------------------------------------


class TestRFC7519JsonWebTokens:
    def test_hs256_with_the_wrong_secret(self) -> None:
        token = signed("HS256", "another-secret-that-is-32-bytes-long!!")
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        response = assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        assert response.text == "invalid token: Signature verification failed"

    @pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
    def test_public_key_algorithms(self, algorithm: str) -> None:
        key = key_for(algorithm)
        protocol_settings = auth_settings(
            jwt_secret="", jwt_public_key=public_pem(key), jwt_algorithms=(algorithm,)
        )
        token = signed(algorithm, key)
        assert_accepted(handshake(protocol_settings, Authorization=f"Bearer {token}")[1])
        other = signed(algorithm, key_for(algorithm, which=1))  # signed by someone else
        _, actions = handshake(protocol_settings, Authorization=f"Bearer {other}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_alg_none_is_never_accepted(self) -> None:
        token = forged({"alg": "none", "typ": "JWT"}, claims(), None)
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        response = assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        assert response.text == "token algorithm 'none' is not accepted"

    def test_hs256_token_against_an_rs256_only_configuration(self) -> None:
        protocol_settings = auth_settings(
            jwt_secret="", jwt_public_key=public_pem(rsa_key()), jwt_algorithms=("RS256",)
        )
        _, actions = handshake(protocol_settings, Authorization=f"Bearer {hs256()}")
        response = assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        assert response.text == "token algorithm 'HS256' is not accepted"

    def test_public_key_used_as_an_hmac_secret_does_not_verify(self) -> None:
        # RFC 8725 section 2.1, algorithm confusion: both families configured, the token
        # says HS256 and is signed with the (public) RSA key as the HMAC secret.
        pem = public_pem(rsa_key())
        protocol_settings = auth_settings(jwt_public_key=pem, jwt_algorithms=("HS256", "RS256"))
        token = forged({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
        _, actions = handshake(protocol_settings, Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        # while a real token of either kind passes
        assert_accepted(handshake(protocol_settings, Authorization=f"Bearer {hs256()}")[1])
        rs = signed("RS256", rsa_key())
        assert_accepted(handshake(protocol_settings, Authorization=f"Bearer {rs}")[1])

    @pytest.mark.parametrize("part", ["header", "payload"])
    def test_deeply_nested_json_is_an_invalid_token(self, part: str) -> None:
        nested = "[" * 5000 + "]" * 5000
        header = _b64url(nested if part == "header" else '{"alg": "HS256"}')
        payload = _b64url(nested if part == "payload" else "{}")
        signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), "sha256")
        token = f"{header}.{payload}.{_b64url(signature.digest())}"
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_an_algorithm_not_listed_is_refused(self) -> None:
        token = signed("HS384", SECRET + "-and-more-for-384-bits")
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)


class TestRFC7519Section4_1_4_ExpirationTime:
    def test_exp_is_required(self) -> None:
        _, actions = handshake(AUTH, Authorization=f"Bearer {hs256(exp=None)}")
        response = assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        assert "exp" in response.text

    def test_exp_must_be_a_number(self) -> None:
        token = forged({"alg": "HS256"}, claims(exp="tomorrow"), SECRET.encode())
        assert_refused(
            handshake(AUTH, Authorization=f"Bearer {token}")[1], 401, Refusal.INVALID_TOKEN
        )

    def test_expiry_uses_the_session_clock(self) -> None:
        token = hs256(exp=NOW + 100)
        assert_accepted(handshake(AUTH, now=99.9, Authorization=f"Bearer {token}")[1])
        _, actions = handshake(AUTH, now=100.0, Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.EXPIRED_TOKEN)

    def test_leeway(self) -> None:
        token = hs256(exp=NOW - 20)
        assert_accepted(
            handshake(auth_settings(jwt_leeway=30.0), Authorization=f"Bearer {token}")[1]
        )
        _, actions = handshake(auth_settings(jwt_leeway=10.0), Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.EXPIRED_TOKEN)

    def test_without_a_wall_clock_every_jwt_is_refused(self) -> None:
        # A runtime that did not pass unix_offset: expiry cannot be checked.
        _, actions = handshake(AUTH, unix_offset=None, Authorization=f"Bearer {hs256()}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)
        # static tokens need no clock
        _, actions = handshake(AUTH, unix_offset=None, Authorization=f"Bearer {PUBLISHER}")
        assert_accepted(actions)


class TestRFC7519Section4_1_5_NotBefore:
    def test_not_yet_valid(self) -> None:
        _, actions = handshake(AUTH, Authorization=f"Bearer {hs256(nbf=NOW + 60)}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_valid_from_nbf(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"Bearer {hs256(nbf=NOW)}")[1])

    def test_leeway_applies(self) -> None:
        protocol_settings = auth_settings(jwt_leeway=120.0)
        assert_accepted(
            handshake(protocol_settings, Authorization=f"Bearer {hs256(nbf=NOW + 60)}")[1]
        )


class TestRFC7519Section4_1_3_Audience:
    SETTINGS = auth_settings(jwt_audience="ringcast-prod")

    @pytest.mark.parametrize("aud", ["ringcast-prod", ["other", "ringcast-prod"]])
    def test_right_audience(self, aud: object) -> None:
        assert_accepted(handshake(self.SETTINGS, Authorization=f"Bearer {hs256(aud=aud)}")[1])

    @pytest.mark.parametrize("aud", ["ringcast-dev", ["other"], None])
    def test_wrong_or_missing_audience(self, aud: object) -> None:
        _, actions = handshake(self.SETTINGS, Authorization=f"Bearer {hs256(aud=aud)}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_not_checked_when_not_configured(self) -> None:
        assert_accepted(handshake(AUTH, Authorization=f"Bearer {hs256(aud='anything')}")[1])


class TestRFC7519Section4_1_1_Issuer:
    SETTINGS = auth_settings(jwt_issuer="https://auth.example.com")

    def test_right_issuer(self) -> None:
        token = hs256(iss="https://auth.example.com")
        assert_accepted(handshake(self.SETTINGS, Authorization=f"Bearer {token}")[1])

    @pytest.mark.parametrize("iss", ["https://evil.example.com", None])
    def test_wrong_or_missing_issuer(self, iss: str | None) -> None:
        _, actions = handshake(self.SETTINGS, Authorization=f"Bearer {hs256(iss=iss)}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)


class TestChannelClaims:
    @pytest.mark.parametrize("channel", ["news", "chat.1", "chat.a.b", "chat."])
    def test_subscribe_claim_patterns(self, channel: str) -> None:
        _, actions = handshake(AUTH, f"/{channel}", Authorization=f"Bearer {hs256()}")
        assert_accepted(actions, channel)

    @pytest.mark.parametrize("channel", ["chat", "chatx.1", "xchat.1", "News", "news2"])
    def test_channels_outside_the_patterns(self, channel: str) -> None:
        _, actions = handshake(AUTH, f"/{channel}", Authorization=f"Bearer {hs256()}")
        assert_refused(actions, 403, Refusal.CHANNEL_FORBIDDEN)

    def test_a_channel_one_may_publish_on_one_may_subscribe_to(self) -> None:
        token = hs256(subscribe=None, publish=["room:*"])
        assert_accepted(handshake(AUTH, "/room:7", Authorization=f"Bearer {token}")[1], "room:7")

    def test_a_single_string_is_one_pattern(self) -> None:
        token = hs256(subscribe="room:?")
        assert_accepted(handshake(AUTH, "/room:7", Authorization=f"Bearer {token}")[1], "room:7")

    @pytest.mark.parametrize("value", [5, [1, 2], {"a": 1}, [None]])
    def test_malformed_claims_are_an_invalid_token(self, value: object) -> None:
        token = hs256(subscribe=value)
        _, actions = handshake(AUTH, Authorization=f"Bearer {token}")
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_no_claims_allow_nothing(self) -> None:
        token = hs256(subscribe=None, publish=None)
        assert_refused(
            handshake(AUTH, Authorization=f"Bearer {token}")[1], 403, Refusal.CHANNEL_FORBIDDEN
        )


class TestChannelPatterns:
    @pytest.mark.parametrize(
        ("pattern", "yes", "no"),
        [
            ("news", ["news"], ["new", "news1", "News"]),
            ("chat.*", ["chat.", "chat.1", "chat.a.b", "chat.:@"], ["chat", "xchat.1"]),
            ("*", ["a", "room:1", "x" * 300], []),
            ("room:?", ["room:1", "room:a"], ["room:", "room:12"]),
            ("user:[0-9]*", ["user:1", "user:42x"], ["user:a", "user:"]),
            ("eu-[!x]", ["eu-1"], ["eu-x", "eu-12"]),
            ("*@eu-1", ["room.7@eu-1", "@eu-1"], ["room.7@eu-2"]),
        ],
    )
    def test_glob_semantics(self, pattern: str, yes: list[str], no: list[str]) -> None:
        patterns = ChannelPatterns([pattern])
        for channel in yes:
            assert channel in patterns, channel
        for channel in no:
            assert channel not in patterns, channel

    def test_several_patterns(self) -> None:
        patterns = ChannelPatterns(["news", "chat.*", "room:?"])
        assert all(c in patterns for c in ["news", "chat.9", "room:1"])
        assert "sports" not in patterns

    def test_empty_allows_nothing(self) -> None:
        assert "news" not in ChannelPatterns([])


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def open_with(protocol_settings: ProtocolSettings, target: str, token: str | None) -> WsClient:
    client = WsClient(protocol_settings, unix_offset=NOW)
    headers = [] if token is None else [("Authorization", f"Bearer {token}")]
    assert_accepted(client.connect(target, extra_headers=headers), target[1:])
    client.actions.clear()
    client.events.clear()
    return client


def assert_policy_close(
    client: WsClient, actions: list[Action], reason: Refusal, text: str
) -> None:
    assert refusals(actions) == [Refused(reason, 1008, text)]
    assert isinstance(actions[-1], CloseConnection)
    assert client.session.state is SessionState.CLOSED
    (close,) = [e for e in client.events if isinstance(e, WsClose)]
    assert (close.code, close.reason) == (1008, text)


class TestWebSocketPublishing:
    def test_a_token_allowing_the_channel_publishes(self) -> None:
        client = open_with(AUTH, "/chat.1", hs256())
        assert client.send(TextMessage("hi")) == [Publish("chat.1", b"hi", True)]

    def test_a_publish_token_publishes_anywhere(self) -> None:
        client = open_with(AUTH, "/anything", PUBLISHER)
        assert client.send(BytesMessage(b"x")) == [Publish("anything", b"x", False)]

    def test_a_token_not_allowing_the_channel_closes_with_1008(self) -> None:
        client = open_with(AUTH, "/news", hs256())  # may subscribe, not publish
        actions = client.send(TextMessage("hi"))
        assert_policy_close(
            client, actions, Refusal.PUBLISH_FORBIDDEN, "not allowed to publish on news"
        )

    def test_a_subscribe_token_may_not_publish(self) -> None:
        client = open_with(AUTH, "/news", SUBSCRIBER)
        actions = client.send(TextMessage("hi"))
        assert_policy_close(
            client, actions, Refusal.PUBLISH_FORBIDDEN, "not allowed to publish on news"
        )

    def test_anonymous_clients_may_not_publish_when_required(self) -> None:
        client = open_with(auth_settings(require_subscribe_auth=False), "/news", None)
        actions = client.send(TextMessage("hi"))
        assert_policy_close(
            client, actions, Refusal.PUBLISH_FORBIDDEN, "not allowed to publish on news"
        )

    def test_decided_at_the_first_fragment(self) -> None:
        client = open_with(AUTH, "/news", SUBSCRIBER)
        actions = client.send(TextMessage("h", message_finished=False))
        assert refusals(actions)[0].reason is Refusal.PUBLISH_FORBIDDEN

    def test_anyone_publishes_when_not_required(self) -> None:
        protocol_settings = auth_settings(require_publish_auth=False)
        client = open_with(protocol_settings, "/news", SUBSCRIBER)
        assert client.send(TextMessage("hi")) == [Publish("news", b"hi", True)]

    def test_publishing_disabled_comes_first(self) -> None:
        client = open_with(auth_settings(client_publish=False), "/chat.1", hs256())
        actions = client.send(TextMessage("hi"))
        assert_policy_close(
            client, actions, Refusal.PUBLISH_DISABLED, "publishing is disabled on this server"
        )


class TestTokenExpiryOnAnOpenWebSocket:
    def test_publishing_stops_at_expiry(self) -> None:
        client = open_with(AUTH, "/chat.1", hs256(exp=NOW + 10))
        assert client.send(TextMessage("a"), now=9.9) == [Publish("chat.1", b"a", True)]
        actions = client.send(TextMessage("b"), now=10.0)
        assert_policy_close(client, actions, Refusal.EXPIRED_TOKEN, "token expired")

    def test_leeway_extends_it(self) -> None:
        client = open_with(auth_settings(jwt_leeway=5.0), "/chat.1", hs256(exp=NOW + 10))
        assert client.send(TextMessage("a"), now=14.9) == [Publish("chat.1", b"a", True)]
        assert refusals(client.send(TextMessage("b"), now=15.0))[0].reason is Refusal.EXPIRED_TOKEN

    def test_a_subscriber_stays_connected_after_expiry(self) -> None:
        client = open_with(auth_settings(ping_interval=0.0), "/news", hs256(exp=NOW + 10))
        actions = client.send(Ping(b"x"), now=1000.0)
        assert [type(a) for a in actions] == [SendBytes]
        assert [type(e) for e in client.take_events()] == [Pong]
        assert client.session.state is SessionState.OPEN
        assert client.session.next_deadline() is None  # no expiry timer

    def test_publishing_without_the_need_for_a_token_does_not_expire(self) -> None:
        protocol_settings = auth_settings(require_publish_auth=False)
        client = open_with(protocol_settings, "/chat.1", hs256(exp=NOW + 10))
        assert client.send(TextMessage("a"), now=50.0) == [Publish("chat.1", b"a", True)]


class TestHttpPublishAuthorization:
    def test_needs_a_token_when_a_publish_token_is_configured(self) -> None:
        protocol_settings = settings(publish_tokens=(PUBLISHER,))  # require_* off
        session = Session(protocol_settings, 0.0)
        data = http_request("POST", "/publish/news", [], b"m")
        response = assert_refused(session.receive_data(data, 0.0), 401, Refusal.MISSING_TOKEN)
        assert response.headers[b"www-authenticate"] == REALM

    def test_needs_a_token_when_a_jwt_key_is_configured(self) -> None:
        assert_refused(publish(settings(jwt_secret=SECRET)), 401, Refusal.MISSING_TOKEN)

    def test_open_when_only_subscribe_tokens_are_configured(self) -> None:
        assert publish(settings(subscribe_tokens=(SUBSCRIBER,))) == [
            HttpPublish("chat.1", b"m", True)
        ]

    def test_but_a_token_given_must_be_valid(self) -> None:
        actions = publish(
            settings(subscribe_tokens=(SUBSCRIBER,)), headers=[("Authorization", "Bearer nope")]
        )
        assert_refused(actions, 401, Refusal.INVALID_TOKEN)

    def test_jwt_allowing_the_channel(self) -> None:
        actions = publish(AUTH, headers=[("Authorization", f"Bearer {hs256()}")])
        assert actions == [HttpPublish("chat.1", b"m", True)]

    def test_jwt_not_allowing_the_channel_is_403(self) -> None:
        actions = publish(AUTH, "/publish/news", [("Authorization", f"Bearer {hs256()}")])
        response = assert_refused(actions, 403, Refusal.PUBLISH_FORBIDDEN)
        assert response.text == "not allowed to publish on news"
        assert response.headers[b"www-authenticate"] == REALM + b', error="insufficient_scope"'

    def test_subscribe_token_is_403(self) -> None:
        actions = publish(AUTH, headers=[("Authorization", f"Bearer {SUBSCRIBER}")])
        assert_refused(actions, 403, Refusal.PUBLISH_FORBIDDEN)

    def test_expired_jwt_is_401(self) -> None:
        token = hs256(exp=NOW - 1)
        actions = publish(AUTH, headers=[("Authorization", f"Bearer {token}")])
        assert_refused(actions, 401, Refusal.EXPIRED_TOKEN)

    def test_the_legacy_publish_token_is_one_more_static_token(self) -> None:
        protocol_settings = settings(publish_token="legacy", require_publish_auth=True)
        actions = publish(protocol_settings, headers=[("Authorization", "Bearer legacy")])
        assert actions == [HttpPublish("chat.1", b"m", True)]
        client = open_with(protocol_settings, "/news", "legacy")
        assert client.send(TextMessage("x")) == [Publish("news", b"x", True)]

    def test_the_token_is_checked_before_the_channel_name(self) -> None:
        assert_refused(publish(AUTH, "/publish/bad%name"), 401, Refusal.MISSING_TOKEN)
        actions = publish(AUTH, "/publish/bad%name", [("Authorization", f"Bearer {PUBLISHER}")])
        assert_refused(actions, 400, Refusal.BAD_CHANNEL)

    def test_the_token_is_checked_before_the_body_is_read(self) -> None:
        session = Session(AUTH, 0.0, unix_offset=NOW)
        head = http_request("POST", "/publish/news", [("Content-Length", "100")])
        actions = session.receive_data(head, 0.0)  # the body never comes
        assert_refused(actions, 401, Refusal.MISSING_TOKEN)
