"""The HTTP server: the ASGI app (`app.py`), the routes (`routes.py`, glue only), the streamed
body and its relay (`streaming.py`, `relay.py`), graceful drain (`drain.py`), the security
middleware (`security.py`), the per-process state (`state.py`), metrics and logs
(`observability.py`, `collectors.py`, `gc_pauses.py`), the bounds on a request's head and body
(`wire.py`, `bodies.py`).

The top of the running proxy: may import every package below it (`gateway`, `web`, `agent`,
`config`, `providers`, `translate`, `upstream`, `protocol`, `errors`); only `cli` imports it.
"""
