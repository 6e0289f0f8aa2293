"""Capsule quick start: a small tasks app, run offline on the embedded SQLite default.

    pip install -e . && python examples/quickstart.py

It declares a schema with an index, inserts tasks through a mutation, reads them back through
an indexed query, pages through them, and shows an ``AppError`` reaching the caller with its
data. Without ``CAPSULE_DB_URL`` it uses a fresh SQLite file in a temporary folder, so every run
starts from an empty database; set ``CAPSULE_DB_URL=sqlite:///tasks.db`` to keep the data.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any, Literal

from pydantic import BaseModel

from core import App, AppError, Id, MutationCtx, QueryCtx, Schema, Table


class Task(BaseModel):
    text: str
    owner: str
    priority: int = 0
    done: bool = False


# ``Id[Literal["tasks"]]`` (or just ``Id["tasks"]``) is an id that must belong to ``tasks``.
schema = Schema(
    tasks=Table(Task).index("by_owner", ["owner", "priority"]).index("by_done", ["done"]),
)
app = App(schema)


@app.mutation
def create(ctx: MutationCtx, text: str, owner: str, priority: int = 0) -> Id[Literal["tasks"]]:
    """Add a task; refuse an empty one with an AppError the caller can inspect."""
    if not text.strip():
        raise AppError({"code": "empty_text", "owner": owner})
    return ctx.db.insert("tasks", {"text": text, "owner": owner, "priority": priority})


@app.mutation
def complete(ctx: MutationCtx, id: Id[Literal["tasks"]]) -> None:
    """Mark a task done."""
    ctx.db.patch(id, {"done": True})


@app.query
def for_owner(ctx: QueryCtx, owner: str, min_priority: int = 0) -> list[dict[str, Any]]:
    """An owner's tasks with at least ``min_priority``, most important first."""
    return (
        ctx.db.query("tasks")
        .with_index("by_owner", lambda q: q.eq("owner", owner).gte("priority", min_priority))
        .order("desc")
        .collect()
    )


@app.query
def open_tasks(ctx: QueryCtx, cursor: str | None = None, page_size: int = 3) -> dict[str, Any]:
    """One page of the tasks not done yet, oldest first."""
    page = (
        ctx.db.query("tasks")
        .with_index("by_done", lambda q: q.eq("done", False))
        .paginate(cursor, page_size)
    )
    return {
        "texts": [t["text"] for t in page.page],
        "cursor": page.continue_cursor,
        "done": page.is_done,
    }


def main() -> None:
    # Capsule logs every call (DEBUG) and every failure (WARNING) through ``logging``.
    logging.basicConfig(stream=sys.stdout, format="   [log] %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="capsule-quickstart-") as folder:
        if not os.environ.get("CAPSULE_DB_URL"):
            os.environ["CAPSULE_DB_URL"] = f"sqlite:///{os.path.join(folder, 'tasks.db')}"
        print(f"Database: {os.environ['CAPSULE_DB_URL']}")
        run()


def run() -> None:
    with app.sync_client() as client:
        print("\n1. Insert tasks through a mutation")
        for text, owner, priority in [
            ("write the report", "ada", 2),
            ("book the venue", "ada", 1),
            ("water the plants", "bob", 0),
            ("review the budget", "ada", 3),
            ("call the plumber", "bob", 2),
            ("plan the offsite", "ada", 0),
            ("renew the domain", "bob", 1),
        ]:
            task_id = client.mutation(create, {"text": text, "owner": owner, "priority": priority})
            print(f"   created {task_id}  {owner:<4} p{priority}  {text}")

        print("\n2. Query through the by_owner index (ada, priority >= 1, most important first)")
        for task in client.query(for_owner, {"owner": "ada", "min_priority": 1}):
            print(f"   p{task['priority']}  {task['text']}")

        first = client.query(for_owner, {"owner": "bob"})[0]
        client.mutation(complete, {"id": first["_id"]})
        print(f"\n3. Completed bob's top task: {first['text']!r}")

        print("\n4. Page through the open tasks, four at a time")
        cursor, number = None, 1
        while True:
            page = client.query(open_tasks, {"cursor": cursor, "page_size": 4})
            print(f"   page {number}: {page['texts']}")
            if page["done"]:
                break
            cursor, number = page["cursor"], number + 1

        print("\n5. An AppError reaches the caller with its data")
        try:
            client.mutation(create, {"text": "   ", "owner": "ada"})
        except AppError as exc:
            print(f"   refused: {exc.data}")

    print("\nDone.")


if __name__ == "__main__":
    main()
