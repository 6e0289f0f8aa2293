"""The typed example fails mypy --strict as soon as an annotation disagrees with a handler.

``tests/typecheck/typed_app.py`` passes ``mypy --strict`` (``scripts/check`` runs it). Here a
copy with wrong annotations is checked, and every wrong line must be an error: proof that
references carry their handler's types through each calling surface (not ``Any``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "typecheck" / "typed_app.py"

# (correct line, wrong line): one per calling surface.
WRONG = [
    # ctx.run_query / run_mutation / run_action in an action
    (
        "titles: list[str] = await ctx.run_query(list_titles, {})",
        "titles: list[int] = await ctx.run_query(list_titles, {})",
    ),
    (
        "total: int = await ctx.run_query(count_tasks)",
        "total: str = await ctx.run_query(count_tasks)",
    ),
    (
        "summary: dict[str, int] = await ctx.run_action(summarize",
        "summary: dict[str, str] = await ctx.run_action(summarize",
    ),
    # ctx.run_* and call() in queries and mutations, internal functions included
    (
        "titles: list[str] = ctx.run_query(list_titles)",
        "titles: set[str] = ctx.run_query(list_titles)",
    ),
    ("total: int = call(ctx, count_tasks)", "total: bytes = call(ctx, count_tasks)"),
    ("when: float = ctx.run_mutation(clear)", "when: str = ctx.run_mutation(clear)"),
    # workflow steps
    (
        "new_id: Id = await step.run_mutation(add_task",
        "new_id: int = await step.run_mutation(add_task",
    ),
    (
        "summary: dict[str, int] = await step.run_action(",
        "summary: list[int] = await step.run_action(",
    ),
    # TestApp, Client, SyncClient
    ("titles: list[str] = t.query(list_titles)", "titles: int = t.query(list_titles)"),
    ("summary: dict[str, int] = t.action(", "summary: str = t.action("),
    (
        "titles: list[str] = await client.query(list_titles",
        "titles: str = await client.query(list_titles",
    ),
    (
        "new_id: Id = await client.mutation(add_task",
        "new_id: float = await client.mutation(add_task",
    ),
    (
        "titles: list[str] = client.query(list_titles)",
        "titles: dict[str, str] = client.query(list_titles)",
    ),
]


def test_wrong_annotations_fail_mypy(tmp_path: Path) -> None:
    source = EXAMPLE.read_text()
    lines: list[int] = []
    for right, wrong in WRONG:
        assert source.count(right) == 1, right
        before = source.split(right)[0]
        lines.append(before.count("\n") + 1)
        source = source.replace(right, wrong)
    target = ROOT / "tests" / "typecheck" / f"wrong_{tmp_path.name}.py"
    target.write_text(source)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(target)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        target.unlink()
    errors = {
        int(m.group(1))
        for m in re.finditer(rf"{re.escape(target.name)}:(\d+): error:", result.stdout)
    }
    assert result.returncode == 1, result.stdout + result.stderr
    missing = [WRONG[i][1] for i, line in enumerate(lines) if line not in errors]
    assert not missing, f"mypy accepted: {missing}\n{result.stdout}"
