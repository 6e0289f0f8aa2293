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
    # component clients: return types, and the contexts each method accepts
    ("total: int | float = likes.count(ctx, post)", "total: str = likes.count(ctx, post)"),
    (
        "by_shard: dict[int, int | float] = likes.shard_values(ctx, post)",
        "by_shard: dict[int, int | float] = likes.rebalance(ctx, post)",
    ),
    (
        "estimate: float = await likes.estimate_count(",
        "estimate: str = await likes.estimate_count(",
    ),
    (
        "work_id: Id = pool.enqueue_action(",
        "work_id: int = pool.enqueue_action(",
    ),
    (
        "work: WorkStatus = pool.status(ctx, work_id)",
        "work: WorkflowStatus = pool.status(ctx, work_id)",
    ),
    (
        "work: WorkStatus = await pool.status(ctx, work_id)",
        "work: WorkStatus = pool.status(ctx, work_id)",
    ),
    (
        "workflow_id: Id = workflows.start(ctx, onboarding",
        "workflow_id: int = workflows.start(ctx, onboarding",
    ),
    (
        "removed: bool = workflows.cleanup(ctx, workflow_id)",
        "removed: str = workflows.cleanup(ctx, workflow_id)",
    ),
    (
        'status: WorkflowStatus | None = workflows.status(ctx, "a workflow id", steps=False)',
        'status: WorkflowStatus | None = workflows.cancel(ctx, "a workflow id")',
    ),
    (
        "page: WorkflowPage = await workflows.list(",
        "page: Page = await workflows.list(",
    ),
    (
        "thread_id: str = helper.create_thread(ctx, user_id=",
        "thread_id: int = helper.create_thread(ctx, user_id=",
    ),
    (
        "thread: ThreadDocument | None = helper.get_thread(ctx, thread_id)",
        "thread: ThreadDocument | None = helper.update_thread(ctx, thread_id)",
    ),
    (
        "messages: Page = helper.list_messages(ctx, thread_id=thread_id)",
        "messages: list[str] = helper.list_messages(ctx, thread_id=thread_id)",
    ),
    (  # vector search needs an action
        'helper.search_messages(ctx, query="hi", thread_id=',
        'helper.search_messages(ctx, mode="vector", query="hi", thread_id=',
    ),
    (
        "deltas: StreamDeltas = helper.stream_deltas(",
        "deltas: list[str] = helper.stream_deltas(",
    ),
    (
        "totals: UsageTotals = helper.usage(ctx, thread_id=thread_id)",
        "totals: dict[str, int] = helper.usage(ctx, thread_id=thread_id)",
    ),
    (
        "result: GenerateResult = await helper.generate_text(",
        "result: str = await helper.generate_text(",
    ),
    ("swept: int = await helper.sweep(ctx)", "swept: int = helper.sweep(ctx)"),
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
