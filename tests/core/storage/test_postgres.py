"""PostgresStorage specifics: key order, snapshots, the commit lock, notifications, retries.

The behaviour both backends share is covered by the whole suite through the ``storage``
fixture; these tests need a server (``CAPSULE_TEST_POSTGRES_URL``) and are skipped without one.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from core import App, DatabaseUnavailableError, MutationCtx, Schema, Table
from core.storage import open_storage
from core.storage.base import (
    CommitBatchItem,
    DocumentWrite,
    RetryableStorageError,
    Storage,
    WriteSession,
    WriteSessionContext,
)
from core.testing import TestApp
from core.testing.fixtures import make_storage, postgres_url

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
postgres = pytest.importorskip("core.storage.postgres")
PostgresStorage = postgres.PostgresStorage
WAIT = 30.0


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A fresh database's URL (the schema is created by the first storage that opens)."""
    for storage in make_storage("postgres", tmp_path):
        yield storage.url


@pytest.fixture
def pg(url: str) -> Iterator[Any]:
    s = PostgresStorage(url)
    s.open()
    yield s
    s.close()


@pytest.fixture
def two(url: str) -> Iterator[tuple[Any, Any]]:
    """Two storages on one database, as two app processes would have."""
    a, b = PostgresStorage(url), PostgresStorage(url)
    a.open()
    b.open()
    yield a, b
    a.close()
    b.close()


def doc(
    doc_id: str, data: bytes = b"{}", entries: Sequence[tuple[int, bytes]] = ()
) -> DocumentWrite:
    return DocumentWrite(
        id=doc_id,
        table=1,
        creation_time=1.0,
        data=data,
        added_entries=[(i, k, doc_id.encode()) for i, k in entries],
    )


def commit(s: Any, ts: int, *writes: DocumentWrite) -> None:
    with s.begin_write() as w:
        w.apply([CommitBatchItem(ts=ts, writes=list(writes), log_record=b"r%d" % ts)])


