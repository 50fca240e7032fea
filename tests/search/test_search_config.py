"""`[search]` in the config file, or the environment's first search variable (docs/CONFIG.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_proxy.config.pool_file import ConfigError, load_search
from kimi_proxy.config.settings import Settings


def load(tmp_path: Path, table: str | None, **env: str) -> object:
    settings = Settings(api_key="x")
    if table is not None:
        path = tmp_path / "config.toml"
        path.write_text(table)
        settings = Settings(api_key="x", config=path)
    return load_search(settings, env)


def test_without_a_table_the_first_variable_set_picks_the_backend(tmp_path: Path) -> None:
    both = load(tmp_path, None, SEARXNG_URL="http://searx:8888/", EXA_API_KEY="exa-key-0001")
    assert (both.backend, both.url, both.key_name) == ("exa", "https://api.exa.ai", "EXA_API_KEY")  # type: ignore[attr-defined]
    searx = load(tmp_path, None, SEARXNG_URL="http://searx:8888/")
    assert (searx.backend, searx.url) == ("searxng", "http://searx:8888")  # type: ignore[attr-defined]
    assert load(tmp_path, None) is None


def test_a_table_wins_and_names_its_key_by_variable(tmp_path: Path) -> None:
    table = '[search]\nbackend = "brave"\nkey = "${MY_BRAVE}"\nmax_results = 3\nprice_per_1k = 5\n'
    search = load(tmp_path, table, MY_BRAVE="brv-secret-9999", TAVILY_API_KEY="t")
    assert search.backend == "brave" and search.key == "brv-secret-9999"  # type: ignore[attr-defined]
    assert search.key_name == "MY_BRAVE" and search.max_results == 3  # type: ignore[attr-defined]
    assert search.url == "https://api.search.brave.com"  # type: ignore[attr-defined]
    assert load(tmp_path, '[search]\nbackend = "off"\n', BRAVE_API_KEY="b") is None


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('[search]\nbackend = "brave"\n', 'needs key = "${BRAVE_API_KEY}"'),
        ('[search]\nbackend = "brave"\nkey = "${UNSET_VAR}"\n', "${UNSET_VAR} is empty"),
        ('[search]\nbackend = "searxng"\n', "needs url"),
        ('[search]\nbackend = "bing"\n', "search.backend"),
        ('[search]\nbackend = "exa"\nkey = "k"\nmax_result = 3\n', "max_result"),
    ],
)
def test_a_table_that_cannot_work_is_a_config_error_naming_the_key(
    tmp_path: Path, table: str, says: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, table)
    assert says in str(error.value) and "CONFIG.md" in str(error.value)
