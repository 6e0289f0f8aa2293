"""Owns pages and cursors: ``Page`` and the opaque cursor strings that ``paginate`` returns.

A cursor is the index key of the last document a page returned, so the next page starts
strictly after it: documents that stay in the range are neither skipped nor repeated, however
many others are inserted or deleted between pages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidArgumentError

_START = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page of a paginated query."""

    page: list[dict[str, Any]]
    """The documents of this page."""
    continue_cursor: str
    """Pass this as ``cursor`` to get the next page."""
    is_done: bool
    """True when the range was exhausted (later inserts may still be read with the cursor)."""


_VERSION = 1


def encode_cursor(key: bytes | None, index: int) -> str:
    """The cursor string for a position after ``key`` of index ``index`` (``None``: the start).

    The index id travels in the cursor, so a cursor of another query's index is refused instead
    of silently starting somewhere meaningless.
    """
    if key is None:
        return _START
    raw = bytes((_VERSION,)) + index.to_bytes(4, "big") + key
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, index: int) -> bytes | None:
    """The key a cursor stands after (``None``: the start); refuses malformed cursors."""
    if not isinstance(cursor, str):
        raise InvalidArgumentError(f"cursor must be a str or None, not {type(cursor).__name__}.")
    if cursor == _START:
        return None
    try:
        raw = base64.b64decode(
            cursor.encode("ascii") + b"=" * (-len(cursor) % 4), altchars=b"-_", validate=True
        )
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) < 6 or raw[0] != _VERSION:
        raise InvalidArgumentError(f"cursor {cursor[:40]!r} is not a cursor from paginate().")
    if int.from_bytes(raw[1:5], "big") != index:
        raise InvalidArgumentError(
            f"cursor {cursor[:40]!r} belongs to a query over another index; pass a cursor "
            "from the same query."
        )
    return raw[5:]
