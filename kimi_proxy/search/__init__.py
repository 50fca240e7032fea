"""Web search for Anthropic's `web_search` server tool: the backends (SearXNG, Brave, Tavily,
Exa) behind one interface (`backends.py` shapes each API's request and reads its answer, pure;
`client.py` sends it), and the turn that runs searches between model calls (`turn.py`).

May import `config` (its `SearchSettings`), `providers` (a call through the pool), `translate`,
`upstream`, `protocol` and `errors`; the server drives it. Knows neither the gateway, the
dashboard nor agent mode.
"""
