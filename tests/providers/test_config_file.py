"""The pool's configuration: the TOML file as the issue writes it, the environment alone, and
bad files that stop start-up with the file, the key and what to do."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from kimi_proxy.config.pool_file import (
    ConfigError,
    read_config_file,
    spec_from_environment,
    spec_from_file,
)
from kimi_proxy.config.settings import Settings
from kimi_proxy.providers.catalog import load_catalog

TODAY = date(2026, 12, 4)
CATALOG = load_catalog()
ISSUE_EXAMPLE = (Path(__file__).parents[1] / "fixtures/config/issue_17_example.toml").read_text()
KEYS = {
    "GROQ_API_KEY": "gsk_one_1111",
    "GROQ_API_KEY_2": "gsk_two_2222",
    "MOONSHOT_API_KEY": "sk-m_3333",
}


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return spec_from_file(read_config_file(path), str(path), env or KEYS, CATALOG, TODAY)


def test_the_issues_example_is_accepted_as_written(tmp_path: Path) -> None:
    spec = load(tmp_path, ISSUE_EXAMPLE)
    assert [k.name for k in spec.providers["groq"].keys] == ["GROQ_API_KEY", "GROQ_API_KEY_2"]
    assert spec.providers["moonshot"].limits == (
        ("requests", "minute", 200),
        ("tokens", "minute", 400000),
    )
    # Groq's Kimi model is gone (2026-04-15) and OpenRouter has no key: one line each.
    assert [c.label for c in spec.families["kimi"]] == ["moonshot:kimi-k2.6"]
    assert any(
        "groq:moonshotai/kimi-k2-instruct-0905 skipped" in n and "2026-04-15" in n
        for n in spec.notes
    )
    assert [n for n in spec.notes if n.startswith("openrouter")] == [
        "openrouter:moonshotai/kimi-k2.6 skipped: openrouter has no key set."
    ]
    assert spec.routes.max_wait_s == 20 and spec.family_for("background") == "kimi"
    assert spec.families["kimi"][0].limits.fixed_temperature == 1.0


def test_openrouter_joins_when_its_key_is_set_and_the_model_splits_at_the_first_colon(
    tmp_path: Path,
) -> None:
    text = ISSUE_EXAMPLE.replace(
        '"openrouter:moonshotai/kimi-k2.6"', '"openrouter:moonshotai/kimi-k2.6:free"'
    )
    spec = load(tmp_path, text, {**KEYS, "OPENROUTER_API_KEY": "sk-or-4444"})
    assert [c.label for c in spec.families["kimi"]] == [
        "moonshot:kimi-k2.6",
        "openrouter:moonshotai/kimi-k2.6:free",
    ]
    assert spec.providers["openrouter"].keys[0].name == "OPENROUTER_API_KEY"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[provider]\nname = 'x'", "not valid TOML"),
        (
            "[family.kimi]\ncandidates = ['nowhere:kimi']",
            "provider 'nowhere' is neither configured nor in the catalog",
        ),
        ("[family.kimi]\ncandidates = ['kimi-k2.6']", "write it as provider:model"),
        (
            "[family.kimi]\ncandidates = ['openrouter:moonshotai/kimi-k2.6']",
            "has no usable candidate",
        ),
        (
            "[[provider]]\nname = 'moonshot'\nkeys = ['k']\nlimits = { rpm = -1 }",
            "provider.0.limits.rpm",
        ),
        ("[[provider]]\nname = 'moonshot'\nkeys = ['k']\nlimits = { tpm = 'lots' }", "limits.tpm"),
        ("[[provider]]\nname = 'moonshot'\nkey = ['k']", "provider.0.key: Extra inputs"),
        ("[[provider]]\nname = 'mine'\nkeys = ['k']", "base_url is missing"),
        ("[route]\ndefault = 'nothing'", "no [family.nothing] is defined"),
        ("[route]\nmax_wait_s = -3", "route.max_wait_s"),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_what_to_do(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, {})
    assert str(tmp_path / "config.toml") in str(info.value)
    assert words in str(info.value)


def test_a_bad_file_stops_serve_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[family.kimi]\ncandidates = ['nowhere:kimi']\n")
    result = subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def _from_env(env: dict[str, str]):  # type: ignore[no-untyped-def]
    settings = Settings(api_key=env.get("GROQ_API_KEY"))
    return spec_from_environment(settings, env, CATALOG, TODAY)


def test_without_a_file_every_provider_with_a_key_variable_joins_the_kimi_family() -> None:
    spec = _from_env(
        {"MOONSHOT_API_KEY": "sk-1", "OPENROUTER_API_KEY": "sk-2", "TOGETHER_API_KEY": ""}
    )
    assert [c.label for c in spec.families["kimi"]] == [
        "moonshot:kimi-k2.6",
        "openrouter:moonshotai/kimi-k2.6",
    ]
    assert spec.legacy_router is None


def test_groq_alone_still_works_on_the_model_groq_suggests() -> None:
    spec = _from_env({"GROQ_API_KEY": "gsk_1234"})
    assert [c.label for c in spec.families["kimi"]] == ["groq:openai/gpt-oss-120b"]
    assert any("groq serves no Kimi model any more" in n for n in spec.notes)
    assert spec.providers["groq"].keys[0].name == "GROQ_API_KEY"


def test_the_legacy_settings_keep_one_provider_and_their_model_rules() -> None:
    settings = Settings(
        upstream_url="http://127.0.0.1:9/v1", api_key="k-5678", model="big", small_model="small"
    )
    spec = spec_from_environment(settings, {}, CATALOG, TODAY)
    assert spec.legacy_router is not None
    assert [c.model for c in spec.candidates("default", "claude-opus-5-5")] == ["big"]
    assert [c.model for c in spec.candidates("background", "claude-haiku-5-5")] == ["small"]
    assert spec.providers["openai-compatible"].keys[0].name == "…5678"


def test_the_example_in_docs_config_is_accepted(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    [example] = [block for block in doc.split("```toml\n")[1:2]]
    text = example.split("```")[0]
    spec = load(tmp_path, text, {"GROQ_API_KEY": "gsk_1", "MOONSHOT_API_KEY": "sk-2"})
    assert [c.label for c in spec.families["kimi"]] == ["moonshot:kimi-k2.6"]
    assert [c.label for c in spec.candidates("background", "claude-haiku-5-5")] == [
        "moonshot:kimi-k2.7-code-highspeed",
        "groq:openai/gpt-oss-120b",
    ]
    assert spec.family_for("long_context") == "long"
    assert spec.providers["office-vllm"].keys == ()
