"""The docstring examples of the entry points run as written (STYLE.md D5)."""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest

import components.models
from components.models import ScriptedChatModel, testing


def example_of(obj: object) -> str:
    """The indented block after the first ``::`` in ``obj``'s docstring."""
    doc = inspect.getdoc(obj) or ""
    _, found, rest = doc.partition("::\n")
    assert found, f"{obj!r} has no example"
    lines = []
    for line in rest.splitlines()[1:] if rest.startswith("\n") else rest.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


@pytest.mark.parametrize(
    "obj", [components.models, ScriptedChatModel, testing], ids=["package", "scripted", "testing"]
)
async def test_docstring_example_runs(obj: object) -> None:
    namespace: dict[str, Any] = {**vars(components.models), **vars(testing)}
    code = example_of(obj)
    assert "await" in code
    exec("async def _example():\n" + textwrap.indent(code, "    "), namespace)
    await namespace["_example"]()
