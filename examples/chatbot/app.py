"""A documentation chatbot: an agent with rag over a folder of Markdown, in the browser.

    pip install -e '.[local-embeddings]'
    python examples/chatbot/app.py            # then open http://127.0.0.1:8000

On start it ingests the Markdown files in ``docs/`` (beside this file, or ``--docs DIR``)
into a rag namespace, then serves a single-page chat UI (``index.html``) and the agent's
endpoints (``/agents/docs/...``, ``/v1/chat/completions``) from one Starlette app.

With ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set, the agent uses that model
(``CHATBOT_MODEL``, default ``gpt-4o-mini``) with a ``search_docs`` tool. Without them it
uses ``RetrievalResponder``: it searches the docs and answers with the passages it found,
saying that no language model wrote the answer.

The reply streams over Server-Sent Events; the Stop button stops it for every client, and
reloading the page mid-reply picks the reply up where it is (the stream is persisted).
The database is ``CAPSULE_DB_URL`` (default: ``chatbot.db`` in the working directory).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import uvicorn
from responder import RetrievalResponder  # beside this file (the script's folder)
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route

from components.agent import Agent, tool
from components.agent import component as agent_component
from components.models import ChatModel, Embedder, HashingEmbedder
from components.rag import RAG
from components.rag import component as rag_component
from core import ActionCtx, App
from core.server import create_asgi_app

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"
NAMESPACE = "docs"
INSTRUCTIONS = (
    "You answer questions about Capsule from its documentation. Always call search_docs "
    "first, answer only from what it returns, and say so when the docs do not cover it."
)


def choose_model(delay: float) -> ChatModel:
    """OpenAI (or a compatible server) when configured, else the retrieval-only responder."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        from components.models import OpenAIChatModel

        return OpenAIChatModel(os.environ.get("CHATBOT_MODEL", "gpt-4o-mini"))
    return RetrievalResponder(delay=delay)


def choose_embedder(choice: str = "auto") -> Embedder:
    """The local MiniLM model when installed (semantic, offline), else hashing (lexical)."""
    from components.models.local import LocalEmbedder, local_embeddings_available

    if choice == "hashing" or (choice == "auto" and not local_embeddings_available()):
        return HashingEmbedder()
    return LocalEmbedder()


def read_docs(folder: Path) -> list[tuple[str, str]]:
    """``(file name, text)`` of each Markdown file in ``folder``."""
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.md"))]


def build(
    *, folder: Path = DOCS, delay: float = 0.02, embedder: Embedder | None = None
) -> tuple[App, Any, Agent]:
    """The Capsule app: a rag instance, the agent with its search tool, and ``ingest``."""
    app = App()
    docs = RAG(app.use(rag_component, name="docs"), embedder=embedder or choose_embedder())

    @tool
    async def search_docs(ctx: ActionCtx, query: str) -> str:
        """Search Capsule's documentation; returns the most relevant passages."""
        found = await docs.search(ctx, namespace=NAMESPACE, query=query, limit=3)
        return found.text

    agent = Agent(
        app.use(agent_component, name="agent"),
        name="docs",
        model=choose_model(delay),
        instructions=INSTRUCTIONS,
        tools=[search_docs],
        stream_throttle=0.05,
    )
    agent.expose()

    @app.action
    async def ingest(ctx: ActionCtx) -> dict[str, int]:
        """(Re)ingest the docs folder; files that did not change are skipped."""
        added = unchanged = 0
        for name, text in await anyio.to_thread.run_sync(read_docs, folder):
            result = await docs.add(ctx, namespace=NAMESPACE, key=name, text=text)
            added, unchanged = added + result.created, unchanged + (not result.created)
        return {"added": added, "unchanged": unchanged}

    return app, ingest, agent


def create_app(capsule: App) -> Starlette:
    """The web app: the chat page at ``/`` and Capsule's endpoints beside it."""
    api = create_asgi_app(capsule)

    async def index(request: Any) -> FileResponse:
        return FileResponse(HERE / "index.html", headers={"cache-control": "no-store"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with api.router.lifespan_context(api):  # Capsule's runtime opens and closes
            yield

    return Starlette(routes=[Route("/", index), Mount("/", app=api)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A documentation chatbot on Capsule.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of Markdown files")
    parser.add_argument("--delay", type=float, default=0.02, help="offline streaming pace (s)")
    parser.add_argument(
        "--embedder",
        choices=("auto", "local", "hashing"),
        default="auto",
        help="auto: the local MiniLM model when installed, else hashing",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("CAPSULE_DB_URL", "sqlite:///chatbot.db")

    embedder = choose_embedder(args.embedder)
    capsule, ingest, agent = build(folder=args.docs, delay=args.delay, embedder=embedder)
    print(f"Model: {type(agent.model).__name__}; embedder: {embedder.model_id}")
    print(f"Database: {os.environ['CAPSULE_DB_URL']}")
    with capsule.sync_client() as client:
        counts = client.action(ingest, {})
    print(f"Docs in {args.docs}: {counts['added']} added, {counts['unchanged']} unchanged")
    print(f"Chat at http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(capsule), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
