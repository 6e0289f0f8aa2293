"""The commit-path benchmarks run to the end and print every figure (no time is asserted).

``bench/`` is measured by hand, so nothing else would notice a benchmark broken by a change
to the engine; these runs are as short as the scripts allow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str, *args: str) -> str:
    """Run a benchmark script; return what it printed."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(300)
def test_core_prints_each_comparison_and_the_split_of_an_insert() -> None:
    out = run("core.py", "--seconds", "0.05", "--rounds", "1")
    for label in (
        "WAL frames per commit",
        "insert mutations, 1 client, WAL+NORMAL",
        "of which outside the storage step",
        "point-read queries",
        "commits per storage transaction",
    ):
        assert label in out
    assert out.count("of which outside the storage step") == 2


@pytest.mark.timeout(300)
def test_logstructured_replays_recorded_commits_in_both_layouts() -> None:
    out = run("logstructured.py", "--commits", "300", "--seconds", "0.05", "--rounds", "1")
    # The replay checks itself: every recorded commit-log record was written again.
    assert out.count("300 recorded commits") == 2
    assert out.count("today's statements, replayed") == 2
    assert out.count("log-structured, applied every 64") == 2


@pytest.mark.timeout(300)
def test_limiter_prints_both_key_counts_and_the_split_of_a_decision() -> None:
    out = run("limiter.py", "--seconds", "0.05")
    assert out.count("outside the commit's storage step") == 2
    assert "target: ours >= 0.2x raw sqlite3" in out
