from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _restore_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--db`` and ``capsule dev`` set CAPSULE_* for the process: undo it after each test."""
    for name in ("CAPSULE_DB_URL", "CAPSULE_APP"):
        # setenv first records the value to restore (delenv of an unset name records none).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
