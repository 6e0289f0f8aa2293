"""The agent component: threads and messages, tool loops, persisted streaming, usage.

Mount it and wrap the handle in an ``Agent``::

    from components.agent import Agent, tool, component as agent_component
    from components.models import ScriptedChatModel

    helper = Agent(app.use(agent_component, name="agent"), name="helper",
                   model=ScriptedChatModel(["Hi!"]), instructions="Be brief.")

    @app.action
    async def ask(ctx: ActionCtx, text: str) -> str:
        thread_id = await helper.create_thread(ctx, user_id="ada")
        result = await helper.generate_text(ctx, thread_id=thread_id, prompt=text)
        return result.text
"""

from __future__ import annotations

from components.agent.client import Agent, handoff_tool
from components.agent.component import component
from components.agent.context import ContextOptions, SearchMode
from components.agent.documents import (
    ApprovalDecision,
    ApprovalDocument,
    MessageDocument,
    StreamDelta,
    StreamDeltas,
    StreamInfo,
    ThreadDocument,
)
from components.agent.errors import (
    AgentError,
    ApprovalError,
    GenerationAbortedError,
    MessageNotFoundError,
    ObjectGenerationError,
    OrderError,
    ThreadNotFoundError,
    ToolDefinitionError,
)
from components.agent.loop import LoopAgent, LoopFinish, LoopResult, Persistence, StepResult
from components.agent.ordering import MAX_ORDER, Position
from components.agent.parts import Part, PartEncoder
from components.agent.results import GenerateObjectResult, GenerateResult, ResultStream, TextStream
from components.agent.tools import Tool, ToolOutcome, tool
from components.agent.usage import Price, PriceTable, StepUsage, UsageHandler, UsageTotals

__all__ = [
    "Agent",
    "AgentError",
    "ApprovalDecision",
    "ApprovalDocument",
    "ApprovalError",
    "ContextOptions",
    "GenerateObjectResult",
    "GenerateResult",
    "GenerationAbortedError",
    "LoopAgent",
    "LoopFinish",
    "LoopResult",
    "MAX_ORDER",
    "MessageDocument",
    "MessageNotFoundError",
    "ObjectGenerationError",
    "OrderError",
    "Part",
    "PartEncoder",
    "Persistence",
    "Position",
    "Price",
    "PriceTable",
    "ResultStream",
    "SearchMode",
    "StepResult",
    "StepUsage",
    "StreamDelta",
    "StreamDeltas",
    "StreamInfo",
    "TextStream",
    "ThreadDocument",
    "ThreadNotFoundError",
    "Tool",
    "ToolDefinitionError",
    "ToolOutcome",
    "UsageHandler",
    "UsageTotals",
    "component",
    "handoff_tool",
    "tool",
]
