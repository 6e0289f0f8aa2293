"""Owns usage accounting: per-step token records, totals, prices and the usage handler.

Each step's usage comes from the provider; when a provider reports none (zeros), it is
estimated with tiktoken (``components.models.estimate_usage``, offline fallback included).
A ``PriceTable`` maps a model name to prices per million tokens, so each step's cost is
stored beside its tokens; totals per thread and per user are summed by the component.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from components.models import Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """What a model costs, per million tokens."""

    prompt: float
    """Per million prompt (input) tokens."""
    completion: float
    """Per million completion (output) tokens."""


PriceTable = Mapping[str, Price]
"""Prices by model name (an exact name, or a prefix ending in ``*``)."""


def price_for(prices: PriceTable | None, model: str | None) -> Price | None:
    """The price of a model: its exact entry, else the longest matching ``prefix*`` entry."""
    if not prices or not model:
        return None
    if model in prices:
        return prices[model]
    matches = [k for k in prices if k.endswith("*") and model.startswith(k[:-1])]
    return prices[max(matches, key=len)] if matches else None


def cost(prices: PriceTable | None, model: str | None, usage: Usage) -> float | None:
    """The cost of ``usage`` on ``model``, or ``None`` without a price."""
    price = price_for(prices, model)
    if price is None:
        return None
    return (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1e6


@dataclass(frozen=True, slots=True, kw_only=True)
class StepUsage:
    """What a usage handler receives for one model call."""

    usage: Usage
    """The step's tokens."""
    cost: float | None
    """Its cost, when a price table knows the model."""
    model: str | None
    """The model that answered."""
    agent_name: str | None
    """The agent that called it."""
    thread_id: str | None
    """The thread."""
    user_id: str | None
    """The thread's user."""

    @property
    def prompt_tokens(self) -> int:
        """The step's prompt tokens."""
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        """The step's completion tokens."""
        return self.usage.completion_tokens

    @property
    def total_tokens(self) -> int:
        """The step's tokens in all."""
        return self.usage.total_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """Tokens (and cost) summed over a thread's or a user's steps."""

    prompt_tokens: int
    """Prompt tokens."""
    completion_tokens: int
    """Completion tokens."""
    total_tokens: int
    """All tokens."""
    cost: float | None
    """The summed cost of the steps that had a price (``None`` if none had)."""
    steps: int
    """How many model calls."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UsageTotals:
        """From the component's answer."""
        return cls(
            **{
                k: raw[k]
                for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "steps")
            }
        )


class UsageHandler(Protocol):
    """Called after each step is saved: ``usage_handler(ctx, step_usage)``."""

    def __call__(self, ctx: Any, usage: StepUsage, /) -> Awaitable[None] | None:
        """Record or act on one step's usage."""
        ...
