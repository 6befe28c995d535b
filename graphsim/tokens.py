"""Access tokens (HMAC-signed JWTs) and verification of certificate client assertions."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRAPH_AUDIENCE = "https://graph.microsoft.com"
_CLOCK_SKEW_S = 300.0


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError when it is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and payload must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


class TokenError(Exception):
    """A token that must be refused; the message says why (in Graph's words where known)."""


@dataclass(frozen=True)
class AppToken:
    """The validated claims of an app-only access token."""

    app_id: str
    tenant_id: str
    roles: frozenset[str]
    expires_at: float


class TokenIssuer:
    """Signs and validates the simulator's app-only access tokens (HS256, key per run)."""

    def __init__(self, tenant_id: str, key: bytes | None = None) -> None:
        self._tenant_id = tenant_id
        self._key = key or secrets.token_bytes(32)
        header = {"typ": "JWT", "alg": "HS256", "kid": "graphsim"}
        self._header = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        # Validated tokens by their text, so the hot path is one dict look-up.
        self._cache: dict[str, AppToken] = {}
        # The latest tokens handed out, so leak tests can search logs and stores for the exact strings.
        self.issued: deque[str] = deque(maxlen=1000)

    def issue(self, app_id: str, roles: frozenset[str], now: float, lifetime_s: float) -> str:
        """A signed token for `app_id` with `roles`, valid from `now` for `lifetime_s` seconds."""
        claims = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{self._tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": now + lifetime_s,
            "appid": app_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{app_id}")),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{app_id}")),
            "roles": sorted(roles),
            "tid": self._tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        signature = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        token = f"{signing_input}.{b64url_encode(signature)}"
        self.issued.append(token)
        return token

    def validate(self, token: str, now: float) -> AppToken:
        """The token's claims, or TokenError with Graph's message for an invalid or expired token."""
        cached = self._cache.get(token)
        if cached is None:
            cached = self._parse(token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = cached
        if now >= cached.expires_at:
            raise TokenError("Lifetime validation failed, the token is expired.")
        return cached

    def _parse(self, token: str) -> AppToken:
        if token.count(".") != 2:
            raise TokenError("IDX14100: JWT is not well formed, there are no dots (.).")
        try:
            header, claims, signing_input, signature = _split(token)
        except ValueError:
            raise TokenError("Invalid JWT token. The token is malformed.") from None
        expected = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if header.get("alg") != "HS256" or not hmac.compare_digest(expected, signature):
            raise TokenError("Invalid JWT token. Token signature could not be validated.")
        if claims.get("aud") != GRAPH_AUDIENCE:
            raise TokenError("Invalid audience.")
        if claims.get("tid") != self._tenant_id:
            raise TokenError("Invalid JWT token. The tenant is not valid.")
        return AppToken(str(claims["appid"]), str(claims["tid"]), frozenset(claims.get("roles", ())),
                        float(claims["exp"]))


class AssertionRefused(Exception):
    """A client assertion that the identity platform refuses: (AADSTS code, description)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def assertion_client_id(assertion: str) -> str | None:
    """The `iss` (= client id) of a client assertion, without verifying it."""
    try:
        _, claims, _, _ = _split(assertion)
    except ValueError:
        return None
    iss = claims.get("iss")
    return iss.lower() if isinstance(iss, str) else None


def verify_client_assertion(assertion: str, cert_pem: bytes, client_id: str, audiences: set[str],
                            now: float) -> None:
    """Check a client_assertion JWT against the registered certificate; AssertionRefused if refused."""
    try:
        header, claims, signing_input, signature = _split(assertion)
    except ValueError:
        raise AssertionRefused(50027, "JWT token is invalid or malformed.") from None
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    sha1 = hashlib.sha1(der).digest()
    sha256 = hashlib.sha256(der).digest()
    sent_thumbprint = header.get("x5t#S256") or header.get("x5t")
    if sent_thumbprint is not None:
        try:
            sent = b64url_decode(str(sent_thumbprint))
        except ValueError:
            sent = b""
        if sent not in (sha1, sha256):
            raise AssertionRefused(
                700027,
                "Client assertion failed signature validation. [Reason - The key was not found., "
                f"Thumbprint of key used by client: '{sent.hex().upper()}']",
            )
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise AssertionRefused(700027, "Client assertion failed signature validation.")
    alg = header.get("alg")
    try:
        if alg == "RS256":
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            public_key.verify(signature, signing_input,
                              padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size),
                              hashes.SHA256())
        else:
            raise AssertionRefused(700027, f"Client assertion uses an unsupported algorithm '{alg}'.")
    except InvalidSignature:
        raise AssertionRefused(
            700027, "Client assertion failed signature validation. [Reason - The provided signature value "
            "did not match the expected signature value.]"
        ) from None
    if claims.get("aud") not in audiences:
        raise AssertionRefused(700212,
                              f"No matching federated identity record found for presented assertion "
                              f"audience '{claims.get('aud')}'.")
    if str(claims.get("iss", "")).lower() != client_id or str(claims.get("sub", "")).lower() != client_id:
        raise AssertionRefused(700021, "Client assertion application identifier doesn't match "
                              "'client_id' parameter.")
    exp = claims.get("exp")
    nbf = claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, int | float) or exp + _CLOCK_SKEW_S < now:
        raise AssertionRefused(700024, "Client assertion is not within its valid time range.")
    if isinstance(nbf, int | float) and nbf - _CLOCK_SKEW_S > now:
        raise AssertionRefused(700024, "Client assertion is not within its valid time range.")
