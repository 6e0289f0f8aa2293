"""Migrations: batched, resumable, once each, in name order, beside concurrent mutations.

The scenario throughout: ``users`` documents hold ``name``; the app moves to ``first`` and
``last``. The transitional shape allows both; the final shape requires the new fields, and
refuses to open while documents do not fit, naming the migration that would fix them.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import UNSET, App, Component, MutationCtx, Schema, SchemaMismatchError, Table
from core.cli import main, parser
from core.cli.serve import migrate_first
from core.encoding import load_document
from core.indexes import creation
from core.migrations import DONE, PENDING, Migrator, migrate, migration_status
from core.storage import open_storage
from core.storage.base import Storage
from core.testing import TestApp

OLD = {"name": str, "visits": int}
TRANSITIONAL = {"name": str | None, "first": str | None, "last": str | None, "visits": int}
FINAL = {"first": str, "last": str, "visits": int}
BONUS = 1000
"""The split also adds this to ``visits``: applied twice, or lost, the total shows it."""


def split(ctx: MutationCtx, doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc.get("name") is None:
        return None
    first, _, last = doc["name"].partition(" ")
    return {"first": first, "last": last, "name": UNSET, "visits": doc["visits"] + BONUS}


def make_app(shape: dict[str, Any], *, batch_size: int = 250) -> App:
    app = App(
        Schema(users=Table(shape).index("by_last", ["last"]) if "last" in shape else Table(shape))
    )
    app.migration("0001_split_name", table="users", batch_size=batch_size)(split)
    return app


final_app = make_app(FINAL)
FINAL_APP = f"{__name__}:final_app"
transitional_app = make_app(TRANSITIONAL)
TRANSITIONAL_APP = f"{__name__}:transitional_app"


def size(storage: Storage) -> int:
    return 10_000 if storage.url.startswith("sqlite") else 1_500


def fill(storage: Storage, n: int) -> None:
    with TestApp(App(Schema(users=Table(OLD))), storage=storage) as t:
        t.run(
            lambda ctx: [
                ctx.db.insert("users", {"name": f"Ada{i} Lovelace{i}", "visits": i})
                for i in range(n)
            ][:1]
        )


def stored(url: str, table: str = "users") -> list[dict[str, Any]]:
    storage = open_storage(url)
    storage.open()
    try:
        tables, indexes = storage.load_catalog()
        number = next(t.number for t in tables if t.name == table)
        index = next(i.id for i in indexes if i.table == number and i.name == "by_creation_time")
        snap = storage.begin_read()
        try:
            rows = creation.scan(snap, number, index, b"", None, reverse=False, limit=1_000_000)
            return [load_document(r.doc.data) for r in rows]
        finally:
            snap.close()
    finally:
        storage.close()


def bump(doc_id: str) -> Callable[[MutationCtx], None]:
    def body(ctx: MutationCtx) -> None:
        doc = ctx.db.get(doc_id)
        assert doc is not None
        ctx.db.patch(doc_id, {"visits": doc["visits"] + 1})

    return body


def add(value: dict[str, Any]) -> Callable[[MutationCtx], str]:
    def body(ctx: MutationCtx) -> str:
        return ctx.db.insert("users", value)

    return body


def test_a_split_runs_in_batches_beside_concurrent_mutations_and_loses_nothing(
    storage: Storage,
) -> None:
    n = size(storage)
    fill(storage, n)
    before = {d["_id"]: d for d in stored(storage.url)}
    ids = list(before)
    bumps: dict[str, int] = {}
    inserted: list[str] = []
    errors: list[BaseException] = []
    with TestApp(transitional_app, storage=storage) as t:
        migrated = threading.Event()

        def writer() -> None:
            rng = random.Random(7)
            try:
                i = 0
                while not migrated.is_set() or i < 50:
                    doc_id = rng.choice(ids)
                    t.run(bump(doc_id))
                    bumps[doc_id] = bumps.get(doc_id, 0) + 1
                    if i % 10 == 0:
                        new = {"first": "New", "last": f"User{i}", "visits": 0}
                        inserted.append(t.run(add(new)))
                    i += 1
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            [status] = Migrator(transitional_app, t.runtime).run()
            during = sum(bumps.values())
        finally:
            migrated.set()
            thread.join()
        assert not errors, errors
        assert during > 0  # the writer ran while the migration did
        assert (status.state, status.changed) == (DONE, n)
        assert status.processed >= n
    docs = {d["_id"]: d for d in stored(storage.url)}
    assert set(docs) == set(ids) | set(inserted)
    for doc_id, old in before.items():
        doc = docs[doc_id]
        first, _, last = old["name"].split(" ")[0], "", old["name"].split(" ")[1]
        assert (doc["first"], doc["last"], doc.get("name")) == (first, last, None)
        assert doc["visits"] == old["visits"] + BONUS + bumps.get(doc_id, 0)
    assert all(docs[i]["visits"] == 0 and docs[i]["first"] == "New" for i in inserted)
    # Each once: running again changes nothing.
    with TestApp(transitional_app, storage=storage) as t:
        [status] = Migrator(transitional_app, t.runtime).run()
        assert (status.state, status.changed) == (DONE, n)
    assert {d["_id"]: d for d in stored(storage.url)} == docs


def test_the_final_shape_refuses_to_open_until_the_migration_has_run(
    storage: Storage, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPSULE_DB_URL", storage.url)  # `--db` sets it: undo that after
    n = size(storage) // 5
    fill(storage, n)
    with pytest.raises(SchemaMismatchError) as info:
        TestApp(final_app, storage=storage).__enter__()
    err = info.value
    assert (err.table, err.count, err.migrations) == ("users", n, ["0001_split_name"])
    assert f"{n:,} stored documents" in str(err) and '"0001_split_name"' in str(err)
    assert "capsule migrate" in str(err)

    # --status: pending, with the documents to go; and the table that does not fit.
    assert main(["migrate", "--status", "--app", FINAL_APP, "--db", storage.url]) == 0
    out = capsys.readouterr().out
    assert f"0001_split_name (users): pending, {n:,} to go" in out
    assert f"{n:,} do not fit the schema (0001_split_name)" in out

    # --dry-run changes nothing.
    assert main(["migrate", "--dry-run", "--app", FINAL_APP, "--db", storage.url]) == 0
    out = capsys.readouterr().out
    assert f"0001_split_name (users): would change, {n:,} read, {n:,} changed" in out
    assert all("name" in d and "first" not in d for d in stored(storage.url))
    with pytest.raises(SchemaMismatchError):
        TestApp(final_app, storage=storage).__enter__()

    assert main(["migrate", "--app", FINAL_APP, "--db", storage.url]) == 0
    out = capsys.readouterr().out
    assert f"0001_split_name (users): done, {n:,} read, {n:,} changed" in out
    with TestApp(final_app, storage=storage) as t:
        found = t.run(
            lambda ctx: (
                ctx.db.query("users")
                .with_index("by_last", lambda q: q.eq("last", "Lovelace3"))
                .unique()
            )
        )
        assert found is not None and found["first"] == "Ada3" and "name" not in found
    assert main(["migrate", "--status", "--app", FINAL_APP, "--db", storage.url]) == 0
    out = capsys.readouterr().out
    assert f"0001_split_name (users): done, {n:,} read, {n:,} changed" in out
    assert "do not fit" not in out


def test_a_failed_run_resumes_where_it_stopped(storage: Storage) -> None:
    n = 1_000
    fill(storage, n)
    calls = {"n": 0}

    def flaky(ctx: MutationCtx, doc: dict[str, Any]) -> dict[str, Any] | None:
        calls["n"] += 1
        if calls["n"] == 450:
            raise RuntimeError("crash in the middle")
        return split(ctx, doc)

    app = App(Schema(users=Table(TRANSITIONAL)))
    app.migration("split", table="users", batch_size=100)(flaky)
    with TestApp(app, storage=storage) as t:
        with pytest.raises(RuntimeError):
            Migrator(app, t.runtime).run()
        [status] = Migrator(app, t.runtime).status()
        assert (status.state, status.processed, status.changed) == ("running", 400, 400)
        assert status.remaining == n - 400
        [status] = Migrator(app, t.runtime).run()
        assert (status.state, status.processed, status.changed) == (DONE, n, n)
    docs = stored(storage.url)
    assert all(d["visits"] < BONUS * 2 and d["visits"] >= BONUS for d in docs)


def test_migrations_run_in_name_order_each_once_components_first(storage: Storage) -> None:
    order: list[str] = []
    counters = Component("counters", schema=Schema(counts=Table({"n": int})))

    @counters.migration("double", table="counts")
    def double(ctx: MutationCtx, doc: dict[str, Any]) -> dict[str, Any]:
        order.append(f"counters/double {doc['n']}")
        return {"n": doc["n"] * 2}

    @counters.mutation
    def seed(ctx: MutationCtx) -> None:
        ctx.db.insert("counts", {"n": 21})

    app = App(Schema(users=Table(TRANSITIONAL)))
    handle = app.use(counters, name="c")

    @app.migration("b_second", table="users", batch_size=1)
    def second(ctx: MutationCtx, doc: dict[str, Any]) -> None:
        order.append("b_second")

    @app.migration("a_first", table="users")
    def first(ctx: MutationCtx, doc: dict[str, Any]) -> dict[str, Any]:
        order.append("a_first")
        return {"visits": doc["visits"] + 1}

    with TestApp(app, storage=storage) as t:
        t.run(lambda ctx: ctx.db.insert("users", {"name": "x y", "visits": 0}))
        t.run(lambda ctx: ctx.run_mutation(handle.seed, {}))
        statuses = Migrator(app, t.runtime).status()
        assert [(s.label, s.state) for s in statuses] == [
            ("c/double", PENDING),
            ("a_first", PENDING),
            ("b_second", PENDING),
        ]
    statuses, unsettled = migrate(app, storage=storage)
    assert [(s.label, s.state, s.changed) for s in statuses] == [
        ("c/double", DONE, 1),
        ("a_first", DONE, 1),
        ("b_second", DONE, 0),
    ]
    assert order == ["counters/double 21", "a_first", "b_second"] and unsettled == []
    migrate(app, storage=storage)
    assert len(order) == 3  # each once
    statuses, _ = migration_status(app, ["c/double"], storage=storage)
    assert [s.describe() for s in statuses] == ["c/double (counts): done, 1 read, 1 changed"]
    with TestApp(app, storage=storage) as t:
        records = t.run(lambda ctx: ctx.db.system.query("_migrations").collect())
        assert sorted((r["namespace"], r["name"]) for r in records) == [
            ("", "a_first"),
            ("", "b_second"),
            ("c", "double"),
        ]


def test_unknown_names_and_bad_declarations_are_refused(storage: Storage) -> None:
    from core.errors import UserError

    app = make_app(TRANSITIONAL)
    with pytest.raises(UserError, match="declared twice"):
        app.migration("0001_split_name", table="users")(split)
    with pytest.raises(UserError, match="batch_size"):
        app.migration("x", table="users", batch_size=0)
    with pytest.raises(UserError, match="No migration named nope"):
        migrate(app, ["nope"], storage=storage)


def test_serve_and_worker_can_migrate_first(storage: Storage) -> None:
    fill(storage, 20)
    app = make_app(FINAL)
    app._storage = storage.url
    migrate_first(argparse.Namespace(migrate=False), app)
    with pytest.raises(SchemaMismatchError):
        TestApp(app, storage=storage).__enter__()
    for command in ("serve", "dev", "worker"):
        assert parser().parse_args([command, "m:app", "--migrate"]).migrate is True
    migrate_first(argparse.Namespace(migrate=True), app)
    with TestApp(app, storage=storage) as t:
        assert t.run(lambda ctx: len(ctx.db.query("users").collect())) == 20


CHILD = """
import sys, time

