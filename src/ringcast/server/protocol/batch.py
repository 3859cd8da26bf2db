"""``POST /publish``: many messages, on one or many channels, in one request.

A backend that publishes notifications to many small channels pays an HTTP request per
message with ``POST /publish/<channel>``; the batch form carries thousands in one
(Centrifugo's batch API offers the same). The body is JSON::

    {"messages": [
        {"channel": "news", "text": "hello"},
        {"channel": "prices", "binary": "AAECAw=="}
    ]}

Each message is ``text`` (a string: a text frame) or ``binary`` (base64: a binary frame).
They are published in order, each as if posted alone; the answer lists how many
subscribers of this worker each reached, in the same order::

    {"results": [{"channel": "news", "subscribers": 3}, {"channel": "prices", "subscribers": 0}]}

The whole batch is checked before anything is published, so a refused batch publishes
nothing: 400 with the first problem and where it is (``messages[2].channel: ...``), 403
when the token may not publish on one of the channels. The body is bounded by
``limits.max_http_body`` like any other.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from dataclasses import dataclass
from typing import Any

from ringcast.errors import ChannelNameError

from .auth import AuthError, Grant
from .channels import validate_channel
from .refusals import Refusal
from .settings import ProtocolSettings

__all__ = ["BatchError", "Message", "Result", "read_batch", "results_body"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch."""

    channel: str
    payload: bytes
    text: bool


class BatchError(Exception):
    """The batch is refused: answer ``status`` with ``str(error)`` and close."""

    def __init__(self, message: str, status: int = 400,
                 refusal: Refusal = Refusal.MALFORMED_REQUEST) -> None:
        super().__init__(message)
        self.status = status
        self.refusal = refusal


def read_batch(body: bytes, settings: ProtocolSettings, grant: Grant | None) -> list[Message]:
    """The messages of a batch body, checked (raises :exc:`BatchError` otherwise), for a
    client whose token gave ``grant``."""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
        raise BatchError('the body must be {"messages": [...]}')
    messages: list[Message] = []
    auth = settings.authenticator
    for index, item in enumerate(document["messages"]):
        where = f"messages[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("channel"), str):
            raise BatchError(f'{where} must be {{"channel": ..., "text" or "binary": ...}}')
        try:
            channel = validate_channel(item["channel"], settings.max_channel_name)
        except ChannelNameError as exc:
            raise BatchError(f"{where}.channel: {exc}") from None
        try:
            auth.check_http_publish(grant, channel)
        except AuthError as exc:
            raise BatchError(f"{where}: {exc}", exc.status, exc.refusal) from None
        text, binary = item.get("text"), item.get("binary")
        if isinstance(text, str) and binary is None:
            try:
                payload = text.encode()
            except UnicodeEncodeError:  # a lone surrogate JSON allowed in
                raise BatchError(f"{where}.text: not valid Unicode") from None
            messages.append(Message(channel, payload, True))
        elif isinstance(binary, str) and text is None:
            try:
                payload = b64decode(binary, validate=True)
            except binascii.Error:
                raise BatchError(f"{where}.binary: not base64") from None
            messages.append(Message(channel, payload, False))
        else:
            raise BatchError(f'{where} needs "text" (a string) or "binary" (base64), one of them')
    return messages


Result = tuple[int, tuple[str, int] | None] | None
"""What became of one message of a batch: the subscribers it reached and its position
(epoch, offset) when its channel keeps history; None when what orders its channel did
not answer (it may or may not have been published)."""


def results_body(messages: list[Message], results: list[Result]) -> bytes:
    """The answer's JSON: each message's channel and how many subscribers it reached,
    with its ``epoch`` and ``offset`` on a history channel, or ``"error":
    "unavailable"``."""
    out: list[dict[str, object]] = []
    for m, result in zip(messages, results, strict=True):
        if result is None:
            out.append({"channel": m.channel, "error": "unavailable"})
            continue
        reached, position = result
        entry: dict[str, object] = {"channel": m.channel, "subscribers": reached}
        if position is not None:
            entry["epoch"], entry["offset"] = position
        out.append(entry)
    return json.dumps({"results": out}, separators=(",", ":")).encode()
