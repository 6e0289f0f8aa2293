"""Owns ``AgentDirectory``: the agents of one component instance, bound to that instance.

``Agent(handle, ...)`` registers itself in the directory bound to ``handle``'s instance
(``ctx.bindings["agents"]``), so the instance's own functions (a scheduled approval resume,
a workflow step) reach the agent's model, tools and embedder. Nothing is module-global:
another mount has a directory of its own.
"""

from __future__ import annotations

from typing import Any

from core import ActionCtx, UserError

AGENTS = "agents"
"""The binding that holds an instance's ``AgentDirectory`` (``ctx.bindings["agents"]``)."""


class AgentDirectory:
    """The agents made over one component instance, by name (the latest of a name wins)."""

    def __init__(self) -> None:
        self._agents: dict[str, Any] = {}

    def add(self, agent: Any) -> None:
        """Register ``agent`` under its name."""
        self._agents[agent.name] = agent

    def __getitem__(self, name: str) -> Any:
        try:
            return self._agents[name]
        except KeyError:
            raise UserError(
                f'No agent named "{name}" was made over this component instance in this '
                f'process; construct Agent(handle, name="{name}", ...) at import time.'
            ) from None

    @classmethod
    def of(cls, handle: Any) -> AgentDirectory:
        """The directory bound to ``handle``'s instance (bound on first use)."""
        found = handle.bindings.get(AGENTS)
        if found is None:
            found = cls()
            handle.bind(AGENTS, found)
        return found  # type: ignore[no-any-return]


def agent_of(ctx: ActionCtx, name: str) -> Any:
    """The agent named ``name`` of the instance ``ctx`` runs in."""
    directory: AgentDirectory = ctx.bindings[AGENTS]  # type: ignore[assignment]
    return directory[name]
