"""The tool loop: call the model, run the tools it requests, repeat until it ends its turn.

The loop stops when the model ends its turn, when a tool ends the step
(skip, quiet hours, a cap, a lost delivery), or after ``max_turns`` model
calls. Every request, response, tool call and tool result is appended to
the transcript, and token counts are summed, for the step run's audit
record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from anthropic.types import Message

from rulesd.agent.budget import USAGE_KEYS
from rulesd.agent.claude import ModelClient
from rulesd.agent.tools import StepState, ToolBox
from rulesd.errors import AgentError

logger = logging.getLogger(__name__)

UsageHook = Callable[[str, dict[str, int]], Awaitable[None]]


@dataclass
class LoopOutcome:
    transcript: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {key: 0 for key in USAGE_KEYS})
    turns: int = 0
    turn_limit_reached: bool = False
    final_text: str = ""
    error: AgentError | None = None


async def run_tool_loop(
    *,
    model: ModelClient,
    base_params: dict[str, Any],
    first_message: dict[str, Any],
    toolbox: ToolBox,
    state: StepState,
    max_turns: int,
    on_usage: UsageHook,
) -> LoopOutcome:
    """Run the loop; a model error ends it and is returned on ``outcome.error``, not raised."""
    outcome = LoopOutcome()
    messages: list[dict[str, Any]] = [first_message]
    outcome.transcript.append({"type": "request", "turn": 1, "params": {**base_params, "messages": list(messages)}})

    for turn in range(1, max_turns + 1):
        if turn > 1:
            # The system prompt and tools repeat turn 1's; only the new messages are stored.
            outcome.transcript.append({"type": "request", "turn": turn, "new_messages": messages[-2:]})
        outcome.turns = turn
        try:
            message = await model.create({**base_params, "messages": messages})
        except AgentError as exc:
            outcome.transcript.append({"type": "error", "turn": turn, "error": str(exc)})
            outcome.error = exc
            return outcome

        usage = _usage(message)
        for key, value in usage.items():
            outcome.usage[key] += value
        await on_usage(message.model, usage)
        outcome.transcript.append({"type": "response", "turn": turn, "body": _scrub(message.model_dump(mode="json"))})
        messages.append({"role": "assistant", "content": _content_blocks(message)})
        outcome.final_text = "\n".join(block.text for block in message.content if block.type == "text").strip()

        tool_uses = [block for block in message.content if block.type == "tool_use"]
        if not tool_uses:
            return outcome
        results = []
        for block in tool_uses:
            results.append(await _run_tool(toolbox, state, block.id, block.name, block.input, outcome, turn))
        messages.append({"role": "user", "content": results})
        if state.stop is not None:
            return outcome

    outcome.turn_limit_reached = True
    logger.warning(
        "turn limit of %d reached", max_turns,
        extra={"event": "turn_limit_reached", "max_turns": max_turns},
    )
    return outcome


async def _run_tool(
    toolbox: ToolBox, state: StepState, tool_use_id: str, name: str, arguments: Any, outcome: LoopOutcome, turn: int
) -> dict[str, Any]:
    outcome.transcript.append(
        {"type": "tool_call", "turn": turn, "id": tool_use_id, "name": name, "input": _scrub(arguments)}
    )
    if state.stop is not None:
        content, is_error = "not run: an earlier tool call in this turn ended the step", True
    else:
        result = await toolbox.call(name, arguments)
        content, is_error = result.content, result.is_error
    outcome.transcript.append(
        {"type": "tool_result", "turn": turn, "id": tool_use_id, "content": content, "is_error": is_error}
    )
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error}


def _usage(message: Message) -> dict[str, int]:
    usage = message.usage
    return {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
    }


def _content_blocks(message: Message) -> list[dict[str, Any]]:
    """Return the response's text and tool_use blocks in the shape a request accepts."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": _scrub(block.input)})
    return blocks


def _scrub(value: Any) -> Any:
    """Return ``value`` with every lone surrogate replaced by '?', so the next request can be encoded.

    The tool itself gets the original input and rejects it.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value
