"""The ordering rules (reference A3.1 / A5), pure and through the component."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from components.agent import Agent, OrderError, component
from components.agent.ordering import MAX_ORDER, Position, place
from components.models import ScriptedChatModel
from core import App, MutationCtx, QueryCtx
from core.storage.base import Storage


def positions(
    roles: list[str], existing: list[tuple[int, int]], **kw: Any
) -> list[tuple[int, int]]:
    last = Position(order=max(existing)[0], step_order=max(existing)[1]) if existing else None

    def step_at(order: int) -> int | None:
        steps = [s for o, s in existing if o == order]
        return max(steps) if steps else None

    return [(p.order, p.step_order) for p in place(roles, last=last, last_step_at=step_at, **kw)]


def test_user_messages_start_turns() -> None:
    assert positions(["user"], []) == [(0, 0)]
    assert positions(["user"], [(0, 0)]) == [(1, 0)]
    assert positions(["user", "assistant"], []) == [(0, 0), (0, 1)]
    assert positions(["assistant"], [(0, 0)]) == [(0, 1)]


def test_a_lone_assistant_appends_to_the_latest_turn() -> None:
    assert positions(["assistant"], []) == [(0, 0)]
    assert positions(["assistant"], [(0, 0), (0, 1), (1, 0)]) == [(1, 1)]


def test_explicit_orders() -> None:
    assert positions(["assistant"], [(0, 0)], order=1) == [(1, 0)]
    assert positions(["assistant"], [(0, 0), (1, 0)], order=1) == [(1, 1)]
    assert positions(["assistant", "user"], [(0, 0), (0, 1), (1, 0)], order=0) == [(0, 2), (2, 0)]
    assert positions(["assistant", "user"], [(0, 0)], order=5) == [(5, 0), (6, 0)]


def test_next_order() -> None:
    assert positions(["assistant"], [(0, 0)], order="next") == [(1, 0)]
    assert positions(["user"], [], order="next") == [(0, 0)]


def test_prompt_anchors() -> None:
    assert positions(["user"], [(0, 0)], prompt=Position(order=0, step_order=0)) == [(1, 0)]
    assert positions(["assistant"], [(0, 0)], prompt=Position(order=0, step_order=0)) == [(0, 1)]
    batch = positions(
        ["assistant", "tool", "user"],
        [(0, 0), (1, 0), (1, 1)],
        prompt=Position(order=0, step_order=0),
    )
    assert batch == [(0, 1), (0, 2), (2, 0)]


@pytest.mark.parametrize("bad", [-1, 1.5, MAX_ORDER, True])
def test_bad_orders(bad: Any) -> None:
    with pytest.raises(OrderError, match="non-negative safe integer"):
        positions(["assistant"], [], order=bad)


def test_order_and_prompt_together() -> None:
    with pytest.raises(OrderError, match="cannot both"):
        positions(["user"], [(0, 0)], order=0, prompt=Position(order=0, step_order=0))


def test_overflow() -> None:
    with pytest.raises(OrderError, match="largest safe integer"):
        positions(["user"], [(MAX_ORDER, 0)])
    with pytest.raises(OrderError, match="largest safe integer"):
        positions(["assistant"], [(0, MAX_ORDER)])


def make_app(storage: Any = None) -> tuple[App, Agent, dict[str, Any]]:
    app = App(storage=storage)
    agent = Agent(app.use(component, name="agent"), name="a", model=ScriptedChatModel([]))

    @app.mutation
    def new_thread(ctx: MutationCtx) -> str:
        return agent.create_thread(ctx, user_id="u")

    @app.mutation
    def save(
        ctx: MutationCtx,
        thread_id: str,
        messages: list[dict[str, Any]],
        order: int | str | None = None,
        prompt_message_id: str | None = None,
    ) -> list[str]:
        return agent.save_messages(
            ctx,
            thread_id=thread_id,
            messages=messages,
            order=order,
            prompt_message_id=prompt_message_id,
        )

    @app.query
    def listing(ctx: QueryCtx, thread_id: str) -> list[tuple[int, int]]:
        page = agent.list_messages(ctx, thread_id=thread_id)
        return [(m["order"], m["step_order"]) for m in page.page]

    return app, agent, {"new_thread": new_thread, "save": save, "listing": listing}


def msgs(*roles: str) -> list[dict[str, Any]]:
    return [{"role": role, "text": role} for role in roles]


def test_component_batches_follow_the_rules(make_test_app: Any) -> None:
    app, _, r = make_app()
    t = make_test_app(app)
    tid = t.mutation(r["new_thread"])
    [prompt] = t.mutation(r["save"], {"thread_id": tid, "messages": msgs("user")})
    t.mutation(r["save"], {"thread_id": tid, "messages": msgs("user")})
    t.mutation(
        r["save"],
        {
            "thread_id": tid,
            "messages": msgs("assistant", "tool", "user"),
            "prompt_message_id": prompt,
        },
    )
    assert t.query(r["listing"], {"thread_id": tid}) == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]
    t.mutation(r["save"], {"thread_id": tid, "messages": msgs("assistant"), "order": 1})
    t.mutation(r["save"], {"thread_id": tid, "messages": msgs("assistant"), "order": "next"})
    assert t.query(r["listing"], {"thread_id": tid})[-3:] == [(1, 1), (2, 0), (3, 0)]
    with pytest.raises(OrderError):
        t.mutation(r["save"], {"thread_id": tid, "messages": msgs("user"), "order": -1})
    with pytest.raises(OrderError):
        t.mutation(
            r["save"],
            {"thread_id": tid, "messages": msgs("user"), "order": 0, "prompt_message_id": prompt},
        )


def test_concurrent_saves_never_collide(storage: Storage) -> None:
    app, _, r = make_app(storage)
    with app.sync_client(runtime=False) as client:
        tid = client.mutation(r["new_thread"], {})
        errors: list[BaseException] = []

        def save(n: int) -> None:
            try:
                for _ in range(3):
                    client.mutation(r["save"], {"thread_id": tid, "messages": msgs("user")})
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=save, args=(n,)) for n in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        listing = client.query(r["listing"], {"thread_id": tid})
        assert sorted(o for o, _ in listing) == list(range(24))

        # Concurrent explicit-order saves at one turn get distinct step orders.
        def at_order() -> None:
            client.mutation(
                r["save"], {"thread_id": tid, "messages": msgs("assistant"), "order": 3}
            )

        workers = [threading.Thread(target=at_order) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        steps = [s for o, s in client.query(r["listing"], {"thread_id": tid}) if o == 3]
        assert steps == [0, 1, 2, 3, 4]


def test_update_delete_and_cross_thread_search(make_test_app: Any) -> None:
    app, agent, r = make_app()

    @app.mutation
    def edit(ctx: MutationCtx, message_id: str) -> str:
        return agent.update_message(ctx, message_id, text="edited", status="failed")["status"]

    @app.mutation
    def drop(ctx: MutationCtx, ids: list[str]) -> list[str]:
        return agent.delete_messages(ctx, ids)

    @app.query
    def search(ctx: QueryCtx, thread_id: str, before: int) -> list[str]:
        hits = agent._call(
            ctx,
            "query",
            "search_text",
            {
                "query": "apples",
                "user_id": "u",
                "thread_id": None,
                "limit": 10,
                "before_order": before,
                "target_thread_id": thread_id,
            },
        )
        return sorted(h["text"] for h in hits)

    t = make_test_app(app)
    tid = t.mutation(r["new_thread"])
    other = t.mutation(r["new_thread"])
    ids = t.mutation(
        r["save"],
        {
            "thread_id": tid,
            "messages": [
                {"role": "user", "text": "apples one"},
                {"role": "user", "text": "apples two"},
            ],
        },
    )
    t.mutation(
        r["save"], {"thread_id": other, "messages": [{"role": "user", "text": "apples"}] * 3}
    )
    assert t.mutation(edit, {"message_id": ids[0]}) == "failed"
    # Only successful messages are hits; another thread's hits ignore the target's order,
    # the target thread's from that order on are left out.
    assert t.query(search, {"thread_id": tid, "before": 2}) == ["apples"] * 3 + ["apples two"]
    assert t.query(search, {"thread_id": tid, "before": 1}) == ["apples"] * 3
    assert t.query(search, {"thread_id": other, "before": 0}) == ["apples two"]
    assert t.mutation(drop, {"ids": [ids[1], ids[1], "nope"]}) == [ids[1]]
    assert t.query(r["listing"], {"thread_id": tid}) == [(0, 0)]