def wait_until(predicate: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# -- keys --------------------------------------------------------------------------------------


def test_index_scans_follow_bytewise_key_order_including_long_keys(pg: Any) -> None:
    rng = random.Random(7)
    long_prefix = bytes(rng.randrange(256) for _ in range(postgres.KEY_PREFIX))
    keys = {bytes(rng.randrange(256) for _ in range(rng.randrange(0, 6))) for _ in range(200)}
    keys |= {b"", b"\x00", b"\x00\x00", b"\xff", b"\xff\xff", b"a", b"ab", b"b"}
    # Long keys share their stored prefix, so only the full key can order them.
    keys |= {long_prefix + bytes([rng.randrange(256)]) * rng.randrange(1, 3000) for _ in range(30)}
    keys |= {long_prefix, long_prefix[:-1]}
    ordered = sorted(keys)
    writes = [doc(f"d{i}", entries=[(1, k)]) for i, k in enumerate(ordered)]
    writes.append(doc("other", entries=[(2, b"a")]))
    commit(pg, 1, *writes)

    snap = pg.begin_read()
    try:
        assert [r.key for r in snap.scan(1, b"", None, reverse=False, limit=10_000)] == ordered
        assert [r.key for r in snap.scan(1, b"", None, reverse=True, limit=10_000)] == ordered[::-1]
        for _ in range(40):
            lo, hi = sorted(rng.sample(ordered, 2))
            inside = [k for k in ordered if lo <= k < hi]
            got = snap.scan(1, lo, hi, reverse=False, limit=len(inside) + 1)
            assert [r.key for r in got] == inside
            assert [r.key for r in snap.scan(1, lo, hi, reverse=True, limit=3)] == inside[::-1][:3]
            entries = snap.scan_entries(1, lo, hi, limit=5)
            assert [e[0] for e in entries] == inside[:5]
        row = snap.scan(1, ordered[-1], None, reverse=False, limit=1)[0]
        assert row.doc.id == f"d{len(ordered) - 1}" and row.value == row.doc.id.encode()
    finally:
        snap.close()


def test_removed_long_key_entries_are_deleted(pg: Any) -> None:
    long_key = b"k" * 5000
    commit(pg, 1, doc("a", entries=[(1, long_key), (1, b"short")]))
    with pg.begin_write() as w:
        w.apply(
            [
                CommitBatchItem(
                    ts=2,
                    writes=[
                        DocumentWrite(
                            id="a",
                            table=1,
                            creation_time=1.0,
                            data=None,
                            removed_entries=[(1, long_key), (1, b"short")],
                        )
                    ],
                    log_record=b"",
                )
            ]
        )
    snap = pg.begin_read()
    assert snap.get("a") is None
    assert snap.scan(1, b"", None, reverse=False, limit=10) == []
    snap.close()


# -- snapshots and the commit step ----------------------------------------------------------------


def test_snapshot_sees_exactly_the_commits_up_to_its_timestamp(pg: Any) -> None:
    commit(pg, 10, doc("a", b"1"))
    old = pg.begin_read()
    assert old.ts == 10
    commit(pg, 20, doc("a", b"2"), doc("b", b"2"))
    new = pg.begin_read()
    try:
        assert (old.ts, old.get("a").data, old.get("b")) == (10, b"1", None)
        assert (new.ts, new.get("a").data, new.get("b").data) == (20, b"2", b"2")
    finally:
        old.close()
        new.close()


def test_commit_step_sees_commits_made_while_it_waited_for_the_lock(two: tuple[Any, Any]) -> None:
    a, b = two
    seen: dict[str, Any] = {}
    entered = threading.Event()

    def second() -> None:
        entered.set()
        with b.begin_write() as w:
            seen["latest"] = w.latest_ts()
            seen["log"] = w.read_log(0)

    with a.begin_write() as w:
        thread = threading.Thread(target=second)
        thread.start()
        entered.wait(WAIT)
        # b is now blocked on the lock (or about to be); it must see what a commits.
        wait_until(lambda: _lock_waiters(a) == 1)
        w.apply([CommitBatchItem(ts=42, writes=[doc("x")], log_record=b"x")])
    thread.join(WAIT)
    assert seen == {"latest": 42, "log": [(42, b"x")]}


def _lock_waiters(s: Any) -> int:
    with s._writers.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        return int(row[0])


def test_begin_write_times_out_while_another_process_commits(two: tuple[Any, Any]) -> None:
    a, b = two
    with a.begin_write():
        with pytest.raises(TimeoutError):
            with b.begin_write(timeout=0.05):
                pass
        # Reading the log never needs the lock.
        assert b.read_commits(0) == []
    with b.begin_write(timeout=0.05) as w:
        assert w.latest_ts() == 0


def test_write_session_reads_its_own_writes_and_catalog(pg: Any) -> None:
    from core.storage.base import CatalogIndex, CatalogTable

    with pg.begin_write() as w:
        w.put_catalog(
            [CatalogTable(number=1, namespace="", name="t", fingerprint="f")],
            [CatalogIndex(id=1, table=1, name="by_x", spec="btree:x")],
            [],
        )
        tables, indexes = pg.load_catalog()  # same thread: through the open session
        assert [t.name for t in tables] == ["t"] and [i.name for i in indexes] == ["by_x"]
        w.apply([CommitBatchItem(ts=5, writes=[doc("a", entries=[(1, b"k")])], log_record=b"")])
        snap = w.snapshot()
        assert snap.ts == 5 and snap.get("a") is not None
        assert w.latest_ts() == 5
        w.put_catalog([], [], [1])
        assert snap.scan(1, b"", None, reverse=False, limit=5) == []
    assert pg.load_catalog()[1] == []


def test_failed_commit_step_applies_nothing(pg: Any) -> None:
    with pytest.raises(RuntimeError), pg.begin_write() as w:
        w.apply([CommitBatchItem(ts=5, writes=[doc("a")], log_record=b"")])
        raise RuntimeError("boom")
    snap = pg.begin_read()
    assert (snap.ts, snap.get("a")) == (0, None)
    snap.close()


def _wal_lsn(conn: Any, which: str) -> int:
    row = conn.execute(f"SELECT pg_current_wal_{which}_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0])


@pytest.mark.parametrize("flush", ["in_step", "after_step"])
def test_a_commit_is_flushed_when_the_commit_step_returns(url: str, flush: str) -> None:
    s = PostgresStorage(f"{url}?capsule_flush={flush}")
    assert s.flush == flush
    s.open()
    try:
        for ts in range(1, 4):
            with s.begin_write() as w:
                w.apply([CommitBatchItem(ts=ts, writes=[doc("a")], log_record=b"")])
                written = _wal_lsn(w._conn, "insert")
            with s._writers.connection() as conn:
                assert _wal_lsn(conn, "flush") > written
    finally:
        s.close()


def test_unknown_flush_mode_is_refused(url: str) -> None:
    from core.errors import UserError

    with pytest.raises(UserError, match="flush"):
        PostgresStorage(f"{url}?capsule_flush=sometimes")


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_failures_in_the_commit_step_become_retryable(pg: Any, sqlstate: str) -> None:
    with pytest.raises(RetryableStorageError), pg.begin_write() as w:
        w._conn.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"
        )
    with pg.begin_write() as w:  # the connection went back clean
        assert w.latest_ts() == 0


def test_schema_creation_is_safe_from_many_processes_at_once(url: str) -> None:
    stores = [PostgresStorage(url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def open_one(s: Any) -> None:
        barrier.wait(WAIT)
        try:
            s.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    try:
        assert errors == []
        commit(stores[0], 1, doc("a"))
        assert stores[-1].read_commits(0) == [(1, b"r1")]
    finally:
        for s in stores:
            s.close()


def test_storage_reopens_after_close(url: str) -> None:
    s = PostgresStorage(url)
    s.open()
    commit(s, 1, doc("a"))
    s.close()
    s.open()
    snap = s.begin_read()
    assert snap.get("a") is not None
    snap.close()
    s.close()


# -- notifications -----------------------------------------------------------------------------


def test_wait_for_commit_is_woken_by_another_process_commit(two: tuple[Any, Any]) -> None:
    a, b = two
    assert not b.wait_for_commit(0, timeout=0.01)  # listening from now on
    result: list[bool] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(b.wait_for_commit(0, WAIT)))
    thread.start()
    wait_until(lambda: b._listener._draining)
    commit(a, 7, doc("a"))
    thread.join(WAIT)
    assert result == [True] and time.monotonic() - started < WAIT
    # Known commits answer at once, from memory.
    assert b.wait_for_commit(6, timeout=0)
    assert not b.wait_for_commit(7, timeout=0.01)


def test_wait_for_commit_finds_commits_made_before_it_listened(two: tuple[Any, Any]) -> None:
    a, b = two
    commit(a, 3, doc("a"))
    assert b.wait_for_commit(2, timeout=WAIT)  # the log is the truth


def test_close_wakes_a_waiting_thread(pg: Any) -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(pg.wait_for_commit(10, WAIT)))
    thread.start()
    wait_until(lambda: pg._listener is not None and pg._listener._draining)
    pg.close()
    thread.join(WAIT)
    assert result == [False]


def test_listener_reconnects_after_its_connection_is_killed(two: tuple[Any, Any]) -> None:
    a, b = two
    assert not b.wait_for_commit(0, timeout=0.01)
    with a._writers.connection() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'capsule-listener' AND datname = current_database()"
        )
    commit(a, 9, doc("a"))
    assert b.wait_for_commit(0, timeout=WAIT)


