"""Version 1 of an app, writing on and on, for the rolling-deploy test (run as a script).

``python deploy_app.py URL`` inserts a document, moves an older one to another owner and
deletes one now and then, printing each acknowledged write as a JSON line, until killed.
Version 1 declares no index; version 2 (the test) adds a b-tree and a text index meanwhile.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from core import App, MutationCtx, Schema, Table
from core.storage import open_storage
from core.testing import TestApp

OWNERS = ["ann", "bob", "cy"]
WORDS = ["apple", "pear", "plum"]

v1 = App(Schema(items=Table({"owner": str, "text": str})))


@v1.mutation
def step(ctx: MutationCtx, n: int) -> dict[str, Any]:
    new = ctx.db.insert("items", {"owner": OWNERS[n % 3], "text": WORDS[n % 3]})
    older = ctx.db.query("items").order("asc").take(3)
    moved = None
    if n % 2 and older:
        moved = older[n % len(older)]["_id"]
        ctx.db.patch(moved, {"owner": OWNERS[(n + 1) % 3], "text": f"{WORDS[n % 3]} {n}"})
    deleted = None
    if n % 5 == 4 and len(older) > 1 and older[0]["_id"] != moved:
        deleted = older[0]["_id"]
        ctx.db.delete(deleted)
    return {"n": n, "new": new, "moved": moved, "deleted": deleted}


def main(url: str) -> None:
    with TestApp(v1, storage=open_storage(url)) as t:
        n = 0
        while True:
            print(json.dumps(t.mutation(step, {"n": n})), flush=True)
            n += 1


if __name__ == "__main__":
    main(sys.argv[1])
