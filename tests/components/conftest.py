"""Fixtures shared by the component suites: ``child_process`` runs a script to SIGKILL."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
TIMEOUT = 60.0


class ChildProcess:
    """A Python script in a child process whose stdout JSON lines are read by a thread."""

    def __init__(self, script: Path, *args: str, log: Path):
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pred: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """The first printed JSON value for which ``pred`` holds."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                pytest.fail(f"the child never got there in {timeout} s: {self.log.read_text()}")
            if line is None:
                self.stop()
                pytest.fail(f"the child ended early: {self.log.read_text()}")
            value = json.loads(line)
            if pred(value):
                return value

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the child."""
        self.proc.send_signal(signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        """End the child (if still running) and its reader."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self.reader.join(timeout=TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def child_process(tmp_path: Path) -> Iterator[Callable[..., ChildProcess]]:
    """Start ``child_process(script, *args)``; every child is stopped after the test."""
    started: list[ChildProcess] = []

    def start(script: Path, *args: str) -> ChildProcess:
        child = ChildProcess(script, *args, log=tmp_path / f"child-{len(started)}.log")
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()
