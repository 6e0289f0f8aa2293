"""Owns the errors of agent serving.

The tree::

    CapsuleError
    └── ServingError               serving an agent over HTTP failed
        ├── ChatRequestError       a chat completions body is malformed, 400
        ├── AgentNotFoundError     no exposed agent has that name, 404
        └── ThreadNotFoundError    no thread with that id belongs to the caller, 404
"""

from __future__ import annotations

from core import CapsuleError


class ServingError(CapsuleError):
    """Raised when serving an agent over HTTP fails; the root of this package's errors."""

    code = "serving_error"
    http_status = 500


class ChatRequestError(ServingError):
    """Raised when a chat completions request body is malformed."""

    code = "invalid_request"
    http_status = 400

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


class AgentNotFoundError(ServingError):
    """Raised when a request names an agent that is not exposed."""

    code = "agent_not_found"
    http_status = 404

    def __init__(self, agent: str, *, exposed: list[str]):
        names = ", ".join(f'"{name}"' for name in exposed) or "none"
        super().__init__(f'No exposed agent is named "{agent}"; exposed agents: {names}.')
        self.agent = agent
        self.exposed = exposed


class ThreadNotFoundError(ServingError):
    """Raised when a thread does not exist or belongs to another user (both look the same)."""

    code = "thread_not_found"
    http_status = 404

    def __init__(self, thread_id: str):
        super().__init__(f'Thread "{thread_id}" does not exist.')
        self.thread_id = thread_id


class ReplyFailedError(ServingError):
    """Raised when an agent's reply to a chat completions request failed."""

    code = "reply_failed"
    http_status = 502

    def __init__(self, agent: str, error: str | None):
        super().__init__(f'Agent "{agent}" failed to reply: {error or "unknown error"}.')
        self.agent = agent
