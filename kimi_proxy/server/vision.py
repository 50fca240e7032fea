"""Images for a model that cannot see them: with `[route] vision = "FAMILY"`, each image in a
request (top-level or inside a `tool_result`) whose candidates read text only is described first
by the vision family, and the description goes to the text model in the image's place. A
description is remembered by the image's digest: Claude Code resends the same image with every
later request of the conversation, and it is described once. Without `vision`, or when the
description fails, the image stays (the text model gets today's note).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from starlette.datastructures import Headers

from kimi_proxy.errors import ProxyError
from kimi_proxy.protocol.anthropic import (
    Base64Source,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    content_blocks,
    map_blocks,
)
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.providers.catalog import load_catalog
from kimi_proxy.providers.choice import choose
from kimi_proxy.providers.routing import candidates_for
from kimi_proxy.translate.messages import has_images

from .dispatch import plan_call
from .state import ProxyState

log = logging.getLogger("kimi_proxy")
DESCRIBE = (
    "Describe this image for a model that cannot see it and must work from your words alone: "
    "every text in it verbatim, the layout, the things shown, colours and numbers that matter. "
    "Plain prose, no preamble."
)


def needs_describing(state: ProxyState, request: MessagesRequest) -> bool:
    """A vision family is set, the request carries images, and none of its candidates sees."""
    spec = state.pool.spec
    if spec.routes.vision is None or not has_images(request):
        return False
    choice = choose(spec, request.model, load_catalog())
    candidates = candidates_for(state.pool, choice, "default", request.model)
    return bool(candidates) and not any(c.limits.accepts_images for c in candidates)


async def describe_images(
    state: ProxyState, request: MessagesRequest, headers: Headers
) -> MessagesRequest:
    """The request with each image replaced by its description."""
    images = {_key(block): block for block in _images(request)}
    missing = {key: image for key, image in images.items() if state.descriptions.get(key) is None}
    if missing:
        described = await asyncio.gather(
            *(_describe(state, image, headers) for image in missing.values())
        )
        for key, text in zip(missing, described, strict=True):
            if text is not None:
                state.descriptions.put(key, text)
    return map_blocks(request, lambda block, index, in_result: [_as_text(state, block)])


async def _describe(state: ProxyState, image: ImageBlock, headers: Headers) -> str | None:
    vision = state.pool.spec.routes.vision
    assert vision is not None
    asked = MessagesRequest(
        model=vision,
        max_tokens=1024,
        messages=[
            {"role": "user", "content": [image, TextBlock(type="text", text=DESCRIBE)]}  # type: ignore[list-item]
        ],
    )
    record = RequestRecord("vision", "POST", "/v1/messages")
    call = await plan_call(state, asked, headers, record)
    try:
        opened = await call.open(may_stream_wait=True)
        completion = await opened.target.key.client.read_completion(opened.response)
    except ProxyError as exc:
        log.warning("an image was not described by the %s family: %s", vision, exc.message)
        return None
    finally:
        call.finish(None)
    message = (completion.get("choices") or [{}])[0].get("message") or {}
    text = message.get("content")
    return text.strip() if isinstance(text, str) and text.strip() else None


def _key(block: ImageBlock) -> str:
    source = block.source
    data = source.data if isinstance(source, Base64Source) else source.url
    return hashlib.sha256(data.encode()).hexdigest()


def _images(request: MessagesRequest) -> list[ImageBlock]:
    return [
        block
        for block in content_blocks(request)
        if isinstance(block, ImageBlock) and block.document_page is None
    ]


def _as_text(state: ProxyState, block: Any) -> Any:
    if not isinstance(block, ImageBlock) or block.document_page is not None:
        return block
    description = state.descriptions.get(_key(block))
    if description is None:
        return block  # not described: the text model gets the usual note
    return TextBlock(type="text", text=f"[An image, described by another model: {description}]")
