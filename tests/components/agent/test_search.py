"""Message search: text, vector and hybrid, over a thread or all a user's threads."""

from __future__ import annotations

from typing import Any

import pytest

from components.agent import Agent, ContextOptions, component
from components.models import HashingEmbedder, ScriptedChatModel
from core import ActionCtx, App, MutationCtx, QueryCtx


def make_app(model: ScriptedChatModel) -> tuple[App, Agent, dict[str, Any]]:
    app = App()
    agent = Agent(
        app.use(component, name="agent"),
        name="s",
        model=model,
        embedder=HashingEmbedder(dimensions=256),
        context=ContextOptions(
            recent_messages=1, search_limit=2, search_mode="hybrid", search_other_threads=True
        ),
    )

    @app.mutation
    def seed(ctx: MutationCtx) -> list[str]:
        first = agent.create_thread(ctx, user_id="ada")
        second = agent.create_thread(ctx, user_id="ada")
        other = agent.create_thread(ctx, user_id="bob")
        agent.save_message(ctx, thread_id=first, text="my cat is called Miso")
        agent.save_message(ctx, thread_id=first, text="the weather is grey today")
        agent.save_message(ctx, thread_id=other, text="bob has a cat called Rex")
        return [first, second, other]

    @app.action
    async def embed_all(ctx: ActionCtx, thread_id: str) -> None:
        from components.agent.search import embed_messages

        page = await agent.list_messages(ctx, thread_id=thread_id)
        await embed_messages(agent, ctx, page.page)

    @app.action
    async def find(
        ctx: ActionCtx,
        query: str,
        mode: str,
        thread_id: str | None = None,
        user_id: str | None = None,
    ) -> list[str]:
        how: Any = mode
        hits = await agent.search_messages(
            ctx, query=query, thread_id=thread_id, user_id=user_id, mode=how
        )
        return [h["text"] for h in hits]

    @app.query
    def find_text(ctx: QueryCtx, query: str, user_id: str) -> list[str]:
        return [h["text"] for h in agent.search_messages(ctx, query=query, user_id=user_id)]

    @app.action
    async def remember(ctx: ActionCtx, thread_id: str, texts: list[str]) -> list[str]:
        first = await agent.save_message(ctx, thread_id=thread_id, text=texts[0])
        rest = await agent.save_messages(
            ctx, thread_id=thread_id, messages=[{"role": "user", "text": t} for t in texts[1:]]
        )
        return [first, *rest]

    @app.action
    async def ask(ctx: ActionCtx, thread_id: str, text: str) -> str:
        return (await agent.generate_text(ctx, thread_id=thread_id, prompt=text)).text

    return (
        app,
        agent,
        {
            "seed": seed,
            "embed_all": embed_all,
            "remember": remember,
            "find": find,
            "find_text": find_text,
            "ask": ask,
        },
    )


@pytest.mark.parametrize("mode", ["text", "vector", "hybrid"])
def test_search_modes_stay_in_scope(make_test_app: Any, mode: str) -> None:
    app, _, r = make_app(ScriptedChatModel([]))
    t = make_test_app(app)
    first, _, other = t.mutation(r["seed"])
    for thread_id in (first, other):
        t.action(r["embed_all"], {"thread_id": thread_id})
    hits = t.action(r["find"], {"query": "cat called", "mode": mode, "user_id": "ada"})
    assert hits[0] == "my cat is called Miso"
    assert "bob has a cat called Rex" not in hits
    hits = t.action(r["find"], {"query": "cat called", "mode": mode, "thread_id": other})
    assert hits[0] == "bob has a cat called Rex"
    assert t.query(r["find_text"], {"query": "weather", "user_id": "ada"}) == [
        "the weather is grey today"
    ]


def test_context_includes_search_hits_from_other_threads(make_test_app: Any) -> None:
    model = ScriptedChatModel(["Miso!"])
    app, _, r = make_app(model)
    t = make_test_app(app)
    first, second, _ = t.mutation(r["seed"])
    t.action(r["embed_all"], {"thread_id": first})
    assert t.action(r["ask"], {"thread_id": second, "text": "what is my cat called?"}) == "Miso!"
    texts = [m.text for m in model.requests[0].messages]
    assert "my cat is called Miso" in texts
    assert "bob has a cat called Rex" not in texts
    assert texts[-1] == "what is my cat called?"


def test_messages_saved_from_an_action_are_embedded_at_once(make_test_app: Any) -> None:
    app, _, r = make_app(ScriptedChatModel([]))
    t = make_test_app(app)
    _, second, _ = t.mutation(r["seed"])  # saved from a mutation: not embedded yet
    assert t.action(r["find"], {"query": "cat", "mode": "vector", "thread_id": second}) == []
    texts = ["my dog is called Pip", "the dog likes the sea"]
    ids = t.action(r["remember"], {"thread_id": second, "texts": texts})
    assert len(ids) == 2
    # No generation ran and nothing else embedded them: the save did.
    hits = t.action(r["find"], {"query": "dog called", "mode": "vector", "thread_id": second})
    assert hits[0] == "my dog is called Pip" and set(hits) == set(texts)
