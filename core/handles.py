"""Owns function handles: the unforgeable strings that name a function in a table space.

A handle is ``"fn:<namespace>|<path>|<signature>"``, the signature an HMAC-SHA256 of
``"<namespace>|<path>"`` under a secret kept in the database's ``_function_keys`` system table
(created when the database is first opened, shared by every process that opens it). A handle
is a capability: whoever holds one may call the function it names, from any table space, so it
is only ever made by the core for a function its maker could reach, and a string that was not
signed with the database's key (a guessed or edited handle) is refused. A handle of one database
means nothing on another.

Only the core parses handles; components ask ``is_handle`` and ``handle_path``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from core.errors import InvalidHandleError, UserError

HANDLE_PREFIX = "fn:"
_SIGNATURE_BYTES = 18
"""Bytes of HMAC kept in a handle (144 bits: 24 base64 characters)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Handle:
    """A verified handle: the function it names and the table space it runs in."""

    namespace: str
    """The table space (``""`` is the app's)."""
    path: str
    """The function's path within that table space's functions."""


def _split(value: str) -> tuple[str, str, str] | None:
    if not value.startswith(HANDLE_PREFIX):
        return None
    namespace, sep, rest = value[len(HANDLE_PREFIX) :].partition("|")
    path, sep2, signature = rest.rpartition("|")
    if not sep or not sep2 or not path or not signature:
        return None
    return namespace, path, signature


def is_handle(value: object) -> bool:
    """Whether ``value`` has the shape of a function handle (it may still fail verification)."""
    return isinstance(value, str) and _split(value) is not None


def handle_path(handle: str) -> str:
    """The function path a handle names (``"tasks:create"``).

    Raises:
        UserError: ``handle`` is not a handle string.
    """
    parts = _split(handle) if isinstance(handle, str) else None
    if parts is None:
        raise UserError(f"{_shown(handle)} is not a function handle.")
    return parts[1]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class HandleKey:
    """Signs and verifies the handles of one database."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise UserError("A handle key needs at least 16 bytes of secret.")
        self._secret = secret

    def _signature(self, namespace: str, path: str) -> str:
        digest = hmac.new(self._secret, f"{namespace}|{path}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_SIGNATURE_BYTES]).decode("ascii")

    def sign(self, namespace: str, path: str) -> str:
        """The handle of the function ``path`` of table space ``namespace``."""
        return f"{HANDLE_PREFIX}{namespace}|{path}|{self._signature(namespace, path)}"

    def verify(self, handle: str) -> Handle:
        """The function a handle names, if this database's key signed it.

        Raises:
            InvalidHandleError: ``handle`` is malformed or its signature does not match.
        """
        parts = _split(handle)
        if parts is None:
            raise InvalidHandleError(_shown(handle), "it is not a function handle")
        namespace, path, signature = parts
        if not hmac.compare_digest(self._signature(namespace, path), signature):
            raise InvalidHandleError(
                _shown(handle), "its signature does not match this database's key"
            )
        return Handle(namespace=namespace, path=path)
