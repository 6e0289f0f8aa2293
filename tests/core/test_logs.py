from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from core import ActionCtx, App, AppError, QueryCtx, Schema
from core.logs import MAX_LINES, CallLog, call_log_of, read_records
from core.testing import TestApp

app = App(Schema())
log = logging.getLogger("test_logs_app")


@app.query
def chatty(ctx: QueryCtx, n: int) -> int:
    for i in range(n):
        print(f"line {i}")
    return n


@app.action
async def talk(ctx: ActionCtx, who: str) -> str:
    for i in range(3):
        print(f"{who} {i}", end="\n" if i % 2 else "")
        if i % 2 == 0:
            print()
        log.warning("%s warned", who)
        await anyio.lowlevel.checkpoint()
    return who


@app.action
async def both(ctx: ActionCtx) -> list[str]:
    out: list[str] = []

    async def one(who: str) -> None:
        out.append(await ctx.run_action(talk, {"who": who}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    return sorted(out)


@app.query
def refuse(ctx: QueryCtx) -> None:
    print("about to refuse")
    raise AppError("no")


@app.query
def crash(ctx: QueryCtx) -> None:
    raise ValueError("bug")


@pytest.fixture
def t() -> Iterator[TestApp]:
    with TestApp(app) as t:
        t.runtime.start_services()
        calls = call_log_of(t.runtime)
        deadline = time.monotonic() + 10
        while not calls.capturing:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        try:
            yield t
        finally:
            t.runtime.stop_services()


def records(t: TestApp) -> list[dict[str, Any]]:
    calls: CallLog = call_log_of(t.runtime)
    calls.flush()
    return read_records(t.runtime.executor, limit=1000)


def test_each_call_is_recorded_with_its_output_and_outcome(t: TestApp) -> None:
    t.query(chatty, {"n": 2})
    with pytest.raises(AppError):
        t.query(refuse)
    with pytest.raises(ValueError, match="bug"):
        t.query(crash)
    got = records(t)
    assert [(r["path"], r["kind"], r["outcome"], r["error"], r["lines"]) for r in got] == [
        (chatty.path, "query", "success", None, ["line 0", "line 1"]),
        (refuse.path, "query", "app_error", "AppError: 'no'", ["about to refuse"]),
        (crash.path, "query", "error", "ValueError: bug", []),
    ]
    assert all(r["duration_ms"] >= 0 and r["component"] == "" for r in got)


def test_concurrent_calls_keep_their_own_lines(t: TestApp) -> None:
    # Nested run_action calls are part of their caller's record; the two callers below run
    # at once and interleave their prints.
    t.action(talk, {"who": "x"})
    t.action(both)
    got = {r["path"]: r for r in records(t)}
    assert got[talk.path]["lines"] == [
        "x 0",
        "WARNING test_logs_app: x warned",
        "x 1",
        "WARNING test_logs_app: x warned",
        "x 2",
        "WARNING test_logs_app: x warned",
    ]
    lines = got[both.path]["lines"]
    assert sorted(lines) == sorted(
        [f"{w} {i}" for w in "ab" for i in range(3)]
        + [f"WARNING test_logs_app: {w} warned" for w in "ab" for _ in range(3)]
    )


def test_output_is_capped_per_call(t: TestApp) -> None:
    t.query(chatty, {"n": MAX_LINES + 5})
    (rec,) = records(t)
    assert len(rec["lines"]) == MAX_LINES + 1
    assert rec["lines"][-1] == "... 5 more line(s)"
