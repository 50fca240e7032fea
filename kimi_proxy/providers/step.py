"""One model call of a turn that spans several (agent mode, web search): the call opened
through the pool with the conversation so far, streamed through the turn's translator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kimi_proxy.errors import BadGatewayError
from kimi_proxy.translate.blocks import Event
from kimi_proxy.translate.stream import StreamTranslator
from kimi_proxy.upstream.client import close_shielded

from .call import Opened

OpenStep = Callable[[dict[str, Any]], Awaitable[Opened]]


async def model_step(
    open_step: OpenStep,
    payload: dict[str, Any],
    messages: list[dict[str, Any]],
    translator: StreamTranslator,
) -> AsyncIterator[Event]:
    """The events of one streamed call with `messages`; the caller ends the step."""
    opened = await open_step(
        {
            **payload,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    response = opened.response
    try:
        client = opened.target.key.client
        async with contextlib.aclosing(client.chunk_batches(response)) as batches:
            async for batch in batches:
                for chunk in batch:
                    for event in translator.feed(chunk):
                        yield event
    finally:
        opened.call.settle(None)
        await close_shielded(response.aclose)
    if not translator.finished:
        raise BadGatewayError("The provider closed the stream before finishing the step.")
