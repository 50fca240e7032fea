"""PDFs made for the benchmarks and the tests, byte by byte: text pages (one line each, Helvetica),
pages without text (a drawn rectangle: what a scan looks like to a text extractor), and broken
files. No PDF library is needed to make them."""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def make_pdf(pages: Sequence[str | None], *, compress: bool = False) -> bytes:
    """A valid PDF whose page N shows `pages[N]` (None: a page with a drawing and no text)."""
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % i for i in page_ids)
    objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)))
    for index, text in enumerate(pages):
        content_id = page_ids[index] + 1
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content_id, font_id)
        )
        if text is None:
            stream = b"0.2 0.2 0.2 rg 72 72 468 648 re f"
        else:
            lines = [
                line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                for line in text.split("\n")
            ]
            body = b" T* ".join(b"(%s) Tj" % line.encode("latin-1") for line in lines)
            stream = b"BT /F1 12 Tf 14 TL 72 720 Td " + body + b" ET"
        if compress:
            packed = zlib.compress(stream)
            objects.append(
                b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream"
                % (len(packed), packed)
            )
        else:
            objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def book(pages: int, words_per_page: int = 300) -> bytes:
    """A long text document: page N says `Page N` then many words, in 50 lines."""
    texts = []
    for number in range(1, pages + 1):
        words = [f"word{(number * 7 + i) % 997}" for i in range(words_per_page)]
        lines = [" ".join(words[i : i + 6]) for i in range(0, len(words), 6)]
        texts.append("\n".join([f"Page {number} of the book", *lines]))
    return make_pdf(texts, compress=True)


CORRUPT_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nthis is not a pdf any more\n"
