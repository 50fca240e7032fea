"""PDF `document` blocks replaced, in a request, by what the model can read: one text block with
each page's text under its number, then images of the first pages (marked `document_page`, so
a model that reads text only gets the text alone, without a note per image).

Top-level and inside a `tool_result` (Claude Code's Read of a PDF). Anthropic's answers are
kept: a document that is not a PDF at all is a 400, as is a top-level PDF over 100 pages (in a
tool result, where a 400 would end the session, its first 100 pages are read and the model told).
An encrypted, damaged or image-only PDF becomes a one-line note for the model.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeGuard

from kimi_proxy.errors import InvalidRequestError
from kimi_proxy.protocol.anthropic import (
    Base64Source,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    Request,
    TextBlock,
    content_blocks,
    map_blocks,
)

from .pages import MAX_PAGES, PdfPages, Unreadable, looks_like_pdf, read_pdf

PDF = "application/pdf"


def is_pdf_block(block: Any) -> TypeGuard[DocumentBlock]:
    return (
        isinstance(block, DocumentBlock)
        and isinstance(block.source, Base64Source)
        and block.source.media_type == PDF
    )


def has_pdfs(request: MessagesRequest | CountTokensRequest) -> bool:
    """Whether any message, or any tool result in one, carries a base64 PDF."""
    return any(is_pdf_block(block) for block in content_blocks(request))


def expand_pdfs(request: Request, page_images: int) -> Request:
    """The request with every base64 PDF read into text (and page images)."""

    def read(block: Any, index: int, in_tool_result: bool) -> list[Any]:
        if is_pdf_block(block):
            return _pages(block, page_images, index, in_tool_result=in_tool_result)
        return [block]

    return map_blocks(request, read)


def _pages(
    block: DocumentBlock, page_images: int, index: int, *, in_tool_result: bool
) -> list[TextBlock | ImageBlock]:
    assert isinstance(block.source, Base64Source)
    try:
        data = base64.b64decode(block.source.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"messages.{index}: a document's base64 data is not valid base64."
        ) from None
    if not looks_like_pdf(data):
        raise InvalidRequestError(
            f"messages.{index}: a document says {PDF} but its data is not a PDF."
        )
    name = f"PDF document {block.title!r}" if block.title else "PDF document"
    read = read_pdf(data, page_images)
    del data
    if isinstance(read, Unreadable):
        return [_text(f"[The {name} {read.reason}: its text cannot be read.]")]
    if read.page_count > MAX_PAGES and not in_tool_result:
        raise InvalidRequestError(
            f"messages.{index}: a PDF may have at most {MAX_PAGES} pages; this one has "
            f"{read.page_count}. Send the pages you need."
        )
    blocks: list[TextBlock | ImageBlock] = [_text(_page_texts(name, block.title, read))]
    for number, png in enumerate(read.images, 1):
        source = Base64Source(
            type="base64", media_type="image/png", data=base64.b64encode(png).decode()
        )
        blocks.append(ImageBlock(type="image", source=source, document_page=number))
    return blocks


def _page_texts(name: str, title: str | None, read: PdfPages) -> str:
    shown = len(read.texts)
    head = f"<document{f' title={title!r}' if title else ''} pages={read.page_count}>"
    notes = []
    if read.page_count > shown:
        notes.append(f"[Only the first {shown} of its {read.page_count} pages are read.]")
    if not read.has_text:
        images = f" Images of its first {len(read.images)} pages follow." if read.images else ""
        notes.append(f"[The {name} has no text layer (a scan?): no text could be read.{images}]")
        return "\n".join([head, *notes, "</document>"])
    pages = [f"--- Page {n} ---\n{text.strip()}" for n, text in enumerate(read.texts, 1)]
    return "\n".join([head, *notes, *pages, "</document>"])


def _text(text: str) -> TextBlock:
    return TextBlock(type="text", text=text)
