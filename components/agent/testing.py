"""Owns the agent's test helpers: ``MemoryPersistence``, the loop's store without a database.

It keeps the same pending-placeholder discipline as the component (one pending message while
a generation runs, replaced by the step's first message), so loop tests can check that no
exit leaves a message pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.agent.errors import GenerationAbortedError
from components.agent.parts import Part


@dataclass(slots=True)
class MemoryPersistence:
    """A ``Persistence`` in memory: ``messages`` in save order, ``parts`` as emitted."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    """Saved messages (with ``status``); the pending placeholder is one of them."""
    parts: list[Part] = field(default_factory=list)
    """Every stream part emitted."""
    aborted: bool = False
    """Set it to make the next write raise ``GenerationAbortedError`` (an abort)."""
    finished: bool = False
    """Whether the generation ended (a final save or a failure)."""

    def __post_init__(self) -> None:
        self.messages.append(self._pending())

    @staticmethod
    def _pending() -> dict[str, Any]:
        return {"role": "assistant", "text": "", "status": "pending"}

    def _check(self) -> None:
        if self.aborted:
            raise GenerationAbortedError("aborted by the test")

    async def emit(self, parts: list[Part]) -> None:
        """Record parts."""
        self._check()
        self.parts.extend(parts)

    async def save_step(self, messages: list[dict[str, Any]], *, more: bool) -> list[str]:
        """Replace the placeholder with the first message, append the rest."""
        self._check()
        pending = [m for m in self.messages if m["status"] == "pending"]
        ids = []
        for number, fields in enumerate(messages):
            saved = {**fields, "status": "success"}
            if number == 0 and pending:
                index = self.messages.index(pending[0])
                self.messages[index] = saved
            else:
                self.messages.append(saved)
            ids.append(str(len(self.messages) - 1))
        if not messages and pending:
            self.messages.remove(pending[0])
        if more:
            self.messages.append(self._pending())
        else:
            self.finished = True
        return ids

    async def fail(self, error: str, *, partial_text: str, aborted: bool = False) -> None:
        """Fail the placeholder, keeping the partial text."""
        for message in self.messages:
            if message["status"] == "pending":
                message.update(status="failed", error=error, text=partial_text)
        self.finished = True
