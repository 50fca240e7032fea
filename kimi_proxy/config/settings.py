"""Settings from the environment (and CLI flags, which override it), via pydantic-settings."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kimi_proxy.providers import GROQ_URL, ProviderProfile, profile_by_name, profile_for_url
from kimi_proxy.providers.models import ModelRouter

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # bind addresses that stay local


#: The tools agent mode may run in the proxy (`KIMI_LOCAL_TOOLS`; `kimi_proxy.agent.tools`).
DEFAULT_SET = ("LS", "Read", "Glob", "Grep", "Write", "Edit")  # `all`; Bash only by name
ALL_TOOLS = (*DEFAULT_SET, "Bash")
#: Parsed, validated and translated, a body of this much structure holds the event loop about
#: 50 ms at worst (docs/RELIABILITY.md); Claude Code's longest sessions have a few thousand.
MAX_BODY_VALUES = 50_000


def parse_tool_names(value: str) -> tuple[str, ...]:
    """`KIMI_LOCAL_TOOLS`: a comma list of tool names, `all` for every tool but Bash."""
    names: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part.lower() == "all":
            names += DEFAULT_SET
        elif part in ALL_TOOLS:
            names.append(part)
        else:
            raise ValueError(f"unknown local tool {part!r}; choose from {', '.join(ALL_TOOLS)}")
    return tuple(dict.fromkeys(names))


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting has an environment variable (named in `validation_alias`) and a CLI flag."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=False)

    host: str = Field("127.0.0.1", validation_alias=_env("host", "KIMI_PROXY_HOST"))
    port: int = Field(8090, ge=0, le=65535, validation_alias=_env("port", "KIMI_PROXY_PORT"))
    upstream_url: str = Field(GROQ_URL, validation_alias=_env("upstream_url", "KIMI_UPSTREAM_URL"))
    api_key: SecretStr | None = Field(
        None, validation_alias=_env("api_key", "KIMI_API_KEY", "GROQ_API_KEY")
    )
    # No default model id: ids rot (Groq shut its Kimi down); the catalog's live Kimi for the
    # provider is taken when these are unset (pool_config.py).
    model: str | None = Field(None, validation_alias=_env("model", "KIMI_MODEL"))
    small_model: str | None = Field(None, validation_alias=_env("small_model", "KIMI_SMALL_MODEL"))
    model_rules: str = Field(
        "haiku=small", validation_alias=_env("model_rules", "KIMI_MODEL_RULES")
    )
    max_output_tokens: int | None = Field(
        None, ge=1, validation_alias=_env("max_output_tokens", "KIMI_MAX_OUTPUT_TOKENS")
    )
    provider: str | None = Field(None, validation_alias=_env("provider", "KIMI_PROVIDER"))
    connect_timeout: float = Field(
        10.0, gt=0, validation_alias=_env("connect_timeout", "KIMI_CONNECT_TIMEOUT")
    )
    read_timeout: float = Field(
        120.0, gt=0, validation_alias=_env("read_timeout", "KIMI_READ_TIMEOUT")
    )
    ping_interval: float = Field(
        10.0, gt=0, validation_alias=_env("ping_interval", "KIMI_PING_INTERVAL")
    )
    max_retries: int = Field(3, ge=0, validation_alias=_env("max_retries", "KIMI_MAX_RETRIES"))
    retry_budget: float = Field(
        30.0, ge=0, validation_alias=_env("retry_budget", "KIMI_RETRY_BUDGET_SECONDS")
    )
    # Bodies being read and parsed at once, all requests together (a parsed body takes several
    # times its size in memory); never less than one body of max_body_bytes.
    max_bodies_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        validation_alias=_env("max_bodies_bytes", "KIMI_MAX_BODIES_BYTES"),
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, validation_alias=_env("max_body_bytes", "KIMI_MAX_BODY_BYTES")
    )
    #: A body's commas and opening brackets outside strings (what parsing and validating it
    #: costs the event loop grows with them, not with its bytes): over this, 413 before parsing.
    max_body_values: int = Field(
        MAX_BODY_VALUES, ge=100, validation_alias=_env("max_body_values", "KIMI_MAX_BODY_VALUES")
    )
    max_streams: int = Field(512, ge=1, validation_alias=_env("max_streams", "KIMI_MAX_STREAMS"))
    #: Where each model's token-count calibration is kept across restarts: `auto` (the state
    #: folder's calibration.json), a path, or `off`.
    calibration_file: str = Field(
        "auto", validation_alias=_env("calibration_file", "KIMI_CALIBRATION_FILE")
    )
    working_dir: Path = Field(
        default_factory=Path.cwd, validation_alias=_env("working_dir", "KIMI_WORKING_DIR")
    )
    local_tools: str = Field("", validation_alias=_env("local_tools", "KIMI_LOCAL_TOOLS"))
    max_tool_iterations: int = Field(
        15, ge=1, validation_alias=_env("max_tool_iterations", "MAX_TOOL_ITERATIONS")
    )
    auth_token: SecretStr | None = Field(
        None, validation_alias=_env("auth_token", "KIMI_PROXY_AUTH_TOKEN")
    )
    cors_origins: str = Field("", validation_alias=_env("cors_origins", "KIMI_CORS_ORIGINS"))
    allowed_hosts: str = Field("", validation_alias=_env("allowed_hosts", "KIMI_ALLOWED_HOSTS"))
    log_file: Path | None = Field(None, validation_alias=_env("log_file", "KIMI_LOG_FILE"))
    log_level: str = Field("info", validation_alias=_env("log_level", "KIMI_LOG_LEVEL"))
    debug: bool = Field(False, validation_alias=_env("debug", "KIMI_DEBUG"))

    config: Path | None = Field(None, validation_alias=_env("config", "KIMI_PROXY_CONFIG"))
    dashboard: Literal["auto", "on", "off"] = Field(
        "auto", validation_alias=_env("dashboard", "KIMI_DASHBOARD")
    )

    users_file: Path | None = Field(None, validation_alias=_env("users_file", "KIMI_USERS_FILE"))
    drain_seconds: float = Field(
        120.0, ge=0, validation_alias=_env("drain_seconds", "KIMI_DRAIN_SECONDS")
    )
    user_key: SecretStr | None = Field(None, validation_alias=_env("user_key", "KIMI_USER_KEY"))
    # `./kimi.sh` on a team gateway: its URL (with KIMI_USER_KEY); no local proxy then.
    gateway_url: str | None = Field(None, validation_alias=_env("gateway_url", "KIMI_GATEWAY_URL"))
    # The team gateway's shared store; each may also come from `[gateway]` in the config file.
    redis_url: SecretStr | None = Field(None, validation_alias=_env("redis_url", "KIMI_REDIS_URL"))
    on_redis_down: Literal["fail_open", "fail_closed"] | None = Field(
        None, validation_alias=_env("on_redis_down", "KIMI_ON_REDIS_DOWN")
    )

    workers: int = Field(1, ge=1, le=64, validation_alias=_env("workers", "KIMI_WORKERS"))
    # Set by the launcher for the proxy it starts, and shown by /health: the launcher trusts
    # only the proxy that shows it (not another program that took the port meanwhile).
    launch_id: str | None = Field(None, validation_alias=_env("launch_id", "KIMI_LAUNCH_ID"))
    # The debug log carries prompts and answers (the provider's payloads and chunks) only
    # when asked: it is a user's conversation.
    log_prompts: bool = Field(False, validation_alias=_env("log_prompts", "KIMI_LOG_PROMPTS"))
    #: Log each request's steps to its first token, wall and CPU time (`kimi_proxy.trace`).
    trace_steps: bool = Field(False, validation_alias=_env("trace_steps", "KIMI_TRACE_STEPS"))
    # `/metrics` without the operator's token, for a scrape inside the cluster.
    metrics_public: bool = Field(
        False, validation_alias=_env("metrics_public", "KIMI_METRICS_PUBLIC")
    )
    body_timeout: float = Field(
        30.0, gt=0, validation_alias=_env("body_timeout", "KIMI_BODY_TIMEOUT")
    )

    @field_validator("model_rules")
    @classmethod
    def _valid_model_rules(cls, value: str) -> str:
        ModelRouter.from_spec(value, "big", "small")  # raises on a malformed rule
        return value

    @field_validator("local_tools")
    @classmethod
    def _known_local_tools(cls, value: str) -> str:
        parse_tool_names(value)  # raises on an unknown name
        return value

    @cached_property
    def profile(self) -> ProviderProfile:
        if self.provider:
            return profile_by_name(self.provider)
        return profile_for_url(self.upstream_url)

    @cached_property
    def router(self) -> ModelRouter:
        """The rules over the models named here (the pool resolves unset ones first)."""
        big = self.model or ""
        return ModelRouter.from_spec(self.model_rules, big, self.small_model or big)

    @property
    def dashboard_enabled(self) -> bool:
        """`auto`: on when the proxy binds a loopback address only."""
        if self.dashboard == "auto":
            return self.host in LOOPBACK_HOSTS
        return self.dashboard == "on"

    @property
    def cors_origin_list(self) -> list[str]:
        return _comma_list(self.cors_origins)

    @property
    def allowed_host_list(self) -> list[str]:
        """Extra allowed `Host` names; binding beyond loopback allows any unless listed."""
        hosts = _comma_list(self.allowed_hosts)
        if not hosts and self.host not in LOOPBACK_HOSTS:
            return ["*"]
        return hosts

    @property
    def api_key_value(self) -> str | None:
        """The provider key in clear (for the upstream header only), None when unset or blank."""
        value = self.api_key.get_secret_value().strip() if self.api_key else ""
        return value or None

    @property
    def auth_token_value(self) -> str | None:
        return self.auth_token.get_secret_value() if self.auth_token else None


def state_dir() -> Path:
    """The user's own folder (0700) for the logs and Claude Code's settings files."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(base) / "kimi-proxy"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def calibration_path(settings: Settings) -> Path | None:
    if settings.calibration_file == "off":
        return None
    if settings.calibration_file == "auto":
        return state_dir() / "calibration.json"
    return Path(settings.calibration_file).expanduser()


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Every setting as its environment variable: how worker processes get the CLI's flags."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        alias = field.validation_alias
        if value is None or not isinstance(alias, AliasChoices):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[str(alias.choices[1])] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI overrides (None means: not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)  # type: ignore[arg-type]
