"""Refusals are countable: a fixed set of reasons, and a canned answer for the runtime."""

from __future__ import annotations

import re

import pytest

from ringcast.server.protocol import Refusal, error_response

from .harness import parse_response


class TestRefusalReasons:
    def test_values_are_metric_label_values(self) -> None:
        values = [reason.value for reason in Refusal]
        assert len(values) == len(set(values))
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", v) for v in values)

    def test_a_reason_is_its_label(self) -> None:
        assert str(Refusal.RATE_LIMITED) == "rate_limited"
        assert f"{Refusal.ORIGIN_NOT_ALLOWED}" == "origin_not_allowed"

    def test_the_runtime_reasons_are_there(self) -> None:
        assert Refusal("too_many_connections") is Refusal.TOO_MANY_CONNECTIONS
        assert Refusal("too_many_connections_per_ip") is Refusal.TOO_MANY_CONNECTIONS_PER_IP


class TestErrorResponse:
    @pytest.mark.parametrize("status", [503, 429])
    def test_a_complete_closing_response(self, status: int) -> None:
        response = parse_response(error_response(status, "too many connections from 10.0.0.1"))
        assert response.status == status
        assert response.text == "too many connections from 10.0.0.1"
        assert response.headers[b"connection"] == b"close"
        assert response.headers[b"content-type"] == b"text/plain; charset=utf-8"

    def test_unknown_status_has_no_phrase(self) -> None:
        assert error_response(599, "").startswith(b"HTTP/1.1 599 \r\n")
