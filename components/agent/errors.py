"""Owns the agent component's errors.

The tree::

    CapsuleError
    ├── AgentError                   the root of the agent's errors, 500
    │   ├── ThreadNotFoundError      no thread with that id, 404
    │   ├── MessageNotFoundError     no message with that id (in that thread), 404
    │   ├── OrderError               an explicit order / step order is not allowed, 400
    │   ├── ToolDefinitionError      a function cannot become a tool (app code), 500
    │   ├── ApprovalError            an approval that does not exist or was already handled, 409
    │   └── ObjectGenerationError    the model's structured reply never validated, 422
    └── (model errors come from components.models.errors)
"""

from __future__ import annotations

from core import CapsuleError


class AgentError(CapsuleError):
    """Raised when the agent component fails; the root of its errors."""

    code = "agent_error"


class ThreadNotFoundError(AgentError):
    """Raised when a thread id names no thread of this agent component."""

    code = "thread_not_found"
    http_status = 404

    def __init__(self, thread_id: str):
        super().__init__(f'Thread "{thread_id}" does not exist (or was deleted).')
        self.thread_id = thread_id


class MessageNotFoundError(AgentError):
    """Raised when a message id names no message (or a message of another thread)."""

    code = "message_not_found"
    http_status = 404

    def __init__(self, message_id: str, *, thread_id: str | None = None):
        where = f' in thread "{thread_id}"' if thread_id else ""
        super().__init__(f'Message "{message_id}" does not exist{where}.')
        self.message_id = message_id
        self.thread_id = thread_id


class OrderError(AgentError):
    """Raised when a message's explicit ``order`` is refused (negative, too large, combined)."""

    code = "invalid_order"
    http_status = 400


class ToolDefinitionError(AgentError):
    """Raised when a function cannot become a tool (no type hints, a duplicate name, ...)."""

    code = "tool_definition"


class ApprovalError(AgentError):
    """Raised when a tool approval is unknown or was already approved or denied."""

    code = "approval"
    http_status = 409


class ObjectGenerationError(AgentError):
    """Raised when the model's structured replies did not validate within the attempts allowed."""

    code = "object_generation"
    http_status = 422

    def __init__(self, *, schema: str, attempts: int, detail: str):
        super().__init__(
            f'The model\'s reply did not validate against "{schema}" after {attempts} '
            f"attempt(s): {detail}"
        )
        self.schema = schema
        self.attempts = attempts
        self.detail = detail


class GenerationAbortedError(AgentError):
    """Raised inside a generation when another client aborted it (the loop stops quietly)."""

    code = "generation_aborted"
    http_status = 409

    def __init__(self, reason: str = "aborted"):
        super().__init__(f"The generation was aborted: {reason}.")
        self.reason = reason
