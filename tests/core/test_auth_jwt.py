from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from core import App, HttpClient, QueryCtx, Schema, UnauthenticatedError
from core.auth import JwtVerifier
from core.config import AuthSettings, ServerSettings
from core.errors import InvalidArgumentError
from core.server import BackgroundServer, create_asgi_app
from core.testing import TestApp

ISSUER = "https://issuer.test"
AUDIENCE = "capsule-tests"
SECRET = "an-hs256-secret-of-at-least-32-bytes!"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
    }


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "name": "Ada",
        "email": "ada@example.com",
        "role": "admin",
        **extra,
    }


def hs(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def rs(key: Any = RSA_KEY, kid: str = "rsa-1", **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm="RS256", headers={"kid": kid})


def es(**extra: Any) -> str:
    return jwt.encode(claims(**extra), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})


@pytest.fixture
def verifier() -> JwtVerifier:
    return JwtVerifier(issuer=ISSUER, audience=AUDIENCE, secret=SECRET, jwks=jwks())


@pytest.mark.parametrize("make", [hs, rs, es], ids=["HS256", "RS256", "ES256"])
def test_valid_tokens_become_identities(verifier: JwtVerifier, make: Any) -> None:
    ident = verifier.verify(make())
    assert (ident.subject, ident.issuer, ident.name, ident.email) == (
        "user-42",
        ISSUER,
        "Ada",
        "ada@example.com",
    )
    assert ident.claims["role"] == "admin"
    assert ident.token_identifier == f"{ISSUER}|user-42"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: hs(exp=int(time.time()) - 10), "expired"),
        (lambda: hs(iss="https://evil.test"), "not issued by"),
        (lambda: hs(aud="someone-else"), "refused"),
        (
            lambda: jwt.encode(claims(), "another-secret-of-at-least-32-bytes", algorithm="HS256"),
            "refused",
        ),
        (lambda: rs(key=OTHER_RSA), "refused"),
        (lambda: rs(kid="unknown"), "key id"),
        (lambda: hs()[:-4] + "AAAA", "refused"),
        (lambda: "not.a.jwt", "not a valid JWT"),
        (
            lambda: jwt.encode(
                {k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"
            ),
            "refused",
        ),
        (
            lambda: jwt.encode(claims(), None, algorithm="none"),  # type: ignore[arg-type]
            "not accepted",
        ),
    ],
    ids=[
        "expired",
        "wrong-issuer",
        "wrong-audience",
        "bad-hs-signature",
        "bad-rs-signature",
        "unknown-kid",
        "tampered",
        "garbage",
        "no-exp",
        "alg-none",
    ],
)
def test_bad_tokens_are_refused(verifier: JwtVerifier, token: Any, message: str) -> None:
    with pytest.raises(UnauthenticatedError, match=message):
        verifier.verify(token())


def test_rsa_public_key_cannot_be_used_as_an_hmac_secret() -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    only_keys = JwtVerifier(issuer=ISSUER, jwks=jwks())

    # PyJWT refuses to sign HS256 with a PEM key, so the forged token is built by hand.
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(UnauthenticatedError, match="not accepted"):
        only_keys.verify(f"{head}.{body}.{sig}")


def test_settings(tmp_path: Path) -> None:
    assert JwtVerifier.from_settings(AuthSettings()) is None
    with pytest.raises(InvalidArgumentError, match="CAPSULE_JWT_ISSUER"):
        JwtVerifier.from_settings(AuthSettings(secret=SECRET))
    with pytest.raises(InvalidArgumentError, match="cannot be read"):
        JwtVerifier.from_settings(AuthSettings(issuer=ISSUER, jwks_file=str(tmp_path / "no")))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks()))
    v = JwtVerifier.from_settings(AuthSettings(issuer=ISSUER, jwks_file=str(path)))
    assert v is not None and v.verify(es(aud="anything")).subject == "user-42"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSULE_JWT_ISSUER", ISSUER)
    monkeypatch.setenv("CAPSULE_JWT_SECRET", SECRET)
    monkeypatch.setenv("CAPSULE_JWT_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("CAPSULE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("CAPSULE_MAX_BODY_BYTES", "1234")
    s = ServerSettings.from_env()
    assert s.auth == AuthSettings(issuer=ISSUER, audience=AUDIENCE, secret=SECRET)
    assert s.cors_origins == ("http://a.example", "http://b.example")
    assert s.max_body_bytes == 1234


# -- over HTTP -----------------------------------------------------------------------------------

app = App(Schema())


@app.query
def whoami(ctx: QueryCtx) -> dict[str, Any] | None:
    ident = ctx.auth.get_user_identity()
    return None if ident is None else {"sub": ident.subject, "role": ident.claims.get("role")}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = ServerSettings(auth=AuthSettings(issuer=ISSUER, audience=AUDIENCE, secret=SECRET))
    with TestApp(app) as t:
        asgi = create_asgi_app(app, settings=settings, runtime=t.runtime)
        with BackgroundServer(asgi) as bg:
            yield bg.url


async def test_valid_token_yields_the_identity_in_a_query(url: str) -> None:
    async with HttpClient(url, token=hs()) as client:
        assert await client.query(whoami) == {"sub": "user-42", "role": "admin"}
    async with HttpClient(url) as client:
        assert await client.query(whoami) is None


@pytest.mark.parametrize(
    "token",
    [
        lambda: hs(exp=int(time.time()) - 1),
        lambda: jwt.encode(claims(), "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256"),
        lambda: hs(iss="https://elsewhere.test"),
    ],
    ids=["expired", "bad-signature", "wrong-issuer"],
)
async def test_bad_tokens_are_401(url: str, token: Any) -> None:
    async with HttpClient(url, token=token()) as client:
        with pytest.raises(UnauthenticatedError):
            await client.query(whoami)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{url}/api/query",
            json={"path": whoami.path},
            headers={"Authorization": f"Bearer {token()}"},
        )
    assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")


def test_tokens_refused_when_no_keys_are_configured() -> None:
    with TestApp(app) as t:
        asgi = create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)
        with BackgroundServer(asgi) as bg:
            r = httpx.post(
                f"{bg.url}/api/query",
                json={"path": whoami.path},
                headers={"Authorization": f"Bearer {hs()}"},
            )
    assert r.status_code == 401 and "not configured" in r.json()["message"]
