"""examples/handoffs.py runs as written (offline, scripted models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_multi_agent_example_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CAPSULE_DB_URL")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "handoffs.py")],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "answered by: billing" in result.stdout
    assert "(0,4) billing/tool: INV-9 is due on 1 April." in result.stdout
