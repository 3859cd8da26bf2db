"""Keys and tokens for the auth tests, made here with cryptography and PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ringcast.server.protocol import ProtocolSettings

from .harness import settings

NOW = 1_700_000_000.0
"""Unix time at the session clock's 0: sessions get ``unix_offset=NOW``."""
SECRET = "an-hs256-secret-of-at-least-32-bytes!"
PUBLISHER = "publisher-token-0001"
SUBSCRIBER = "subscriber-token-001"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


# Keys are made once per test run; ``which`` tells several keys of one kind apart.


@cache
def rsa_key(bits: int = 2048, which: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(curve: str = "P-256", which: int = 0) -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
    return ec.generate_private_key(curves[curve])


@cache
def ed_key(which: int = 0) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def key_for(algorithm: str, which: int = 0) -> PrivateKey:
    """A private key that signs ``algorithm`` (not HS*)."""
    if algorithm.startswith(("RS", "PS")):
        return rsa_key(which=which)
    if algorithm == "ES384":
        return ec_key("P-384", which)
    if algorithm.startswith("ES"):
        return ec_key("P-256", which)
    return ed_key(which)


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid for an hour from NOW: subscribe news and chat.*, publish chat.*. A change to
    ``None`` removes the claim."""
    base: dict[str, Any] = {
        "sub": "alice",
        "exp": NOW + 3600,
        "subscribe": ["news", "chat.*"],
        "publish": ["chat.*"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def signed(algorithm: str, key: PrivateKey | str, **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A JWT built by hand: ``hmac_key=None`` gives an empty signature (``alg: none``)."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    if hmac_key is None:
        return head + "."
    signature = hmac.new(hmac_key, head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(signature)


def auth_settings(**changes: Any) -> ProtocolSettings:
    """Static tokens and HS256 JWTs; subscribing and publishing need a token."""
    base: dict[str, Any] = {
        "publish_tokens": (PUBLISHER,),
        "subscribe_tokens": (SUBSCRIBER,),
        "jwt_secret": SECRET,
        "require_subscribe_auth": True,
        "require_publish_auth": True,
    }
    base.update(changes)
    return settings(**base)
