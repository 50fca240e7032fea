"""Agent mode: the proxy runs some tools itself, looping model calls within one client turn.

One Anthropic message spans the whole loop: `message_start` once, then per step a progress line,
the model's own text streamed live as it arrives, the client's tool calls streamed as `tool_use`
blocks, and — after the proxy has run the step's local calls — a `redacted_thinking` block with
their transcript (see `translate.agent_history`). The loop ends when the model answers without
local calls, when it calls a client tool (the client must run it), or at the iteration limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import orjson

from kimi_proxy.providers.step import OpenStep, model_step
from kimi_proxy.translate.agent_history import (
    STARTING,
    LocalCall,
    executing_line,
    limit_line,
    thinking_line,
    tool_line,
)
from kimi_proxy.translate.blocks import Event
from kimi_proxy.translate.messages import calls_ran
from kimi_proxy.translate.stream import StreamTranslator

from .sandbox import ToolError
from .tools import READ_ONLY, LocalTools


@dataclass(slots=True)
class AgentLoop:
    open: OpenStep  # one model call through the pool
    tools: LocalTools
    payload: dict[str, Any]
    max_iterations: int
    #: A span around each tool run (`execute_tool NAME`), when tracing is on.
    tool_span: Callable[[str], AbstractContextManager[Any]] | None = None

    async def events(self, translator: StreamTranslator) -> AsyncGenerator[Event, None]:
        """Every event of the turn; raises `ProxyError` on failure (after what was sent)."""
        for event in translator.start():
            yield event
        for event in translator.note(STARTING):
            yield event
        messages = list(self.payload["messages"])
        for step in range(1, self.max_iterations + 1):
            for event in translator.note(thinking_line(step)):
                yield event
            async for event in model_step(self.open, self.payload, messages, translator):
                yield event
            result = translator.end_step()
            for event in result.events:
                yield event
            if not result.local_calls:
                break
            if step == self.max_iterations:
                for event in translator.note(limit_line(self.max_iterations)):
                    yield event
                break
            names = [call.name for call in result.local_calls]
            for event in translator.note(executing_line(names)):
                yield event
            done: list[LocalCall] = []
            async for item in self._run_calls(result.local_calls, translator):
                if isinstance(item, LocalCall):
                    done.append(item)
                else:
                    yield item
            for event in translator.transcript(done):
                yield event
            messages += calls_ran(result.text, done)
            if result.client_calls:
                break  # the client runs its own calls; the model continues next turn
        for event in translator.finish():
            yield event

    async def _run_calls(
        self, calls: list[LocalCall], translator: StreamTranslator
    ) -> AsyncIterator[Event | LocalCall]:
        """Run the calls in order; consecutive read-only calls run concurrently."""
        total = len(calls)
        position = 0
        while position < total:
            batch = [calls[position]]
            if calls[position].name in READ_ONLY:
                while (
                    position + len(batch) < total and calls[position + len(batch)].name in READ_ONLY
                ):
                    batch.append(calls[position + len(batch)])
            for offset, call in enumerate(batch):
                for event in translator.note(tool_line(call.name, position + offset + 1, total)):
                    yield event
            for finished in await asyncio.gather(*(self._run_one(c) for c in batch)):
                yield finished
            position += len(batch)

    async def _run_one(self, call: LocalCall) -> LocalCall:
        try:
            args = orjson.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ToolError("Tool arguments must be a JSON object.")
            with self.tool_span(call.name) if self.tool_span else nullcontext():
                output = await self.tools.run(call.name, args)
            return LocalCall(call.id, call.name, call.arguments, output, False)
        except orjson.JSONDecodeError:
            return LocalCall(
                call.id, call.name, call.arguments, "Tool arguments are not valid JSON.", True
            )
        except ToolError as exc:
            return LocalCall(call.id, call.name, call.arguments, str(exc), True)
        except (OSError, ValueError, TypeError) as exc:  # a file's error, or arguments of the
            # wrong type (`"offset": "ten"`): the model reads it and tries again
            return LocalCall(
                call.id, call.name, call.arguments, f"{type(exc).__name__}: {exc}", True
            )
