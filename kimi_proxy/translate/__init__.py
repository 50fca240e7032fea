"""Anthropic Messages ⇄ OpenAI Chat Completions, pure (no I/O, no clock): the request
(`request.py` with `messages.py` and `tools.py`), a whole response (`response.py`), a stream
(`stream.py`, its content blocks in `blocks.py`; the theory of operation is its docstring), Kimi's
own tool-call markup (`kimi_markup.py`), agent-mode history (`agent_history.py`), the model's
identity in the system prompt (`identity.py`), token counts calibrated by the provider's reports
(`calibration.py`), thinking rules (`thinking.py`), structured output (`structured.py`), the
`web_search` server tool's blocks (`web_search.py`) and the SDK-style accumulator
(`accumulate.py`).

May import only `protocol` and `errors`. What it needs to know of a provider comes in as a
`ProviderProfile` (`protocol/profile.py`) and a `ModelChoice`; it never sees a connection.
"""
