"""PDFs the model can read: a base64 `application/pdf` document, top-level or inside a
`tool_result`, reaches the provider as each page's text (and, for a model that reads images,
images of its first pages). Broken PDFs become a note; what Anthropic refuses stays refused."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import anthropic
import httpx
import pypdf
import pytest
from support.proxy import proxy_for
from support.upstream import Reply, text_stream

from bench.pdfs import CORRUPT_PDF, book, make_pdf
from kimi_proxy.providers import KIMI_K2


def echo(body: dict[str, Any], call: int) -> Reply:
    return text_stream("ok")


def pdf_block(data: bytes, **extra: Any) -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    source = {"type": "base64", "media_type": "application/pdf", "data": encoded}
    return {"type": "document", "source": source, **extra}


def ask(content: list[dict[str, Any]], **overrides: Any) -> tuple[Any, list[dict[str, Any]]]:
    """One request with `content` as the user's message; the messages the provider got."""
    with proxy_for(echo, **overrides) as proxy:
        message = proxy.client().messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item]
        )
        health = httpx.get(f"{proxy.url}/health", timeout=2)
    assert health.status_code == 200
    return message, proxy.upstream.bodies[-1]["messages"]


def user_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    content = messages[-1]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def test_a_pdf_reaches_the_model_as_page_texts_and_images_of_its_first_pages() -> None:
    pages = [f"Page text {n}: the word is LANTERN-{n}." for n in range(1, 8)]
    _, sent = ask([pdf_block(make_pdf(pages), title="spec"), {"type": "text", "text": "Read it"}])
    parts = user_parts(sent)
    text = parts[0]["text"]
    assert text.startswith("<document title='spec' pages=7>")
    for number, page in enumerate(pages, 1):
        assert f"--- Page {number} ---\n{page}" in text
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 5  # [documents] page_images, by default
    assert all(i["image_url"]["url"].startswith("data:image/png;base64,") for i in images)
    assert parts[-1] == {"type": "text", "text": "Read it"}
    assert "JVBER" not in json.dumps(sent)  # no PDF bytes go on


def test_a_text_only_model_gets_the_text_without_page_images_or_notes() -> None:
    _, sent = ask(
        [pdf_block(make_pdf(["only text"])), {"type": "text", "text": "hi"}], model=KIMI_K2
    )
    dumped = json.dumps(sent)
    assert "only text" in dumped and "image_url" not in dumped and "image not shown" not in dumped


def test_claude_codes_read_of_a_pdf_inside_a_tool_result_becomes_the_tool_messages_text() -> None:
    with proxy_for(echo, model=KIMI_K2) as proxy:
        proxy.client().messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "read spec.pdf"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "Read",
                            "input": {"file_path": "spec.pdf"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [pdf_block(make_pdf(["alpha", "beta"]))],
                        }
                    ],
                },
            ],  # type: ignore[list-item]
        )
    [tool] = [m for m in proxy.upstream.bodies[-1]["messages"] if m["role"] == "tool"]
    assert "--- Page 1 ---\nalpha" in tool["content"] and "--- Page 2 ---\nbeta" in tool["content"]


def encrypted_pdf() -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(["secret"]))))
    writer.encrypt(user_password="pw", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "note"),
    [
        (CORRUPT_PDF, "is damaged or not a PDF pdfium can read"),
        (encrypted_pdf(), "is encrypted"),
        (make_pdf([None, None]), "has no text layer (a scan?)"),
    ],
    ids=["corrupt", "encrypted", "image-only"],
)
def test_a_pdf_that_cannot_be_read_gives_the_model_a_one_line_note(data: bytes, note: str) -> None:
    message, sent = ask([pdf_block(data), {"type": "text", "text": "what does it say?"}])
    assert message.content[0].text == "ok"
    assert note in json.dumps(sent)


def test_a_100_page_pdf_is_read_whole_and_a_101_page_one_refused_as_anthropic_does() -> None:
    _, sent = ask([pdf_block(book(100)), {"type": "text", "text": "summarise"}], model=KIMI_K2)
    text = user_parts(sent)[0]["text"]
    assert "--- Page 100 ---\nPage 100 of the book" in text and "pages=100>" in text
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask([pdf_block(book(101, words_per_page=5)), {"type": "text", "text": "summarise"}])
    assert "at most 100 pages; this one has 101" in str(refused.value)
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_document_that_is_not_a_pdf_at_all_is_a_400() -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask([pdf_block(b"hello, not a pdf"), {"type": "text", "text": "read"}])
    assert "its data is not a PDF" in str(refused.value)


def test_text_and_content_documents_keep_working_and_citations_are_accepted() -> None:
    text_doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "plain words"},
        "citations": {"enabled": True},
    }
    content_doc = {
        "type": "document",
        "source": {
            "type": "content",
            "content": [
                {"type": "text", "text": "chunk one"},
                {"type": "text", "text": "chunk two"},
            ],
        },
    }
    _, sent = ask([text_doc, content_doc, {"type": "text", "text": "read"}])
    dumped = json.dumps(sent)
    assert "plain words" in dumped and "chunk one" in dumped and "chunk two" in dumped


def test_a_40_mb_body_is_refused_with_413_and_the_server_keeps_serving() -> None:
    with proxy_for(echo) as proxy:
        big = base64.b64encode(b"%PDF-1.4\n" + b"0" * (30 * 2**20)).decode()
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": big,
                            },
                        }
                    ],
                }
            ],
        }
        response = httpx.post(
            f"{proxy.url}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=30
        )
        after = proxy.client().messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert after.content[0].text == "ok"  # type: ignore[union-attr]


def test_a_pdf_whose_media_type_escapes_its_slash_is_read_too() -> None:
    """JSON may write `application\\/pdf`: the PDF is read all the same."""
    data = base64.b64encode(make_pdf(["escaped slash"])).decode()
    raw = (
        '{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":['
        '{"type":"document","source":{"type":"base64","media_type":"application\\/pdf",'
        f'"data":"{data}"}}}},{{"type":"text","text":"read"}}]}}]}}'
    )
    with proxy_for(echo) as proxy:
        answer = httpx.post(
            f"{proxy.url}/v1/messages",
            content=raw.encode(),
            headers={"content-type": "application/json"},
            timeout=10,
        )
    assert answer.status_code == 200, answer.text
    assert "escaped slash" in json.dumps(proxy.upstream.bodies[-1])
