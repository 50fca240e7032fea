"""The view from outside: the live dashboard (`/dashboard`, its static files and SSE feed) and
the per-session status the Claude Code status line reads. Owns `feed.py` (what happened,
in-process) and `routes.py`; reads the pool and the request records, changes neither.

May import `config`, `providers`, `protocol` and `errors`; only the server imports it.
"""
