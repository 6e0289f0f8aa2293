"""Whether a storage error is transient is decided by the storage backend."""

from __future__ import annotations

import sqlite3

import pytest

from core.errors import CapsuleError, ConflictError, RetryableStorageError
from core.storage.base import Storage
from core.testing import FaultyStorage


def test_each_backend_judges_its_own_errors(storage: Storage) -> None:
    assert storage.is_transient(RetryableStorageError("serialization failure"))
    assert storage.is_transient(TimeoutError("commit lock"))
    assert not storage.is_transient(ValueError("a bug"))
    assert not storage.is_transient(ConflictError(["tasks"]))
    assert isinstance(RetryableStorageError("x"), CapsuleError)
    if "postgresql" in storage.url:
        import psycopg

        assert storage.is_transient(psycopg.OperationalError("connection lost"))
        assert not storage.is_transient(psycopg.ProgrammingError("bad SQL"))
        assert not storage.is_transient(sqlite3.OperationalError("not this backend's"))
    else:
        assert storage.is_transient(sqlite3.OperationalError("database is locked"))
        assert not storage.is_transient(sqlite3.IntegrityError("constraint"))
    assert FaultyStorage(storage).is_transient(RetryableStorageError("x"))


def test_the_error_is_importable_where_it_was() -> None:
    from core.storage.base import RetryableStorageError as FromBase

    assert FromBase is RetryableStorageError
    with pytest.raises(CapsuleError):
        raise FromBase("x")