# -- the database on top ---------------------------------------------------------------------------


app = App(Schema(counters=Table({"name": str, "value": int})))


@app.mutation
def bump(ctx: MutationCtx) -> int:
    doc = ctx.db.query("counters").first()
    if doc is None:
        ctx.db.insert("counters", {"name": "c", "value": 1})
        return 1
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})
    return int(doc["value"]) + 1


class _FlakyContext(WriteSessionContext):
    def __init__(self, inner: WriteSessionContext, owner: FlakyStorage):
        self._inner = inner
        self._owner = owner

    def __enter__(self) -> WriteSession:
        session = self._inner.__enter__()
        owner = self._owner
        real_apply = session.apply

        def apply(items: Any) -> None:
            if owner.failures:
                owner.failures -= 1
                raise RetryableStorageError("injected serialization failure")
            real_apply(items)

        session.apply = apply  # type: ignore[method-assign]
        return session

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)


class FlakyStorage(Storage):
    """Delegates to a real storage; the next ``failures`` applies raise a retryable error."""

    def __init__(self, inner: Storage, failures: int):
        self.inner = inner
        self.failures = failures
        self.url = inner.url

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def begin_read(self) -> Any:
        return self.inner.begin_read()

    def begin_write(self, *, timeout: float | None = None) -> WriteSessionContext:
        return _FlakyContext(self.inner.begin_write(timeout=timeout), self)

    def load_catalog(self) -> Any:
        return self.inner.load_catalog()


