"""Documents the model cannot read as sent: a PDF (`document` block, base64
`application/pdf`) becomes the text of each page, with its number, and images of its first
pages for a model that reads images (`pages.py` reads a PDF with pdfium; `expand.py` puts the
result in the request's place, top-level or inside a `tool_result`).

May import `config`, `translate`, `protocol` and `errors`; the server drives it, off the event
loop (pdfium is not thread-safe: one worker thread reads every PDF).
"""
