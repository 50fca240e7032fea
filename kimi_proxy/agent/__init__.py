"""Agent mode: the proxy runs a tool loop itself (`loop.py`) with its own tools (`tools.py`)
inside a sandboxed working folder (`sandbox.py`), for clients that cannot run tools.

May import `providers` (a call's opened stream), `translate`, `upstream`, `protocol` and
`errors`; the server drives it. Knows neither the gateway nor the dashboard.
"""
