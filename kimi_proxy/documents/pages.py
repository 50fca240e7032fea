"""A PDF's pages as text, and its first pages as PNG images, read with pdfium (pypdfium2).

pypdfium2 over pypdf, measured on a 100-page text PDF (bench/pdf.py, docs/BENCHMARKS.md): it
reads the text in a third of pypdf's CPU time, and it renders pages to images, which pypdf
cannot. A file pdfium cannot open is `Unreadable` with the reason in one line (encrypted,
damaged), never an exception: the model is told, the session goes on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pypdfium2
import pypdfium2.raw as pdfium_c

MAX_PAGES = 100  # Anthropic's limit for a PDF in a request
PAGE_IMAGE_SCALE = 1.0  # 72 dpi: a US Letter page is 612 × 792 pixels
MAX_IMAGE_BYTES = 4 * 2**20  # of all page images of one document (the provider's body bound)


@dataclass(frozen=True, slots=True)
class PdfPages:
    texts: list[str]  # page N's text at index N-1 (at most MAX_PAGES)
    page_count: int  # all pages of the file
    images: list[bytes]  # PNG images of the first pages

    @property
    def has_text(self) -> bool:
        return any(text.strip() for text in self.texts)


@dataclass(frozen=True, slots=True)
class Unreadable:
    reason: str  # "is encrypted", "is damaged or not a PDF"


def looks_like_pdf(data: bytes) -> bool:
    """A PDF starts with `%PDF-` (some writers put a few bytes first: within 1 KB)."""
    return b"%PDF-" in data[:1024]


def read_pdf(data: bytes, page_images: int) -> PdfPages | Unreadable:
    """The text of the first `MAX_PAGES` pages, and `page_images` of them rendered."""
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            return Unreadable("is encrypted (it needs a password)")
        return Unreadable("is damaged or not a PDF pdfium can read")
    try:
        count = len(document)
        texts: list[str] = []
        images: list[bytes] = []
        budget = MAX_IMAGE_BYTES
        for index in range(min(count, MAX_PAGES)):
            page = document[index]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_range().replace("\r\n", "\n"))
            textpage.close()
            if index < page_images and budget > 0:
                png = _png(page)
                if len(png) <= budget:
                    images.append(png)
                    budget -= len(png)
                else:
                    budget = 0
            page.close()
        return PdfPages(texts, count, images)
    except pypdfium2.PdfiumError:
        return Unreadable("is damaged (pdfium failed on a page)")
    finally:
        document.close()


def _png(page: pypdfium2.PdfPage) -> bytes:
    bitmap = page.render(scale=PAGE_IMAGE_SCALE)
    out = io.BytesIO()
    bitmap.to_pil().save(out, format="PNG", optimize=False)
    bitmap.close()
    return out.getvalue()
