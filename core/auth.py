"""Owns caller identity: ``UserIdentity``, ``ctx.auth`` and JWT verification.

Over HTTP the identity comes from a bearer JWT checked by ``JwtVerifier`` (issuer, audience,
expiry and signature: an HS256 secret or RS256 / ES256 keys from a JWKS); in-process it is
what the client was opened with; in tests, ``with_identity(...)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from core.errors import InvalidArgumentError, UnauthenticatedError


@dataclass(frozen=True, slots=True, kw_only=True)
class UserIdentity:
    """Who is calling: the standard claims, and every claim in ``claims``."""

    subject: str
    """The ``sub`` claim: a stable id of the user at the issuer."""
    issuer: str = ""
    """The ``iss`` claim."""
    name: str | None = None
    email: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    """All claims, including the ones above."""

    @property
    def token_identifier(self) -> str:
        """A globally unique id of the user: ``issuer|subject``."""
        return f"{self.issuer}|{self.subject}"

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> UserIdentity:
        """Build from a dict of JWT-style claims (``sub`` is required)."""
        sub = claims.get("sub", claims.get("subject"))
        if not isinstance(sub, str) or not sub:
            raise InvalidArgumentError('An identity needs a "sub" (subject) claim that is a str.')
        return cls(
            subject=sub,
            issuer=str(claims.get("iss", claims.get("issuer", ""))),
            name=claims.get("name"),
            email=claims.get("email"),
            claims=dict(claims),
        )


def to_identity(value: UserIdentity | Mapping[str, Any] | None) -> UserIdentity | None:
    """Accept an identity, a dict of claims, or ``None``."""
    if value is None or isinstance(value, UserIdentity):
        return value
    if isinstance(value, Mapping):
        return UserIdentity.from_claims(value)
    raise InvalidArgumentError(
        f"identity must be a UserIdentity, a dict of claims or None, not {type(value).__name__}."
    )


class Auth:
    """``ctx.auth``: the caller's identity."""

    __slots__ = ("_identity",)

    def __init__(self, identity: UserIdentity | None):
        self._identity = identity

    def get_user_identity(self) -> UserIdentity | None:
        """The caller's identity, or ``None`` when unauthenticated."""
        return self._identity


NO_AUTH = Auth(None)


# -- JWT verification ----------------------------------------------------------------------------

_HMAC_ALGORITHMS = ("HS256",)
_KEY_ALGORITHMS = ("RS256", "ES256")


class JwtVerifier:
    """Verifies bearer JWTs: signature, issuer, audience and expiry; returns the identity.

    Keys are an HS256 ``secret`` and/or the RS256 / ES256 public keys of a JWKS (a token's
    ``kid`` picks the key; a JWKS of one key needs none). A token is accepted only with the
    algorithm its key is for, so an RS256 public key can never be used as an HMAC secret.

    Args:
        issuer: the required ``iss`` claim.
        audience: the required ``aud`` claim, or ``None`` to accept any audience.
        secret: the shared secret of HS256 tokens.
        jwks: a JWKS document (``{"keys": [...]}``) of public keys.
        leeway: seconds of clock skew tolerated on ``exp`` and ``nbf``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None = None,
        secret: str | bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        leeway: float = 0.0,
    ):
        if not issuer:
            raise InvalidArgumentError("JwtVerifier needs the issuer tokens must come from.")
        if secret is None and jwks is None:
            raise InvalidArgumentError("JwtVerifier needs a secret (HS256) or a JWKS of keys.")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._secret = secret
        self._keys: dict[str | None, Any] = {}
        if jwks is not None:
            try:
                keyset = jwt.PyJWKSet.from_dict(dict(jwks))
            except jwt.PyJWTError as exc:
                raise InvalidArgumentError(f"The JWKS cannot be used: {exc}") from None
            for key in keyset.keys:
                self._keys[key.key_id] = key
            if len(keyset.keys) == 1:
                self._keys.setdefault(None, keyset.keys[0])

    @classmethod
    def from_settings(cls, settings: Any) -> JwtVerifier | None:
        """A verifier for ``AuthSettings`` (``None`` when no keys are configured)."""
        if settings.secret is None and settings.jwks_file is None:
            return None
        if not settings.issuer:
            raise InvalidArgumentError(
                "CAPSULE_JWT_ISSUER must be set together with CAPSULE_JWT_SECRET or "
                "CAPSULE_JWT_JWKS_FILE."
            )
        jwks = None
        if settings.jwks_file is not None:
            try:
                with open(settings.jwks_file, encoding="utf-8") as f:
                    jwks = json.load(f)
            except (OSError, ValueError) as exc:
                raise InvalidArgumentError(
                    f'The JWKS file "{settings.jwks_file}" cannot be read: {exc}'
                ) from None
        return cls(
            issuer=settings.issuer,
            audience=settings.audience,
            secret=settings.secret,
            jwks=jwks,
            leeway=settings.leeway,
        )

    def verify(self, token: str) -> UserIdentity:
        """Check a token and return the identity its claims describe.

        Raises:
            UnauthenticatedError: the token is malformed, badly signed, expired, not yet
                valid, or from another issuer or audience.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"The bearer token is not a valid JWT: {exc}.") from None
        alg = header.get("alg")
        key: Any
        if alg in _HMAC_ALGORITHMS and self._secret is not None:
            key, algorithms = self._secret, list(_HMAC_ALGORITHMS)
        elif alg in _KEY_ALGORITHMS and self._keys:
            jwk = self._keys.get(header.get("kid"))
            if jwk is None:
                raise UnauthenticatedError(
                    f"The bearer token's key id {header.get('kid')!r} is not among the "
                    "configured keys."
                )
            key, algorithms = jwk.key, [jwk.algorithm_name or alg]
        else:
            raise UnauthenticatedError(f"Bearer tokens signed with {alg!r} are not accepted.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": self.audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("The bearer token has expired.") from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError(
                f'The bearer token was not issued by "{self.issuer}".'
            ) from None
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"The bearer token was refused: {exc}.") from None
        try:
            return UserIdentity.from_claims(claims)
        except InvalidArgumentError as exc:
            raise UnauthenticatedError(str(exc)) from None
