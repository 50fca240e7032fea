"""Inbound Anthropic Messages API models (pydantic v2), validated once at the edge.

Every model allows unknown fields: Claude Code adds new ones every few weeks and they must never
turn into errors. Content blocks are a discriminated union on `type`; a type the proxy does not
know parses as `UnknownBlock`, so the request translator can answer a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Base64Source(_Open):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(_Open):
    type: Literal["url"]
    url: str


class TextSource(_Open):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class ContentSource(_Open):
    """Any other document source (e.g. `content`, `file`); refused by the translator."""

    type: str


ImageSource = Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class ImageBlock(_Open):
    type: Literal["image"]
    source: ImageSource
    #: Set by the proxy on a PDF page's image (documents/): a text-only model gets the page's
    #: text, already in the request, without a note for the image.
    document_page: int | None = None


class DocumentBlock(_Open):
    type: Literal["document"]
    source: Base64Source | UrlSource | TextSource | ContentSource
    title: str | None = None


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolReferenceBlock(_Open):
    type: Literal["tool_reference"]
    tool_name: str


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str = ""


class ServerToolUseBlock(_Open):
    """A tool the API ran itself (`web_search`), in an assistant message's history."""

    type: Literal["server_tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class WebSearchToolResultBlock(_Open):
    """A web search's results (or its error object), right after its `server_tool_use`."""

    type: Literal["web_search_tool_result"]
    tool_use_id: str
    content: list[dict[str, Any]] | dict[str, Any] = Field(default_factory=list)


class UnknownBlock(_Open):
    type: str


def _block_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) and kind in _KNOWN_BLOCK_TYPES else "unknown"


ResultContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolReferenceBlock, Tag("tool_reference")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated["ToolResultBlock", Tag("tool_result")]
    | Annotated[ServerToolUseBlock, Tag("server_tool_use")]
    | Annotated[WebSearchToolResultBlock, Tag("web_search_tool_result")]
    | Annotated[UnknownBlock, Tag("unknown")],
    Discriminator(_block_tag),
]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultContentBlock] | None = None
    is_error: bool = False


ContentBlock = ResultContentBlock

_KNOWN_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_reference",
        "tool_use",
        "thinking",
        "redacted_thinking",
        "tool_result",
        "server_tool_use",
        "web_search_tool_result",
    }
)


class Message(_Open):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Open):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    defer_loading: bool = False


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class MessagesRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)  # Anthropic's API refuses an empty list
    max_tokens: int = Field(default=4096, ge=1)
    system: str | list[TextBlock] | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = None
    top_k: int | None = None


class CountTokensRequest(_Open):
    model: str
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None


ToolResultBlock.model_rebuild()
Message.model_rebuild()
#: A list of messages, of blocks: validated a piece at a time (`server/large_bodies.py`).
MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
BLOCKS: TypeAdapter[list[ContentBlock]] = TypeAdapter(list[ContentBlock])


def content_blocks(request: MessagesRequest | CountTokensRequest) -> Iterator[Any]:
    """Every content block of the messages, each tool result followed by its parts."""
    for message in request.messages:
        if isinstance(message.content, str):
            continue
        for block in message.content:
            yield block
            if isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                yield from block.content


Request = TypeVar("Request", MessagesRequest, CountTokensRequest)


def map_blocks(request: Request, change: Callable[[Any, int, bool], list[Any]]) -> Request:
    """The request with each content block, and each part of a tool result, replaced by what
    `change(block, message index, inside a tool result)` makes of it (none, itself, several)."""
    messages = []
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str):
            messages.append(message)
            continue
        content: list[Any] = []
        for block in message.content:
            if isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                parts = [made for part in block.content for made in change(part, index, True)]
                content.append(block.model_copy(update={"content": parts}))
            else:
                content += change(block, index, False)
        messages.append(message.model_copy(update={"content": content}))
    return request.model_copy(update={"messages": messages})


def describe_validation_error(
    exc: ValidationError, at: tuple[int | str, ...] = (), offset: int = 0
) -> str:
    """One readable line per problem: `messages.0.role: Input should be 'user' or …`. For a
    list validated a piece at a time: the list is at `at`, the piece starts at `offset`."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = err["loc"]
        if at and loc and isinstance(loc[0], int):
            loc = (*at, loc[0] + offset, *loc[1:])
        parts.append(f"{_readable_loc(loc) or 'body'}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _readable_loc(loc: tuple[int | str, ...]) -> str:
    """Drop pydantic's union-branch markers (`str`, `list[…]`, block-type tags) from a location."""
    kept: list[str] = []
    previous: int | str | None = None
    for part in loc:
        is_marker = isinstance(part, str) and (
            part == "str"
            or part.startswith(("list[", "tagged-union["))
            or (isinstance(previous, int) and (part in _KNOWN_BLOCK_TYPES or part == "unknown"))
        )
        if not is_marker:
            kept.append(str(part))
        previous = part
    return ".".join(kept)
