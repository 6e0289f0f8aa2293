"""Fixtures for the serving tests: Node with the AI SDK (``ai`` from npm) for wire checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"
AI_PACKAGE = "ai@7"
"""The AI SDK major version our UI message stream is checked against."""


def node_modules_dir() -> Path:
    """Where the ``ai`` package is installed (``CAPSULE_NODE_MODULES`` or a user cache)."""
    configured = os.environ.get("CAPSULE_NODE_MODULES")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "capsule-node" / "node_modules"


class NodeAI:
    """Runs the Node scripts under tests/components/serving/node with the AI SDK."""

    def __init__(self, node: str, modules: Path):
        self.node = node
        self.modules = modules

    def run(self, script: str, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [self.node, str(NODE_DIR / script), *args],
            env={**os.environ, "NODE_PATH": str(self.modules)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return parsed


@pytest.fixture(scope="session")
def node_ai() -> NodeAI:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs npm)")
    modules = node_modules_dir()
    if not (modules / "ai" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed, so the `ai` package cannot be installed")
        prefix = modules.parent
        prefix.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), AI_PACKAGE],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0 or not (modules / "ai" / "package.json").is_file():
            pytest.skip(f"npm could not install {AI_PACKAGE}: {installed.stderr.strip()[-300:]}")
    return NodeAI(node, modules)
