"""The provider connection: our HTTP/1.1 transport under httpx's types (`transport.py`) and the
client that opens a chat-completions call, retries what is safe to retry and hands the decoded
events on (`client.py`).

Knows HTTP and OpenAI's chat-completions framing, not the Anthropic side: may import only
`protocol` and `errors`. `providers` drives it; `translate` never sees it.
"""
