"""Owns ``CommitFeed``: one index's view of a database's commits, for in-memory search state.

The postings cache and the vector store are derived from index entries and kept current from
commit write sets. A feed hands them, in timestamp order, the keys of their index that each
commit wrote, and says how far that goes (``seen``): every commit up to ``seen`` has been
passed on. When the database, catching up with other processes, finds commits already pruned
from the storage log, what they wrote is unknown and the feed calls ``on_gap`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class CommitFeed:
    """Follows a database's commits for one index (attach once; detach on close)."""

    def __init__(
        self,
        index_id: int,
        *,
        on_keys: Callable[[int, list[bytes]], None],
        on_gap: Callable[[int], None],
    ):
        self.index_id = index_id
        self._on_keys = on_keys
        self._on_gap = on_gap
        self.seen = -1
        """Every commit with a timestamp up to this one has been passed on."""
        self.start = -1
        """The ``seen`` at attach time: commits after it are all passed on."""
        self._db: Any = None
        self._gaps = 0
        self._remove: Callable[[], None] | None = None
        self._lock = threading.Lock()

    @property
    def attached(self) -> bool:
        """Whether the feed follows a database."""
        return self._db is not None

    def attach(self, db: Any) -> None:
        """Start following ``db`` (idempotent)."""
        if self._db is not None:
            return
        with self._lock:
            if self._db is None:
                known, self._remove = db.listen(self._on_commit)
                self._gaps = db.log_gaps
                self.start = self.seen = max(self.seen, known)
                self._db = db

    def detach(self) -> None:
        """Stop following."""
        with self._lock:
            if self._remove is not None:
                self._remove()
            self._remove = None
            self._db = None

    def _on_commit(self, ts: int, ws: Any) -> None:
        # Runs inside the commit step (under the commit lock): keep it short, never raise.
        db = self._db
        if db is not None and db.log_gaps != self._gaps:
            self._gaps = db.log_gaps
            self._on_gap(ts)
        else:
            keys = ws.keys.get(self.index_id)
            if keys:
                self._on_keys(ts, keys)
        # Invariant: ``seen`` moves only after what the commit wrote was passed on.
        self.seen = max(self.seen, ts)
