"""Anthropic Messages request → OpenAI Chat Completions request. Pure: no I/O.

The conversation is walked once. Tool results are lifted out of user messages into `tool`
messages placed right after the assistant message that made the calls, in call order; the rest
of that user message (text, images) follows them. Calls left without a result, and results
without a call, are repaired so strict providers accept the history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from kimi_proxy.errors import InvalidRequestError
from kimi_proxy.protocol.anthropic import (
    Base64Source,
    ContentBlock,
    ContentSource,
    DocumentBlock,
    ImageBlock,
    Message,
    MessagesRequest,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    Tool,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    WebSearchToolResultBlock,
    content_blocks,
)
from kimi_proxy.protocol.profile import ProviderProfile

from .agent_history import LocalCall, decode_transcript, is_progress_text
from .identity import rewrite_identity
from .tools import (
    render_tool_reference,
    upstream_tool_id,
    upstream_tool_name,
)
from .web_search import SEARCH_FUNCTION, results_text

log = logging.getLogger("kimi_proxy.request")

INTERRUPTED_CALL = "[tool call interrupted: no result was returned]"
EMPTY_RESULT = "(empty result)"
IMAGE_NOT_SHOWN = "[image not shown: this model reads text only]"
BILLING_HEADER_PREFIX = "x-anthropic-billing-header"


@dataclass(slots=True)
class _Conversation:
    """Accumulates OpenAI messages; consecutive user/assistant messages are merged."""

    profile: ProviderProfile
    tools_by_name: dict[str, Tool]
    accepts_images: bool = True
    messages: list[dict[str, Any]] = field(default_factory=list)
    pending_calls: list[str] = field(default_factory=list)
    upstream_ids: dict[str, str] = field(default_factory=dict)

    def append(self, message: dict[str, Any]) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == message["role"] in ("user", "assistant"):
            _merge_into(last, message)
        else:
            self.messages.append(message)

    def upstream_id(self, block: ToolUseBlock) -> str:
        if block.id not in self.upstream_ids:
            if self.profile.kimi_tool_ids:
                name = upstream_tool_name(block.name)
                self.upstream_ids[block.id] = f"functions.{name}:{len(self.upstream_ids)}"
            else:
                self.upstream_ids[block.id] = upstream_tool_id(block.id)
        return self.upstream_ids[block.id]

    def replayed_call_id(self, name: str, call_id: str) -> str:
        """The id of a call the proxy ran itself (agent mode, web search), numbered with the
        others for Kimi."""
        key = f"local:{len(self.upstream_ids)}:{call_id}"
        if self.profile.kimi_tool_ids:
            self.upstream_ids[key] = (
                f"functions.{upstream_tool_name(name)}:{len(self.upstream_ids)}"
            )
        else:
            self.upstream_ids[key] = call_id
        return self.upstream_ids[key]

    def close_pending_calls(self, results: dict[str, ToolResultBlock]) -> list[dict[str, Any]]:
        """Emit one tool message per pending call in call order; return images to attach."""
        images: list[dict[str, Any]] = []
        for call_id in self.pending_calls:
            result = results.pop(call_id, None)
            if result is None:
                text = INTERRUPTED_CALL
            else:
                text, result_images = self.render_result(result)
                images.extend(result_images)
            self.messages.append(tool_message(self.upstream_ids[call_id], text))
        self.pending_calls = []
        return images

    def render_result(self, result: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        content = result.content
        if isinstance(content, str):
            texts.append(content)
        elif content:
            for block in content:
                match block:
                    case TextBlock(text=text):
                        texts.append(text)
                    case ToolReferenceBlock(tool_name=name):
                        texts.append(render_tool_reference(name, self.tools_by_name))
                    case ImageBlock() if self.accepts_images:
                        images.append(image_part(block))
                        texts.append(_attached_below(block))
                    case ImageBlock(document_page=None):
                        texts.append(IMAGE_NOT_SHOWN)
                    case ImageBlock():  # a PDF page's image: its text is there already
                        pass
                    case DocumentBlock(source=TextSource() | ContentSource()):
                        texts.append(document_text(block))
                    case DocumentBlock():  # a 400 here would fail every later request
                        texts.append(document_not_shown(block))
                    case _:
                        raise InvalidRequestError(
                            f"Unsupported block type {block.type!r} inside a tool_result"
                        )
        return tool_result_text("\n".join(t for t in texts if t), result.is_error), images


def _attached_below(block: ImageBlock) -> str:
    if block.document_page is not None:
        return f"[image of the document's page {block.document_page}: attached below]"
    return "[image returned by the tool: attached below]"


def tool_result_text(text: str, is_error: bool) -> str:
    """A tool result as the provider sees it: errors marked, never empty."""
    text = text or EMPTY_RESULT
    return f"Error: {text}" if is_error else text


def tool_message(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def calls_ran(text: str, done: Sequence[LocalCall]) -> list[dict[str, Any]]:
    """A step's calls the proxy ran itself (agent mode, web search), after the text that led to
    them, and their results: the provider's messages for the turn's next step."""
    return [
        {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [tool_call(c.id, c.name, c.arguments) for c in done],
        },
        *(tool_message(c.id, tool_result_text(c.result, c.is_error)) for c in done),
    ]


def _merge_into(target: dict[str, Any], extra: dict[str, Any]) -> None:
    target_parts = _as_parts(target.get("content"))
    extra_parts = _as_parts(extra.get("content"))
    parts = target_parts + extra_parts
    target["content"] = _collapse_parts(parts) if parts else None
    if extra.get("tool_calls"):
        target.setdefault("tool_calls", []).extend(extra["tool_calls"])
    for key, value in extra.items():
        if key not in ("role", "content", "tool_calls"):
            target[key] = (target[key] + "\n" + value) if key in target else value


def _as_parts(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def _collapse_parts(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A plain string when every part is text (the most widely accepted form)."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, Base64Source):
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url
    return {"type": "image_url", "image_url": {"url": url}}


def _document_media(block: DocumentBlock) -> str:
    return getattr(block.source, "media_type", None) or block.source.type


def document_text(block: DocumentBlock) -> str:
    source = block.source
    if source.type == "content" and isinstance((source.model_extra or {}).get("content"), list):
        parts = (source.model_extra or {})["content"]  # a `content` source: its text blocks
        texts = [str(p.get("text") or "") for p in parts if isinstance(p, dict)]
        source = TextSource(type="text", data="\n\n".join(t for t in texts if t))
        block = block.model_copy(update={"source": source})
    if not isinstance(block.source, TextSource):
        raise InvalidRequestError(
            f"document blocks with a {_document_media(block)} source are not supported by this "
            "proxy: the provider accepts text only. Send the document's text as a text document "
            "instead."
        )
    title = f" title={block.title!r}" if block.title else ""
    return f"<document{title}>\n{block.source.data}\n</document>"


def document_not_shown(block: DocumentBlock) -> str:
    """What the model reads for a tool's non-text document (Claude Code's Read of a PDF)."""
    return (
        f"[{_document_media(block)} document not shown: the provider accepts text only. "
        "Extract its text to read it, for example with pdftotext.]"
    )


def system_text(system: str | Sequence[TextBlock] | None) -> str:
    """The system prompt as one string; Claude Code's per-version billing line is dropped."""
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    texts = [b.text for b in system if b.text and not b.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n\n".join(texts)


def _blocks(message: Message) -> list[ContentBlock]:
    if isinstance(message.content, str):
        return [TextBlock(type="text", text=message.content)]
    return message.content


def _convert_assistant(conv: _Conversation, blocks: list[ContentBlock], index: int) -> None:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    searches: dict[str, ServerToolUseBlock] = {}
    for block in blocks:
        match block:
            case TextBlock(text=text):
                if text and not is_progress_text(text):
                    texts.append(text)
            case ToolUseBlock():
                calls.append(tool_call(conv.upstream_id(block), block.name, _json(block.input)))
                conv.pending_calls.append(block.id)
            case ThinkingBlock(thinking=thinking):
                if thinking:
                    reasoning.append(thinking)
            case RedactedThinkingBlock(data=data):
                local_calls = decode_transcript(data)
                if local_calls:  # agent mode ran these itself: replay calls and results
                    _replay(conv, texts, reasoning, local_calls)
                    texts, reasoning = [], []
            case ServerToolUseBlock():
                searches[block.id] = block
            case WebSearchToolResultBlock():  # a search the proxy ran: its call and results
                use = searches.pop(block.tool_use_id, None)
                query = str(use.input.get("query", "")) if use is not None else ""
                arguments = _json({"query": query})
                text = results_text(query, block.content)
                done = LocalCall(block.tool_use_id, SEARCH_FUNCTION, arguments, text, False)
                _replay(conv, texts, reasoning, [done])
                texts, reasoning = [], []
            case _:
                raise _unsupported(block.type, index, "an assistant")
    _append_assistant(conv, texts, reasoning, calls)


def _replay(
    conv: _Conversation, texts: list[str], reasoning: list[str], done: list[LocalCall]
) -> None:
    """Calls the proxy ran itself, with their results, after the text that led to them."""
    replayed = [tool_call(conv.replayed_call_id(c.name, c.id), c.name, c.arguments) for c in done]
    _append_assistant(conv, texts, reasoning, replayed)
    conv.messages += [
        tool_message(call["id"], tool_result_text(local.result, local.is_error))
        for call, local in zip(replayed, done, strict=True)
    ]


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": upstream_tool_name(name), "arguments": arguments},
    }


