"""Owns caller identity: ``UserIdentity`` and ``ctx.auth``.

Over HTTP the identity comes from a verified JWT (``core.server``); in-process it is what the
client was opened with; in tests, ``with_identity(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidArgumentError


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
