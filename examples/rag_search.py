"""Search a folder of Markdown or text files from the command line, in all three modes.

    pip install -e '.[local-embeddings]'
    python examples/rag_search.py "how do I switch to postgres?"
    python examples/rag_search.py --docs ~/notes --mode vector "meeting about the budget"

It ingests every ``*.md`` and ``*.txt`` file under ``--docs`` (default: the chatbot's
documents, ``examples/chatbot/docs``) into a rag namespace, with a progress bar, then runs
the query in ``text`` (BM25), ``vector`` (embeddings) and ``hybrid`` (both, fused) mode, or
only the ``--mode`` given. The embedder is the local MiniLM model when the
``local-embeddings`` extra is installed, else the lexical ``HashingEmbedder``
(``--embedder`` chooses). Without ``CAPSULE_DB_URL`` the database is a fresh SQLite file in
a temporary folder; with one, files already ingested unchanged are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from components.models import Embedder, HashingEmbedder
from components.rag import RAG
from components.rag import component as rag_component
from core import ActionCtx, App

DOCS = Path(__file__).resolve().parent / "chatbot" / "docs"
MODES = ("text", "vector", "hybrid")
NAMESPACE = "docs"


def make_embedder(choice: str) -> Embedder:
    """The embedder ``--embedder`` names (``auto``: local when installed)."""
    if choice in ("auto", "local"):
        from components.models.local import LocalEmbedder, local_embeddings_available

        if local_embeddings_available():
            return LocalEmbedder()
        if choice == "local":
            sys.exit("The local embedder needs the extra: pip install -e '.[local-embeddings]'")
    return HashingEmbedder(dimensions=256)


def build(embedder: Embedder) -> tuple[App, RAG]:
    app = App()
    return app, RAG(app.use(rag_component, name="docs"), embedder=embedder)


def progress(done: int, total: int, label: str, *, width: int = 30) -> None:
    """Draw a one-line progress bar (on stderr, redrawn in place)."""
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    print(f"\r  [{bar}] {done}/{total} {label[:40]:<40}", end=end, file=sys.stderr, flush=True)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".md", ".txt") and p.is_file())


def title_of(path: Path, text: str) -> str:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.lstrip("# ").strip() if first.startswith("#") else path.stem


def register(app: App, rag: RAG) -> tuple[Any, Any]:
    @app.action
    async def ingest(ctx: ActionCtx, key: str, title: str, text: str) -> bool:
        added = await rag.add(ctx, namespace=NAMESPACE, key=key, title=title, text=text)
        return added.created

    @app.action
    async def search(ctx: ActionCtx, query: str, mode: str, limit: int) -> list[dict[str, Any]]:
        found = await rag.search(ctx, namespace=NAMESPACE, query=query, mode=mode, limit=limit)
        titles = {e.entry_id: e.title or e.key for e in found.entries}
        return [
            {"title": titles[r.entry_id], "score": r.score, "text": " ".join(r.content)}
            for r in found.results
        ]

    return ingest, search


def ingest_folder(client: Any, ingest: Any, folder: Path) -> tuple[int, int]:
    """Add every file (a progress bar as it goes); returns (added, unchanged)."""
    files = files_under(folder)
    if not files:
        sys.exit(f"No .md or .txt files under {folder}.")
    added = unchanged = 0
    progress(0, len(files), "")
    for n, path in enumerate(files, 1):
        text = path.read_text(encoding="utf-8")
        if text.strip():
            key = str(path.relative_to(folder))
            created = client.action(
                ingest, {"key": key, "title": title_of(path, text), "text": text}
            )
            added, unchanged = added + created, unchanged + (not created)
        progress(n, len(files), path.name)
    return added, unchanged


def show(results: list[dict[str, Any]], mode: str) -> None:
    print(f"\n== {mode} ==")
    if not results:
        print("  (nothing found)")
    for n, hit in enumerate(results, 1):
        snippet = " ".join(hit["text"].split())
        snippet = snippet if len(snippet) <= 160 else snippet[:157] + "..."
        print(f"  {n}. [{hit['score']:.3f}] {hit['title']}")
        print(f"     {snippet}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="what to search for")
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of .md / .txt files")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--embedder", choices=("auto", "local", "hashing"), default="auto")
    args = parser.parse_args(argv)

    embedder = make_embedder(args.embedder)
    app, rag = build(embedder)
    ingest, search = register(app, rag)
    with tempfile.TemporaryDirectory(prefix="capsule-rag-") as folder:
        if not os.environ.get("CAPSULE_DB_URL"):
            os.environ["CAPSULE_DB_URL"] = f"sqlite:///{os.path.join(folder, 'rag.db')}"
        print(f"Database: {os.environ['CAPSULE_DB_URL']}")
        print(f"Embedder: {embedder.model_id} ({embedder.dimensions} dimensions)")
        with app.sync_client() as client:
            print(f"Ingesting {args.docs} ...", file=sys.stderr)
            start = time.perf_counter()
            added, unchanged = ingest_folder(client, ingest, args.docs)
            took = time.perf_counter() - start
            print(f"Ingested: {added} added, {unchanged} unchanged in {took:.1f} s")
            print(f"Query: {args.query!r}")
            for mode in MODES if args.mode == "all" else (args.mode,):
                found = client.action(
                    search, {"query": args.query, "mode": mode, "limit": args.limit}
                )
                show(found, mode)


if __name__ == "__main__":
    main()
