"""The team gateway: users with their own keys and limits, shared by every instance through
Redis when it has one. Owns `users.py` / `redis_users.py` (the people and their hashed keys),
`window.py` (the sliding-window rule, pure), `store.py` + `lua/` (that rule in this process or
in Redis), `limits.py` and `key_budgets.py` (users' and provider keys' admission), `link.py`
(the connection's health and background work), `metering.py` (usage), `shared_view.py` (the
sessions' totals and last requests every instance shows), `runtime.py` (one instance's gateway)
and `commands.py` (`kimi-proxy users | usage`).

May import `config`, `providers`, `protocol` and `errors`; only the server and the CLI import
it. Knows neither the dashboard nor agent mode.
"""
