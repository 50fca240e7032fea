"""The ground floor, data only, usable by every package: the Anthropic wire models
(`anthropic.py`), what one provider's OpenAI-compatible side accepts and costs (`profile.py`),
the SSE codec (`sse.py`), the record of one request (`record.py`) and how long a provider asks
us to wait (`waits.py`). Imports nothing of the proxy.
"""
