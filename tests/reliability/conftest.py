"""Shared by the reliability suite: CI-sized or soak-sized runs, and the soak summary.

``scripts/soak`` sets ``CAPSULE_SOAK=1`` (long runs) and ``CAPSULE_SOAK_REPORT`` (a file each
test appends one JSON line to: its name and what it counted, or that it failed), then prints
the table.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


class Soak:
    """``size(ci, soak)`` picks a run's length; ``record(...)`` feeds the soak summary."""

    def __init__(self, name: str):
        self.name = name
        self.on = bool(os.environ.get("CAPSULE_SOAK"))

    def size(self, ci: int, soak: int) -> int:
        """``ci`` normally, ``soak`` under ``scripts/soak``."""
        return soak if self.on else ci

    def record(self, **numbers: Any) -> None:
        """Append this test's counts to the soak report (a no-op outside ``scripts/soak``)."""
        path = os.environ.get("CAPSULE_SOAK_REPORT")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": self.name, **numbers}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Under ``scripts/soak``, a failed test is a row of the table too (whatever it recorded)."""
    outcome = yield
    report = outcome.get_result()
    path = os.environ.get("CAPSULE_SOAK_REPORT")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(json.dumps({"test": item.name, "failed": report.when}) + "\n")


@pytest.fixture
def soak(request: Any) -> Soak:
    """Sizes and the summary line of the running test."""
    return Soak(request.node.name)