def _append_assistant(
    conv: _Conversation, texts: list[str], reasoning: list[str], calls: list[dict[str, Any]]
) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if reasoning and conv.profile.reasoning_history_field:
        message[conv.profile.reasoning_history_field] = "\n".join(reasoning)
    if message["content"] is not None or calls:
        conv.append(message)


def _convert_user(conv: _Conversation, blocks: list[ContentBlock], index: int) -> None:
    results: dict[str, ToolResultBlock] = {}
    parts: list[dict[str, Any]] = []
    for block in blocks:
        match block:
            case ToolResultBlock():
                results[block.tool_use_id] = block
            case TextBlock(text=text):
                if text:
                    parts.append({"type": "text", "text": text})
            case ImageBlock() if conv.accepts_images:
                parts.append(image_part(block))
            case ImageBlock(document_page=None):
                parts.append({"type": "text", "text": IMAGE_NOT_SHOWN})
            case ImageBlock():  # a PDF page's image: its text is there already
                pass
            case DocumentBlock():
                parts.append({"type": "text", "text": document_text(block)})
            case ThinkingBlock() | RedactedThinkingBlock():
                pass
            case _:
                raise _unsupported(block.type, index, "a user")
    lead: list[dict[str, Any]] = conv.close_pending_calls(results)
    for orphan in results.values():  # results whose call is not in the previous turn
        text, images = conv.render_result(orphan)
        lead.append({"type": "text", "text": f"[result of tool call {orphan.tool_use_id}]\n{text}"})
        lead.extend(images)
    if lead or parts:
        conv.append({"role": "user", "content": _collapse_parts(lead + parts)})


def _unsupported(block_type: str, index: int, where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"messages.{index}: content block type {block_type!r} is not supported in {where} message"
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def has_images(request: MessagesRequest) -> bool:
    """Whether any message, or any tool result in one, carries an image."""
    return any(isinstance(block, ImageBlock) for block in content_blocks(request))


def convert_messages(
    request: MessagesRequest | Any,
    profile: ProviderProfile,
    tools_by_name: dict[str, Tool],
    accepts_images: bool = True,
    served_by: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The whole conversation as OpenAI messages (system first). `served_by` (model, provider)
    rewrites Claude Code's claim that the model is Claude (`identity.py`)."""
    conv = _Conversation(profile, tools_by_name, accepts_images)
    system = system_text(request.system)
    if served_by is not None:
        system = rewrite_identity(system, *served_by)
    if system:
        conv.messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        blocks = _blocks(message)
        if message.role == "assistant":
            conv.close_pending_calls({})
            _convert_assistant(conv, blocks, index)
        elif message.role == "user":
            _convert_user(conv, blocks, index)
        else:
            conv.close_pending_calls({})
            text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock) and b.text)
            if text:
                conv.messages.append({"role": "system", "content": text})
    conv.close_pending_calls({})
    return conv.messages
