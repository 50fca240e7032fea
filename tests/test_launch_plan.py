"""The launcher's decision between the team gateway, a running proxy and one of its own."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from kimi_proxy.cli.launch_plan import Found, NoSetup, Plan, Running, decide

NOTHING = Found(
    gateway_url=None,
    user_key=False,
    port=8090,
    on_port="nothing",
    usable=False,
    config_id="mine",
    key_variables=("MOONSHOT_API_KEY", "OPENROUTER_API_KEY"),
    config_file=None,
)

on_port = st.one_of(
    st.sampled_from(["nothing", "other"]),
    st.builds(Running, st.sampled_from(["mine", "theirs", "None"]), st.booleans()),
)
found = st.builds(
    Found,
    gateway_url=st.sampled_from([None, "https://kimi.example.com", "http://10.0.0.5:8090", "kimi"]),
    user_key=st.booleans(),
    port=st.just(8090),
    on_port=on_port,
    usable=st.booleans(),
    config_id=st.just("mine"),
    key_variables=st.just(("MOONSHOT_API_KEY",)),
    config_file=st.sampled_from([None, "/home/me/.config/kimi-proxy/config.toml"]),
)


def test_nothing_found_is_one_message_naming_everything_looked_for() -> None:
    plan = decide(NOTHING)
    assert isinstance(plan, NoSetup)
    for looked_for in ("KIMI_GATEWAY_URL", "KIMI_USER_KEY", "127.0.0.1:8090", "MOONSHOT_API_KEY"):
        assert looked_for in plan.message
    assert "Groq" not in plan.message


def test_a_config_file_without_a_usable_candidate_says_why() -> None:
    notes = ("myvllm:kimi skipped: myvllm has no key set.",)
    plan = decide(replace(NOTHING, config_file="/c.toml", config_notes=notes))
    assert isinstance(plan, NoSetup)
    assert "/c.toml" in plan.message and notes[0] in plan.message


def test_a_gateway_needs_a_user_key_and_an_http_url() -> None:
    gateway = replace(NOTHING, gateway_url="https://kimi.example.com")
    assert isinstance(decide(gateway), NoSetup)
    assert "KIMI_USER_KEY" in decide(gateway).message  # type: ignore[union-attr]
    assert decide(replace(gateway, user_key=True)) == Plan(
        "gateway", "using the team gateway https://kimi.example.com"
    )
    assert isinstance(
        decide(replace(gateway, gateway_url="kimi.example.com", user_key=True)), NoSetup
    )


def test_local_keys_start_a_proxy_and_a_matching_running_one_is_reused() -> None:
    mine = replace(NOTHING, usable=True)
    assert decide(mine) == Plan(
        "local", "starting kimi-proxy on 127.0.0.1:8090 (provider key variables)"
    )
    running = replace(mine, on_port=Running("mine", owned_by_live_launcher=False))
    assert decide(running) == Plan(
        "running", "using the kimi-proxy already running on 127.0.0.1:8090"
    )


@given(found)
def test_the_decision(found: Found) -> None:
    plan = decide(found)
    valid_gateway = found.gateway_url is not None and found.gateway_url.startswith("http")
    if found.gateway_url is not None:
        assert isinstance(plan, Plan) == (valid_gateway and found.user_key)
        assert isinstance(plan, NoSetup) or plan.mode == "gateway"
        return
    running = found.on_port if isinstance(found.on_port, Running) else None
    if running is None and not found.usable:
        assert isinstance(plan, NoSetup)
        return
    assert isinstance(plan, Plan)
    if plan.mode == "running":  # never another setup's proxy while we have our own keys
        assert running is not None
        assert not found.usable or (
            running.config_id == "mine" and not running.owned_by_live_launcher
        )
    else:
        assert plan.mode == "local" and found.usable
        assert plan.new_port == (found.on_port != "nothing")
