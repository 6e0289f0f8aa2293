"""Pagination on every backend: pages never skip or repeat a document that stayed in range."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import App, InvalidArgumentError, MutationCtx, QueryCtx, Schema, Table
from core.database.pagination import Page, decode_cursor, encode_cursor
from core.storage.base import Storage
from core.testing import TestApp

LO, HI = 10, 90
"""The paged range: ranks in [LO, HI)."""

app = App(Schema(items=Table({"rank": int}).index("by_rank", ["rank"])))


@app.query
def page(ctx: QueryCtx, cursor: str | None, n: int, order: str = "asc") -> dict[str, Any]:
    p = (
        ctx.db.query("items")
        .with_index("by_rank", lambda q: q.gte("rank", LO).lt("rank", HI))
        .order(order)
        .paginate(cursor, n)
    )
    return {
        "ids": [d["_id"] for d in p.page],
        "ranks": [d["rank"] for d in p.page],
        "cursor": p.continue_cursor,
        "done": p.is_done,
    }


@app.mutation
def insert(ctx: MutationCtx, ranks: list[int]) -> list[str]:
    return [ctx.db.insert("items", {"rank": r}) for r in ranks]


@app.mutation
def delete(ctx: MutationCtx, ids: list[str]) -> None:
    for doc_id in ids:
        if ctx.db.get(doc_id) is not None:
            ctx.db.delete(doc_id)


@app.mutation
def clear(ctx: MutationCtx) -> None:
    for doc in ctx.db.query("items").collect():
        ctx.db.delete(doc["_id"])


@pytest.fixture
def t(storage: Storage) -> Iterator[TestApp]:
    with TestApp(app, storage=storage) as harness:
        yield harness


def in_range(t: TestApp) -> dict[str, int]:
    docs = t.run(lambda ctx: ctx.db.query("items").collect())
    return {d["_id"]: d["rank"] for d in docs if LO <= d["rank"] < HI}


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_cover_the_range_once_in_order(t: TestApp, order: str) -> None:
    # Ranks LO and HI - 1 stay free, to be inserted past the end later.
    t.mutation(
        insert, {"ranks": [r % 100 for r in range(0, 300, 7) if r % 100 not in (LO, HI - 1)]}
    )
    expected = sorted(in_range(t).values(), reverse=order == "desc")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        p = t.query(page, {"cursor": cursor, "n": 4, "order": order})
        assert len(p["ranks"]) <= 4
        seen += p["ranks"]
        cursor, pages = p["cursor"], pages + 1
        if p["done"]:
            break
    assert seen == expected and pages >= len(expected) // 4
    # A finished cursor still reads later inserts past it, and nothing before it.
    t.mutation(insert, {"ranks": [HI - 1 if order == "asc" else LO, 50]})
    after = t.query(page, {"cursor": cursor, "n": 10, "order": order})
    assert after["ranks"] == [HI - 1 if order == "asc" else LO] and after["done"]


def test_an_empty_range_is_done_at_once(t: TestApp) -> None:
    p = t.query(page, {"cursor": None, "n": 5})
    assert p == {"ids": [], "ranks": [], "cursor": p["cursor"], "done": True}
    t.mutation(insert, {"ranks": [20]})
    assert t.query(page, {"cursor": p["cursor"], "n": 5})["ranks"] == [20]


def test_cursors_are_checked() -> None:
    assert decode_cursor(encode_cursor(None, 3), 3) is None
    assert decode_cursor(encode_cursor(b"\x10abc", 3), 3) == b"\x10abc"
    with pytest.raises(InvalidArgumentError, match="another index"):
        decode_cursor(encode_cursor(b"\x10abc", 3), 4)
    for bad in ["***", "AAAA", "x"]:
        with pytest.raises(InvalidArgumentError, match="not a cursor"):
            decode_cursor(bad, 3)
    assert Page(page=[], continue_cursor="", is_done=True).is_done


def test_a_cursor_of_another_query_is_refused(t: TestApp) -> None:
    t.mutation(insert, {"ranks": [20, 30]})
    other = t.run(lambda ctx: ctx.db.query("items").paginate(None, 1).continue_cursor)
    with pytest.raises(InvalidArgumentError, match="another index"):
        t.query(page, {"cursor": other, "n": 1})


def check_pages(
    pages: list[list[str]], start: set[str], deleted: set[str], inserted: set[str]
) -> None:
    """No document repeats; every document in range from start to end was seen."""
    seen = [doc_id for p in pages for doc_id in p]
    assert len(seen) == len(set(seen)), "a document was repeated"
    stayed = start - deleted
    assert stayed <= set(seen), f"skipped {len(stayed - set(seen))} document(s)"
    assert set(seen) <= start | inserted


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_paging_while_another_thread_inserts_and_deletes(t: TestApp, order: str) -> None:
    rng = random.Random(7)
    start_ids = t.mutation(insert, {"ranks": [rng.randrange(100) for _ in range(120)]})
    start = set(in_range(t))
    deleted: set[str] = set()
    inserted: set[str] = set()
    stop = threading.Event()
    writes = threading.Semaphore(0)
    errors: list[BaseException] = []

    def writer() -> None:
        wrng = random.Random(11)
        pool = list(start_ids)
        try:
            while not stop.is_set():
                new = t.mutation(insert, {"ranks": [wrng.randrange(100) for _ in range(3)]})
                inserted.update(new)
                pool += new
                victims = wrng.sample(pool, 2)
                t.mutation(delete, {"ids": victims})
                deleted.update(victims)
                writes.release()
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
            writes.release()

    thread = threading.Thread(target=writer)
    thread.start()
    pages: list[list[str]] = []
    cursor = None
    try:
        while True:
            # Wait for at least one write between pages, so every page sees a changed table.
            assert writes.acquire(timeout=30)
            p = t.query(page, {"cursor": cursor, "n": 5, "order": order})
            pages.append(p["ids"])
            cursor = p["cursor"]
            if p["done"]:
                break
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert len(pages) > 5
    check_pages(pages, start, deleted, inserted)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("page"), st.integers(1, 6)),
        st.tuples(st.just("insert"), st.lists(st.integers(0, 99), min_size=1, max_size=4)),
        st.tuples(st.just("delete"), st.integers(0, 10_000)),
    ),
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    initial=st.lists(st.integers(0, 99), max_size=30),
    script=steps,
    order=st.sampled_from(["asc", "desc"]),
)
def test_any_interleaving_of_pages_and_writes(
    t: TestApp, initial: list[int], script: list[Any], order: str
) -> None:
    t.mutation(clear)
    if initial:
        t.mutation(insert, {"ranks": initial})
    start = set(in_range(t))
    alive = list(in_range(t))
    deleted: set[str] = set()
    inserted: set[str] = set()
    pages: list[list[str]] = []
    cursor = None
    done = False
    for step in [*script, *[("page", 100)] * 3]:
        if step[0] == "page" and not done:
            p = t.query(page, {"cursor": cursor, "n": step[1], "order": order})
            pages.append(p["ids"])
            cursor, done = p["cursor"], p["done"]
        elif step[0] == "insert":
            new = t.mutation(insert, {"ranks": step[1]})
            inserted.update(new)
            alive += new
        elif step[0] == "delete" and alive:
            victim = alive.pop(step[1] % len(alive))
            t.mutation(delete, {"ids": [victim]})
            deleted.add(victim)
    assert done
    check_pages(pages, start, deleted, inserted)
