"""The README's snippet and the examples run as written (STYLE.md D5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_readme_snippet_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"## A taste\n\n```python\n(.*?)```", readme, re.S)
    assert found is not None, "README.md lost its '## A taste' snippet"
    (tmp_path / "taste.py").write_text(found.group(1))
    result = _run(["taste.py"], tmp_path, {"CAPSULE_DB_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert result.returncode == 0, result.stderr
    assert "write the report" in result.stdout


def test_quickstart_runs(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "quickstart.py")], tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "Done." in result.stdout
    assert "refused: {'code': 'empty_text'" in result.stdout


def test_mounting_runs_step_by_step(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "mounting.py")], tmp_path, {})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "third post refused: RateLimited" in out
    assert "state: likes=3, views=5" in out
    # the failed mutation left the token, the post and the count as they were
    before, after = re.findall(r"state: (posts=2, published=2, bob's publish tokens=2\.0)", out)
    assert before == after
    assert "view_or_note -> 'noted'" in out
    assert "state: views=5, notes=['view not counted: bot_traffic']" in out
    assert out.rstrip().endswith("Done.")


def test_rag_search_ingests_with_progress_and_searches_three_modes(tmp_path: Path) -> None:
    script = str(ROOT / "examples" / "rag_search.py")
    query = "switch to PostgreSQL with the postgres extra"
    result = _run([script, "--embedder", "hashing", query], tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "6/6" in result.stderr  # the progress bar reached the end
    assert "Ingested: 6 added, 0 unchanged" in result.stdout
    for mode in ("text", "vector", "hybrid"):
        section = result.stdout.split(f"== {mode} ==")[1].split("==")[0]
        assert "1. [" in section
        assert "Serving and deployment" in section


def test_rag_search_skips_unchanged_files_on_a_kept_database(tmp_path: Path) -> None:
    script = str(ROOT / "examples" / "rag_search.py")
    env = {"CAPSULE_DB_URL": f"sqlite:///{tmp_path / 'rag.db'}"}
    args = [script, "--embedder", "hashing", "--mode", "text", "rate limit tokens"]
    assert _run(args, tmp_path, env).returncode == 0
    again = _run(args, tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert "Ingested: 0 added, 6 unchanged" in again.stdout
    assert "Components" in again.stdout.split("== text ==")[1]


def test_rag_handbook_runs(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "rag_handbook.py")], tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "added again (unchanged): [False, False, False, False]" in result.stdout
    assert "--- Engineering only:\n## Oncall:" in result.stdout
    assert result.stdout.rstrip().endswith("Done.")


def test_multi_agent_workflow_runs_offline(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    result = _run([str(ROOT / "examples" / "multi_agent.py")], tmp_path, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Models: scripted models (offline)" in out
    assert "1. Ingested 6 notes" in out
    assert out.count(": success") >= 2  # both journaled steps
    assert "workflow: success" in out
    assert "[researcher / assistant] calls search_notes(" in out
    assert "[researcher / tool] # What Capsule is" in out  # the tool reached the app's rag
    assert "5. The brief:\n   Brief (scripted writer, no language model): Capsule is" in out
    assert out.rstrip().endswith("Done.")


def test_readme_components_snippet_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"## Components, one example each\n\n```python\n(.*?)```", readme, re.S)
    assert found is not None, "README.md lost its components snippet"
    program = (
        "from core import ActionCtx, App, MutationCtx, Schema, Table\n"
        'app = App(Schema(messages=Table({"user": str, "text": str})))\n'
        + found.group(1)
        + "with app.sync_client() as client:\n"
        + '    client.mutation(send, {"user": "ada", "text": "hello"})\n'
        + '    print(client.action(ask, {"question": "when do you open?"}))\n'
    )
    (tmp_path / "components_tour.py").write_text(program)
    env = {"CAPSULE_DB_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = _run(["components_tour.py"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Hi!"
