"""Configuration: the settings from flags and the environment (`settings.py`), the TOML file's
validated model (`pool_file.py`, its `[gateway]` table in `gateway.py`) and how the file, or the
environment alone, becomes the provider pool's spec; and the proxy's own files, its user's
alone (`private_files.py`: 0600, replaced at once).

Pure: text, environment and today's date in, typed specs (or a `ConfigError` that says where
and what to do) out. May import `providers` (the catalog of known providers), `translate`,
`protocol` and `errors`; the server, the gateway and the CLI read it.
"""
