"""Owns settings read from the environment; nothing else in Capsule reads ``os.environ``.

Read when a client opens (not at import), so tests and scripts can set them first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import UserError

DEFAULT_DB_URL = "sqlite:///capsule.db"


def database_url() -> str:
    """``CAPSULE_DB_URL``, or the default SQLite file ``./capsule.db``."""
    return os.environ.get("CAPSULE_DB_URL") or DEFAULT_DB_URL


def use_database_url(url: str) -> None:
    """Make ``url`` the database of everything opened from now on (the CLI's ``--db``)."""
    set_setting("CAPSULE_DB_URL", url)


def set_setting(name: str, value: str) -> None:
    """Set a ``CAPSULE_*`` setting for this process and the processes it starts."""
    os.environ[name] = value


def environment() -> Mapping[str, str]:
    """A copy of the environment, for ``ctx.env`` in actions."""
    return dict(os.environ)


def setting(name: str, default: str | None = None) -> str | None:
    """One ``CAPSULE_*`` setting (JWT issuer and keys, CORS origins, ...)."""
    return os.environ.get(name, default)


DEFAULT_LOG_RETENTION_SECONDS = 60.0


def log_retention_seconds() -> float:
    """``CAPSULE_LOG_RETENTION``: seconds commit-log records are kept (default 60).

    Other processes validate their transactions against the log: one whose snapshot is older
    than the oldest kept record conflicts and is retried, so a short retention costs retries
    of long mutations, never correctness.
    """
    value = _number("CAPSULE_LOG_RETENTION", DEFAULT_LOG_RETENTION_SECONDS)
    if value < 0:
        raise UserError(f"CAPSULE_LOG_RETENTION={value!r} is negative; use seconds >= 0.")
    return value


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a number.") from None


def _names(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How bearer JWTs are verified (``CAPSULE_JWT_*``); no keys means tokens are refused."""

    issuer: str | None = None
    """``CAPSULE_JWT_ISSUER``: the required ``iss`` claim."""
    audience: str | None = None
    """``CAPSULE_JWT_AUDIENCE``: the required ``aud`` claim (unchecked when unset)."""
    secret: str | None = None
    """``CAPSULE_JWT_SECRET``: the shared HS256 secret."""
    jwks_file: str | None = None
    """``CAPSULE_JWT_JWKS_FILE``: a JWKS JSON file of RS256 / ES256 public keys."""
    leeway: float = 0.0
    """``CAPSULE_JWT_LEEWAY``: seconds of clock skew tolerated on ``exp`` / ``nbf``."""

    @classmethod
    def from_env(cls) -> AuthSettings:
        """Read the ``CAPSULE_JWT_*`` variables."""
        env = os.environ
        return cls(
            issuer=env.get("CAPSULE_JWT_ISSUER") or None,
            audience=env.get("CAPSULE_JWT_AUDIENCE") or None,
            secret=env.get("CAPSULE_JWT_SECRET") or None,
            jwks_file=env.get("CAPSULE_JWT_JWKS_FILE") or None,
            leeway=_number("CAPSULE_JWT_LEEWAY", 0.0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Settings of the HTTP server (``core.server``), from ``CAPSULE_*`` variables."""

    auth: AuthSettings = field(default_factory=AuthSettings)
    cors_origins: tuple[str, ...] = ()
    """``CAPSULE_CORS_ORIGINS``: comma-separated origins allowed by CORS (``*`` for any)."""
    max_body_bytes: int = 8 << 20
    """``CAPSULE_MAX_BODY_BYTES``: the largest request body of the function endpoints."""
    max_upload_bytes: int = 64 << 20
    """``CAPSULE_MAX_UPLOAD_BYTES``: the largest file sent to an upload URL."""
    sse_ping_seconds: float = 15.0
    """``CAPSULE_SSE_PING``: seconds between keep-alive comments on SSE streams."""
    shutdown_seconds: float = 30.0
    """``CAPSULE_SHUTDOWN_TIMEOUT``: how long shutdown waits for in-flight requests."""

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Read the ``CAPSULE_*`` server variables."""
        env = os.environ
        return cls(
            auth=AuthSettings.from_env(),
            cors_origins=_names(env.get("CAPSULE_CORS_ORIGINS")),
            max_body_bytes=int(_number("CAPSULE_MAX_BODY_BYTES", 8 << 20)),
            max_upload_bytes=int(_number("CAPSULE_MAX_UPLOAD_BYTES", 64 << 20)),
            sse_ping_seconds=_number("CAPSULE_SSE_PING", 15.0),
            shutdown_seconds=_number("CAPSULE_SHUTDOWN_TIMEOUT", 30.0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSettings:
    """Settings of file storage's signed URLs (``ctx.files``)."""

    url_secret: str | None = None
    """``CAPSULE_FILE_URL_SECRET``: signs file URLs; when unset, a random secret is kept in the
    database, so every process sharing it agrees."""
    public_url: str | None = None
    """``CAPSULE_PUBLIC_URL``: the server's address as clients reach it, for absolute file URLs
    made outside a request (scheduled jobs, workers)."""
    url_seconds: float = 3600.0
    """``CAPSULE_FILE_URL_TTL``: how long a ``get_url`` link stays valid."""
    upload_seconds: float = 3600.0
    """``CAPSULE_UPLOAD_URL_TTL``: how long a ``generate_upload_url`` link stays valid."""

    @classmethod
    def from_env(cls) -> FileSettings:
        """Read the file-storage variables."""
        env = os.environ
        return cls(
            url_secret=env.get("CAPSULE_FILE_URL_SECRET") or None,
            public_url=(env.get("CAPSULE_PUBLIC_URL") or "").rstrip("/") or None,
            url_seconds=_number("CAPSULE_FILE_URL_TTL", 3600.0),
            upload_seconds=_number("CAPSULE_UPLOAD_URL_TTL", 3600.0),
        )
