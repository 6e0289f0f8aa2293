"""The fault-injection app: a transfer that writes three tables and a text index at once.

``python fault_app.py URL POINT`` runs one transfer on ``FaultyStorage`` armed to SIGKILL the
process at ``POINT`` of the commit path (it prints ``survived`` if the point never came).
"""

from __future__ import annotations

import sys
from typing import Any

from core import App, MutationCtx, QueryCtx, Schema, Table
from core.storage import open_storage
from core.testing import FaultyStorage, TestApp

app = App(
    Schema(
        accounts=Table({"n": int, "balance": int}).index("by_n", ["n"]),
        receipts=Table({"note": str, "amount": int})
        .index("by_amount", ["amount"])
        .search_index("search", search_field="note"),
        counters=Table({"name": str, "value": int}).index("by_name", ["name"]),
    )
)


def _account(ctx: QueryCtx, n: int) -> Any:
    return ctx.db.query("accounts").with_index("by_n", lambda q: q.eq("n", n)).unique()


@app.mutation
def setup(ctx: MutationCtx) -> None:
    for n in range(3):
        ctx.db.insert("accounts", {"n": n, "balance": 100})
    ctx.db.insert("counters", {"name": "transfers", "value": 0})


@app.mutation
def transfer(ctx: MutationCtx, src: int, dst: int, amount: int, note: str) -> None:
    a, b = _account(ctx, src), _account(ctx, dst)
    ctx.db.patch(a["_id"], {"balance": a["balance"] - amount})
    ctx.db.patch(b["_id"], {"balance": b["balance"] + amount})
    ctx.db.insert("receipts", {"note": note, "amount": amount})
    c = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", "transfers")).unique()
    ctx.db.patch(c["_id"], {"value": c["value"] + 1})


@app.query
def state(ctx: QueryCtx) -> dict[str, Any]:
    """Everything stored, read through each index (so a half-written index shows too)."""
    return {
        "balances": [d["balance"] for d in ctx.db.query("accounts").with_index("by_n").collect()],
        "receipts": sorted(
            d["note"] for d in ctx.db.query("receipts").with_index("by_amount").collect()
        ),
        "found": sorted(
            d["note"]
            for d in ctx.db.query("receipts")
            .with_search_index("search", lambda q: q.search("note", "receipt"))
            .take(100)
        ),
        "count": ctx.db.query("counters").with_index("by_name").unique()["value"],
    }


if __name__ == "__main__":
    faulty = FaultyStorage(open_storage(sys.argv[1]))
    with TestApp(app, storage=faulty) as t:
        faulty.fail_at(sys.argv[2], kill=True)
        t.mutation(transfer, {"src": 0, "dst": 1, "amount": 10, "note": "receipt one"})
    print("survived", flush=True)
