"""Owns where saved messages land in a thread: their ``(order, step_order)`` positions.

The rules are those of the Convex agent (reference A3.1). A thread is a sequence of turns
(``order``); a user message starts a turn at ``step_order`` 0 and every other message takes
the next ``step_order`` of the current turn. A batch starts from:

* ``order="next"``: a new turn after the greatest one;
* an explicit ``order=k``: after the last message of turn ``k``;
* a prompt message: after the last message of the prompt's turn (so existing responses are
  kept and a user message goes past every later turn);
* nothing: after the last message of the thread.

Pure functions: the component reads the two maxima and writes the positions in one
transaction, which is what keeps concurrent saves from colliding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from components.agent.errors import OrderError

MAX_ORDER = 2**53 - 1
"""The largest order or step order (JavaScript's ``Number.MAX_SAFE_INTEGER``, as Convex)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Where a message sits in its thread."""

    order: int
    """The turn."""
    step_order: int
    """The position inside the turn."""


def check_order(order: object) -> int:
    """An explicit order, checked.

    Raises:
        OrderError: not a non-negative integer below ``MAX_ORDER``.
    """
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order < MAX_ORDER:
        raise OrderError(
            f"order must be a non-negative safe integer (0 to {MAX_ORDER - 1:,}), got {order!r}."
        )
    return order


def _bump(value: int, what: str) -> int:
    if value + 1 > MAX_ORDER:
        raise OrderError(f"{what} would pass the largest safe integer ({MAX_ORDER:,}).")
    return value + 1


def place(
    roles: Sequence[str],
    *,
    last: Position | None,
    last_step_at: Callable[[int], int | None],
    order: int | Literal["next"] | None = None,
    prompt: Position | None = None,
) -> list[Position]:
    """The positions of a batch of messages with these roles, saved in one transaction.

    Args:
        roles: the batch's roles, in order.
        last: the thread's greatest ``(order, step_order)`` (any status), ``None`` if empty.
        last_step_at: the greatest ``step_order`` at a given order (``None`` if none).
        order: ``"next"`` or an explicit order.
        prompt: the prompt message's position, when the batch answers one.

    Raises:
        OrderError: ``order`` is invalid or given together with a prompt.
    """
    if order is not None and prompt is not None:
        raise OrderError("order and prompt_message_id cannot both be given.")
    bump_first = order is not None
    anchor: int | None = None  # the turn a user message must jump past every later turn from
    if order == "next":
        current = 0 if last is None else _bump(last.order, "order")
        step = -1
    elif order is not None:
        current = check_order(order)
        found = last_step_at(current)
        step = -1 if found is None else found
        anchor = current
    elif prompt is not None:
        current = prompt.order
        found = last_step_at(current)
        step = max(prompt.step_order, -1 if found is None else found)
        anchor = current
    else:
        current = -1 if last is None else last.order
        step = -1 if last is None else last.step_order
    highest = -1 if last is None else last.order
    positions = []
    for index, role in enumerate(roles):
        if index == 0 and bump_first:
            step = _bump(step, "step_order")
        elif role == "user":
            base = max(highest, current) if current == anchor else current
            current = _bump(base, "order")
            step = 0
        else:
            current = max(current, 0)
            step = _bump(step, "step_order")
        highest = max(highest, current)
        positions.append(Position(order=current, step_order=step))
    return positions