from core import App, Schema, Table
from core.migrations import migrate
from core.storage import open_storage
from tests.core.test_migrations import TRANSITIONAL, split

calls = 0


def slow(ctx, doc):
    global calls
    calls += 1
    if calls > 350:  # inside the fourth batch's transaction: wait to be killed
        print("KILL ME", flush=True)
        time.sleep(3600)
    return split(ctx, doc)


app = App(Schema(users=Table(TRANSITIONAL)))
app.migration("split", table="users", batch_size=100)(slow)
migrate(app, storage=open_storage(sys.argv[1]))
"""


def test_a_migration_killed_mid_way_resumes_after_its_last_batch(
    tmp_path: Path, storage: Storage
) -> None:
    n = 1_000
    fill(storage, n)
    before = {d["_id"]: d for d in stored(storage.url)}
    script = tmp_path / "migrate_child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), storage.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()))
    reader.start()
    reader.join(120)
    if not line or line[0].strip() != "KILL ME":
        child.kill()
        pytest.fail(f"the child did not reach its fourth batch: {line} {child.communicate()[1]}")
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert sum(1 for d in stored(storage.url) if d.get("first")) == 300
    app = App(Schema(users=Table(TRANSITIONAL)))
    app.migration("split", table="users", batch_size=100)(split)
    statuses, _ = migration_status(app, storage=storage)
    assert [(s.state, s.processed, s.remaining) for s in statuses] == [("running", 300, n - 300)]
    [status], unsettled = migrate(app, storage=storage)
    assert (status.state, status.processed, status.changed, unsettled) == (DONE, n, n, [])
    for doc in stored(storage.url):
        assert doc["visits"] == before[doc["_id"]]["visits"] + BONUS  # migrated exactly once


def test_test_app_migrates_at_open_or_on_demand(storage: Storage) -> None:
    fill(storage, 30)
    app = make_app(FINAL, batch_size=7)
    with TestApp(app, storage=storage, migrate=True) as t:
        assert t.run(lambda ctx: len(ctx.db.query("users").collect())) == 30
        [status] = t.migrate()
        assert (status.state, status.changed) == (DONE, 30)
    other = App(Schema(users=Table(FINAL)))
    other.migration("0002_bump", table="users")(
        lambda ctx, doc: {"visits": doc["visits"] + 1} if doc["visits"] < BONUS * 2 else None
    )
    with TestApp(other, storage=storage) as t:
        [status] = t.migrate(dry_run=True)
        assert (status.state, status.changed) == ("would change", 30)
        [status] = t.migrate("0002_bump")
        assert (status.state, status.changed) == (DONE, 30)
