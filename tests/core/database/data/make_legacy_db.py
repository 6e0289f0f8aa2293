"""Makes ``legacy-v1.db``: a database written by the layout before issue 19.

Run with the code of commit 5693161 (ids carry wall-clock milliseconds; every document has a
creation-order index entry): ``python tests/core/database/data/make_legacy_db.py``. Kept for
the record; the current code writes the new layout, so running it now makes another file.

The app: ``tasks`` (``text``, ``rank``, index ``by_rank``), 30 documents ``t00``..``t29``
inserted in that order while a manual clock stands still (their ids, all made within a few
milliseconds, are not in creation order), then ``t03`` and ``t17`` deleted and ``t05``
patched (rank 100); ``notes`` (schemaless shape, no index) with 3 documents.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from core import App, Schema, Table
from core.storage.sqlite import SQLiteStorage
from core.testing import ManualClock, TestApp

HERE = Path(__file__).resolve().parent
APP = App(
    Schema(
        tasks=Table({"text": str, "rank": int}).index("by_rank", ["rank"]),
        notes=Table({"body": str}),
    )
)
START = 1_700_000_000.0


def main() -> None:
    path = HERE / "legacy-v1.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    storage = SQLiteStorage(path, synchronous="FULL")
    with TestApp(APP, storage=storage, clock=ManualClock(START)) as t:

        def seed(ctx: Any) -> dict[str, str]:
            ids = {}
            for i in range(30):
                ids[f"t{i:02d}"] = ctx.db.insert("tasks", {"text": f"t{i:02d}", "rank": i % 7})
            for i in range(3):
                ctx.db.insert("notes", {"body": f"n{i}"})
            return ids

        ids = t.run(seed)

        def change(ctx: Any) -> None:
            ctx.db.delete(ids["t03"])
            ctx.db.delete(ids["t17"])
            ctx.db.patch(ids["t05"], {"rank": 100})

        t.run(change)
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.close()


if __name__ == "__main__":
    main()
