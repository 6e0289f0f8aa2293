"""Optimistic concurrency on every backend: no lost update, no write skew, serializable history."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core import App, ConflictError, MutationCtx, QueryCtx, Schema, Table
from core import execution as execution_module
from core.database.engine import Conflict
from core.storage.base import Storage
from core.testing import ManualClock, TestApp

app = App(
    Schema(
        counters=Table({"value": int}),
        accounts=Table({"n": int, "balance": int}).index("by_n", ["n"]),
        receipts=Table(
            {
                "seq": int,
                "src_before": int,
                "dst_before": int,
                "src": int,
                "dst": int,
                "amount": int,
            }
        ),
        doctors=Table({"name": str, "on_call": bool}),
        slots=Table({"k": int}).index("by_k", ["k"]),
    )
)


@app.mutation
def bump(ctx: MutationCtx, id: str) -> int:
    value = ctx.db.get(id)["value"] + 1
    ctx.db.patch(id, {"value": value})
    return int(value)


@app.query
def value_of(ctx: QueryCtx, id: str) -> int:
    return int(ctx.db.get(id)["value"])


def account(ctx: QueryCtx, n: int) -> dict[str, Any]:
    doc = ctx.db.query("accounts").with_index("by_n", lambda q: q.eq("n", n)).unique()
    assert doc is not None
    return doc


@app.mutation
def transfer(ctx: MutationCtx, seq: int, src: int, dst: int, amount: int) -> bool:
    a, b = account(ctx, src), account(ctx, dst)
    ctx.db.insert(
        "receipts",
        {
            "seq": seq,
            "src_before": a["balance"],
            "dst_before": b["balance"],
            "src": src,
            "dst": dst,
            "amount": amount,
        },
    )
    if a["balance"] < amount or src == dst:
        return False
    ctx.db.patch(a["_id"], {"balance": a["balance"] - amount})
    ctx.db.patch(b["_id"], {"balance": b["balance"] + amount})
    return True


@app.mutation
def reset_accounts(ctx: MutationCtx, count: int, balance: int) -> None:
    for table in ("accounts", "receipts"):
        for doc in ctx.db.query(table).collect():
            ctx.db.delete(doc["_id"])
    for n in range(count):
        ctx.db.insert("accounts", {"n": n, "balance": balance})


@app.query
def balances(ctx: QueryCtx) -> list[int]:
    return [d["balance"] for d in ctx.db.query("accounts").with_index("by_n").collect()]


SKEW: dict[str, Any] = {}


@app.mutation
def go_off_call(ctx: MutationCtx, name: str) -> bool:
    """Leave if someone else stays on call: reads both documents, writes one."""
    docs = ctx.db.query("doctors").collect()
    attempts = SKEW["attempts"]
    attempts[name] = attempts.get(name, 0) + 1
    if attempts[name] == 1:
        SKEW["barrier"].wait(10)  # both have read before either writes
    others = [d for d in docs if d["name"] != name and d["on_call"]]
    if not others:
        return False
    me = next(d for d in docs if d["name"] == name)
    ctx.db.patch(me["_id"], {"on_call": False})
    return True


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def run_threads(n: int, target: Any) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[0]


def test_eight_threads_of_500_increments_lose_nothing(t: TestApp) -> None:
    counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
    commits = t.runtime.db.commit_count

    def work(_: int) -> None:
        for _ in range(500):
            t.mutation(bump, {"id": counter})

    run_threads(8, work)
    assert t.query(value_of, {"id": counter}) == 4000
    assert t.runtime.db.commit_count - commits == 4000


async def test_concurrent_async_tasks_lose_nothing(storage: Storage) -> None:
    standalone = App(Schema(counters=Table({"value": int})), storage=storage)
    inc = standalone.mutation(bump.handler)
    read = standalone.query(value_of.handler)
    async with standalone.client() as client:
        counter = await client.mutation(standalone.mutation(name="make")(make_counter))

        async def work() -> None:
            for _ in range(40):
                await client.mutation(inc, {"id": counter})

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(work)
        assert await client.query(read, {"id": counter}) == 320


def make_counter(ctx: MutationCtx) -> str:
    return ctx.db.insert("counters", {"value": 0})


def test_write_skew_is_impossible(t: TestApp) -> None:
    t.run(
        lambda ctx: [ctx.db.insert("doctors", {"name": n, "on_call": True}) for n in "ab"] and None
    )
    SKEW.update(attempts={}, barrier=threading.Barrier(2))
    results: dict[str, bool] = {}
    run_threads(2, lambda i: results.update({"ab"[i]: t.mutation(go_off_call, {"name": "ab"[i]})}))
    on_call = t.run(
        lambda ctx: [d["name"] for d in ctx.db.query("doctors").collect() if d["on_call"]]
    )
    assert len(on_call) == 1, "both left: a write skew committed"
    assert sorted(results.values()) == [False, True]
    assert sum(SKEW["attempts"].values()) == 3  # exactly one re-ran, and saw the other's write


# -- serializable history of concurrent transfers -------------------------------------------

ACCOUNTS, BALANCE = 4, 50

transfers = st.lists(
    st.lists(
        st.tuples(st.integers(0, ACCOUNTS - 1), st.integers(0, ACCOUNTS - 1), st.integers(1, 40)),
        min_size=1,
        max_size=12,
    ),
    min_size=2,
    max_size=4,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans=transfers)
def test_concurrent_transfers_have_a_serial_history(
    t: TestApp, plans: list[list[tuple[int, int, int]]]
) -> None:
    t.mutation(reset_accounts, {"count": ACCOUNTS, "balance": BALANCE})
    commit_ts: dict[str, int] = {}
    remove = t.runtime.db.add_listener(lambda ts, ws: commit_ts.update(dict.fromkeys(ws.docs, ts)))
    try:

        def work(i: int) -> None:
            for j, (src, dst, amount) in enumerate(plans[i]):
                t.mutation(transfer, {"seq": i * 100 + j, "src": src, "dst": dst, "amount": amount})

        run_threads(len(plans), work)
    finally:
        remove()
    final = t.query(balances)
    assert sum(final) == ACCOUNTS * BALANCE
    assert min(final) >= 0
    receipts = t.run(lambda ctx: ctx.db.query("receipts").collect())
    assert len(receipts) == sum(len(p) for p in plans)
    # Replay in commit order: every transfer must have seen exactly the balances the
    # transfers committed before it left, so the concurrent run equals this serial one.
    state = [BALANCE] * ACCOUNTS
    for r in sorted(receipts, key=lambda r: commit_ts[r["_id"]]):
        assert (r["src_before"], r["dst_before"]) == (state[r["src"]], state[r["dst"]])
        if state[r["src"]] >= r["amount"] and r["src"] != r["dst"]:
            state[r["src"]] -= r["amount"]
            state[r["dst"]] += r["amount"]
    assert state == final


# -- interleavings at the transaction level ------------------------------------------------


def test_random_interleavings_never_lose_an_increment(t: TestApp) -> None:
    db = t.runtime.db
    space = db.space("")
    counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
    LIMIT = 3
    MAX_OPEN = 4  # open transactions hold a connection each (a pool, on PostgreSQL)

    class Interleavings(RuleBasedStateMachine):
        """Open transactions read; commits land in any order; conflicts abort."""

        def __init__(self) -> None:
            super().__init__()
            t.run(lambda ctx: ctx.db.patch(counter, {"value": 0}))
            t.run(
                lambda ctx: (
                    [ctx.db.delete(d["_id"]) for d in ctx.db.query("slots").collect()] and None
                )
            )
            self.open: list[tuple[str, Any, int]] = []
            self.committed_increments = 0
            self.history: list[int] = []

        @precondition(lambda self: len(self.open) < MAX_OPEN)
        @rule()
        def begin_increment(self) -> None:
            txn = db.transaction()
            seen = txn.get(space, counter)["value"]
            txn.patch(space, counter, {"value": seen + 1})
            self.open.append(("inc", txn, seen))

        @precondition(lambda self: len(self.open) < MAX_OPEN)
        @rule(k=st.integers(0, 4))
        def begin_claim_slot(self, k: int) -> None:
            """Insert a slot if fewer than LIMIT exist in the range (a phantom-sensitive read)."""
            txn = db.transaction()
            taken = txn.scan(
                space.table("slots"), space.table("slots").indexes["by_k"], b"", None, reverse=False
            )
            n = sum(1 for _ in taken)
            if n < LIMIT:
                txn.insert(space, "slots", {"k": k})
            self.open.append(("slot", txn, n))

        @precondition(lambda self: self.open)
        @rule(pick=st.integers(0, 100))
        def commit_one(self, pick: int) -> None:
            kind, txn, seen = self.open.pop(pick % len(self.open))
            try:
                db.commit(txn)
            except Conflict:
                return
            finally:
                txn.close()
            if kind == "inc":
                # Serial order: a committed increment read exactly the increments before it.
                assert seen == self.committed_increments
                self.committed_increments += 1

        @invariant()
        def nothing_lost_and_no_phantom(self) -> None:
            value = t.query(value_of, {"id": counter})
            assert value == self.committed_increments
            slots = t.run(lambda ctx: len(ctx.db.query("slots").collect()))
            assert slots <= LIMIT

        def teardown(self) -> None:
            for _, txn, _ in self.open:
                txn.close()

    run_state_machine_as_test(  # type: ignore[no-untyped-call,unused-ignore]
        Interleavings,
        settings=settings(max_examples=25, stateful_step_count=20, deadline=None),
    )


# -- retries and the final attempt -------------------------------------------------------------

RETRY: dict[str, Any] = {}


@app.mutation
def contended(ctx: MutationCtx, id: str) -> dict[str, Any]:
    """Reads the counter; on each optimistic attempt a rival commits to it in between."""
    seen = ctx.db.get(id)["value"]
    attempt = len(RETRY["attempts"]) + 1
    RETRY["attempts"].append(
        {
            "now": ctx.now,
            "again": ctx.now,
            "random": ctx.random.random(),
            "same_random": ctx.random is ctx.random,
        }
    )
    if attempt <= execution_module.OPTIMISTIC_ATTEMPTS:
        rival = RETRY["db"].transaction()
        space = RETRY["db"].space("")
        rival.patch(space, id, {"value": rival.get(space, id)["value"] + 100})
        RETRY["db"].commit(rival)
        rival.close()
        RETRY["clock"].advance(1.0)
    ctx.db.patch(id, {"value": seen + 1})
    return {"attempt": attempt}


def test_a_mutation_that_keeps_conflicting_completes_in_its_final_attempt(storage: Storage) -> None:
    clock = ManualClock(1000.0)
    with TestApp(app, storage=storage, clock=clock) as t:
        counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
        RETRY.update(attempts=[], db=t.runtime.db, clock=clock)
        retries = t.runtime.executor.retries
        result = t.mutation(contended, {"id": counter})
        n = execution_module.OPTIMISTIC_ATTEMPTS
        assert result == {"attempt": n + 1}
        assert t.runtime.executor.retries - retries == n
        # Every rival increment and the mutation's own one are there: nothing lost.
        assert t.query(value_of, {"id": counter}) == 100 * n + 1
        attempts = RETRY["attempts"]
        assert [a["now"] for a in attempts] == [1000.0 + i for i in range(n + 1)]
        assert all(a["now"] == a["again"] and a["same_random"] for a in attempts)
        assert len({a["random"] for a in attempts}) == n + 1  # reseeded per attempt


def test_conflict_error_names_the_tables_when_the_final_attempt_cannot_start(
    t: TestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
    db = t.runtime.db
    monkeypatch.setattr(execution_module, "OPTIMISTIC_ATTEMPTS", 1)
    monkeypatch.setattr(execution_module, "EXCLUSIVE_TIMEOUT", 0.05)
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with db._commit_lock:
            holding.set()
            release.wait(30)

    original = db.run_exclusive

    def run_exclusive_while_locked(*args: Any, **kwargs: Any) -> Any:
        threading.Thread(target=hold_lock).start()
        assert holding.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(db, "run_exclusive", run_exclusive_while_locked)
    RETRY.update(attempts=[], db=db, clock=ManualClock())
    try:
        with pytest.raises(ConflictError) as info:
            t.mutation(contended, {"id": counter})
    finally:
        release.set()
    assert info.value.tables == ["counters"]
    assert '"counters"' in str(info.value) and info.value.http_status == 409
    assert t.query(value_of, {"id": counter}) == 100  # only the rival's write


def test_read_only_mutations_and_blind_inserts_do_not_conflict(t: TestApp) -> None:
    counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
    db = t.runtime.db
    space = db.space("")
    reader, inserter = db.transaction(), db.transaction()
    reader.get(space, counter)
    inserter.insert(space, "counters", {"value": 5})
    t.mutation(bump, {"id": counter})
    db.commit(reader)
    db.commit(inserter)
    reader.close()
    inserter.close()


def test_waiting_commits_share_one_storage_transaction(t: TestApp) -> None:
    db = t.runtime.db
    before = (db.commit_count, db.batch_count)
    with db._commit_lock:
        threads = [
            threading.Thread(
                target=lambda: t.run(lambda ctx: ctx.db.insert("counters", {"value": 1}))
            )
            for _ in range(4)
        ]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 30
        while len(db._queue) < 4:
            assert time.monotonic() < deadline, "the commits never queued"
            time.sleep(0.001)
    for th in threads:
        th.join(30)
    assert (db.commit_count - before[0], db.batch_count - before[1]) == (4, 1)


SLOW: dict[str, threading.Event] = {}


@app.mutation
def slow_insert(ctx: MutationCtx) -> None:
    ctx.db.insert("counters", {"value": -1})
    SLOW["started"].set()
    assert SLOW["release"].wait(30)


def test_a_running_handler_holds_no_lock_other_commits_need(t: TestApp) -> None:
    SLOW.update(started=threading.Event(), release=threading.Event())
    slow = threading.Thread(target=lambda: t.mutation(slow_insert))
    slow.start()
    try:
        assert SLOW["started"].wait(30)
        # The slow mutation is inside its handler: others commit meanwhile, unhindered.
        counter = t.run(lambda ctx: ctx.db.insert("counters", {"value": 0}))
        assert t.mutation(bump, {"id": counter}) == 1
    finally:
        SLOW["release"].set()
        slow.join(30)
    values = sorted(d["value"] for d in t.run(lambda ctx: ctx.db.query("counters").collect()))
    assert values == [-1, 1]


def test_a_patch_keeping_the_indexed_fields_still_conflicts_with_an_index_read(
    t: TestApp,
) -> None:
    # The patch keeps the document's entries (no indexed field changed) but its keys still
    # count as written: a transaction that read the document through the index conflicts.
    db = t.runtime.db
    space = db.space("")
    info = space.table("accounts")
    doc = t.run(lambda ctx: ctx.db.insert("accounts", {"n": 7, "balance": 10}))
    reader = db.transaction()
    seen = [
        d["balance"] for _, d in reader.scan(info, info.indexes["by_n"], b"", None, reverse=False)
    ]
    assert seen == [10]
    writer = db.transaction()
    writer.patch(space, doc, {"balance": 11})
    [write] = writer.commit_writes()[0]
    assert write.removed_entries == [] and write.added_entries == []
    db.commit(writer)
    writer.close()
    reader.insert(space, "counters", {"value": 0})
    with pytest.raises(Conflict):
        db.commit(reader)
    reader.close()
    assert t.run(lambda ctx: ctx.db.get(doc)["balance"]) == 11
