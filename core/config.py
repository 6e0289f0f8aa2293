"""Owns settings read from the environment; nothing else in Capsule reads ``os.environ``.

Read when a client opens (not at import), so tests and scripts can set them first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_DB_URL = "sqlite:///capsule.db"


def database_url() -> str:
    """``CAPSULE_DB_URL``, or the default SQLite file ``./capsule.db``."""
    return os.environ.get("CAPSULE_DB_URL") or DEFAULT_DB_URL


def environment() -> Mapping[str, str]:
    """A copy of the environment, for ``ctx.env`` in actions."""
    return dict(os.environ)


def setting(name: str, default: str | None = None) -> str | None:
    """One ``CAPSULE_*`` setting (JWT issuer and keys, CORS origins, ...)."""
    return os.environ.get(name, default)