def test_retryable_storage_errors_are_retried_not_raised(storage: Storage) -> None:
    flaky = FlakyStorage(storage, failures=0)
    with TestApp(app, storage=flaky) as t:
        assert t.mutation(bump) == 1
        flaky.failures = 2
        assert t.mutation(bump) == 2
        assert flaky.failures == 0
        assert t.runtime.executor.retries == 2


def test_a_storage_that_never_stops_failing_ends_in_conflict_error(storage: Storage) -> None:
    from core.errors import ConflictError
    from core.execution import OPTIMISTIC_ATTEMPTS

    flaky = FlakyStorage(storage, failures=0)
    with TestApp(app, storage=flaky) as t:
        flaky.failures = OPTIMISTIC_ATTEMPTS + 1  # every attempt, the final one included
        with pytest.raises(ConflictError, match="refused"):
            t.mutation(bump)
        assert t.mutation(bump) == 1  # nothing of the failed attempts was applied


def test_app_opens_on_a_postgres_url_from_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPSULE_DB_URL", url)
    with App(app.schema).sync_client(runtime=False) as client:
        assert isinstance(client.runtime.storage, PostgresStorage)
    with app.sync_client(runtime=False) as client:
        assert client.mutation(bump) == 1
    with App(app.schema, storage=url).sync_client(runtime=False) as client:
        assert client.runtime.db.space("").tables["counters"] is not None
        assert client.runtime.storage.wait_for_commit(0, timeout=WAIT)


def test_wait_for_commit_on_a_closed_storage_returns_at_once(url: str) -> None:
    assert not PostgresStorage(url).wait_for_commit(0, timeout=WAIT)


def test_open_storage_picks_postgres_for_postgres_urls() -> None:
    url = postgres_url() or "postgresql://nobody@127.0.0.1:1/none"
    for scheme in ("postgresql://", "postgres://"):
        s = open_storage(scheme + url.split("://", 1)[1])
        assert isinstance(s, PostgresStorage)


def test_temporary_database_is_dropped_even_with_connections_open() -> None:
    server = postgres_url()
    if server is None:
        pytest.skip("CAPSULE_TEST_POSTGRES_URL is not set")
    name = f"capsule_test_{uuid.uuid4().hex[:12]}"
    with postgres.temporary_database(server, name) as db_url:
        leftover = psycopg.connect(db_url)
    with psycopg.connect(server, autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert row.fetchone()[0] == 0
    with pytest.raises(psycopg.OperationalError):
        leftover.execute("SELECT 1")
    leftover.close()


def _open_error(url: str) -> tuple[str, float]:
    storage = open_storage(url)
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        storage.open()
    return str(info.value), time.monotonic() - start


def test_a_missing_database_is_one_line_naming_it_within_5_seconds() -> None:
    url = postgres_url()
    if url is None:
        pytest.skip("CAPSULE_TEST_POSTGRES_URL is not set")
    bad = postgres._database_url(url, "capsule_no_such_db")
    message, took = _open_error(bad)
    assert took < 5.0  # the bound: one direct connection, not a 30 s pool timeout
    assert message == (
        f'Cannot open the database {bad}: database "capsule_no_such_db" does not exist. '
        "Create it (createdb capsule_no_such_db) or fix the URL (CAPSULE_DB_URL or --db)."
    )


def test_an_unreachable_server_and_a_wrong_password_are_one_line_errors() -> None:
    message, took = _open_error("postgresql://u:hunter2@127.0.0.1:1/db")
    assert took < 5.0
    assert message == (
        "Cannot open the database postgresql://u:***@127.0.0.1:1/db: Connection refused. "
        "Is PostgreSQL running there? Check the host and port in the URL (CAPSULE_DB_URL or "
        "--db)."
    )
    assert "\n" not in message
    assert postgres.redact("host=h password=hunter2 dbname=d") == "host=h password=*** dbname=d"
