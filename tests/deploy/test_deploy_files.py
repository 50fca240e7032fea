"""The files that ship the gateway: the Kubernetes manifests validate offline against the
Kubernetes schemas (kubernetes-validate bundles them) and agree with the proxy (probes, drain,
labels, config); the compose file runs Redis with AOF and three instances behind one port; the
image installs the package the tests install and starts the entry point the tests start — run
here, from this checkout's install, exactly as the image runs it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from support.proxy import TEST_KEY, wait_healthy
from support.sse_client import BASIC
from support.upstream import scripted_upstream, text_stream

from kimi_proxy.cli.launcher import free_port
from kimi_proxy.config.pool_file import read_config_file
from kimi_proxy.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def documents(folder: Path = MANIFESTS) -> list[dict[str, Any]]:
    """What `kubectl apply -f FOLDER` applies (its own files, not its sub-folders')."""
    docs: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


@pytest.mark.parametrize(
    "doc",
    documents() + documents(MANIFESTS / "examples"),
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_each_manifest_is_valid_for_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_manifests_hold_what_a_gateway_needs() -> None:
    kinds = {d["kind"] for d in documents()}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "StatefulSet",
        "NetworkPolicy",
    }
    # Applying the folder never replaces the real Secret with an example's empty keys.
    assert "Secret" not in kinds
    (example,) = [d for d in documents(MANIFESTS / "examples") if d["kind"] == "Secret"]
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env.get("KIMI_DRAIN_SECONDS") or Settings.model_fields["drain_seconds"].default)
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain + pause  # the drain is never cut
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        by_kind("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
        next(s for s in by_kind("Service") if s["metadata"]["name"] == "kimi-proxy")["spec"][
            "selector"
        ],
    ):
        assert selector.items() <= labels.items()
    assert container["envFrom"][0]["secretRef"]["name"] == example["metadata"]["name"]
    (redis,) = by_kind("StatefulSet")
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    assert "--appendonly" in server["args"]
    # Redis takes the Secret's password, and the proxy's URL (the ConfigMap) carries it.
    password = server["args"][server["args"].index("--requirepass") + 1]
    assert password == "$(REDIS_PASSWORD)"
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"]}
    assert from_secret["REDIS_PASSWORD"] == {"name": "kimi-proxy-keys", "key": "REDIS_PASSWORD"}
    assert "REDIS_PASSWORD" in example["stringData"]
    gateway = tomllib.loads(by_kind("ConfigMap")[0]["data"]["config.toml"])["gateway"]
    assert gateway["redis_url"].startswith("redis://:${REDIS_PASSWORD}@kimi-proxy-redis:")
    # Only the proxy's pods reach it.
    (policy,) = by_kind("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == redis["spec"]["selector"]["matchLabels"]
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": labels}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (ingress,) = [d for d in documents(MANIFESTS / "examples") if d["kind"] == "Ingress"]
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    assert ingress["spec"]["tls"]


def test_the_shipped_config_files_load_as_the_proxy_loads_them(tmp_path: Path) -> None:
    config_map = by_kind("ConfigMap")[0]["data"]["config.toml"]
    for text in (config_map, (ROOT / "deploy/compose/config.toml").read_text()):
        path = tmp_path / "config.toml"
        path.write_text(text)
        read_config_file(path)  # raises ConfigError on anything the proxy would refuse
    assert "redis_url" in tomllib.loads(config_map)["gateway"]


def test_compose_runs_redis_with_aof_and_three_instances_behind_one_port() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    proxy = services["proxy"]
    assert proxy["deploy"]["replicas"] == 3
    assert proxy["environment"]["KIMI_REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0"
    assert "--requirepass" in services["redis"]["command"]
    assert float(proxy["stop_grace_period"].rstrip("s")) > 120
    # Plain HTTP carries user keys: published on this machine only.
    assert list(services["balancer"]["ports"]) == ["127.0.0.1:8090:8090"]
    nginx = (ROOT / "deploy/compose/nginx.conf").read_text()
    assert "proxy_buffering off" in nginx and "http_503" in nginx
    # Recreated replicas get new addresses: nginx asks compose's DNS again.
    assert "resolver 127.0.0.11" in nginx and "proxy_pass $kimi_proxy;" in nginx
    retried = nginx.split("proxy_next_upstream", 1)[1].split(";", 1)[0].split()
    assert retried == ["http_503", "non_idempotent"]  # never a POST that may have done work
    assert "ssl_certificate" in (ROOT / "deploy/compose/nginx-tls.conf.example").read_text()


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def test_the_image_installs_the_package_and_starts_its_console_script() -> None:
    steps = dockerfile()
    installs = [arg for op, arg in steps if op == "RUN" and "pip install" in arg]
    assert len(installs) == 1 and installs[0].rstrip().endswith("pip install --no-cache-dir .")
    final = final_stage()
    assert final[0][1].endswith("-slim")
    assert not any(op == "RUN" and ("apt-get" in arg or "pip" in arg) for op, arg in final)
    user = next(arg for op, arg in final if op == "USER")
    assert user not in ("root", "0")
    entry = next(arg for op, arg in final if op == "ENTRYPOINT")
    assert yaml.safe_load(entry) == ["kimi-proxy", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kimi-proxy"] == "kimi_proxy.cli:main"


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, arg in final_stage():
        if op == "ENV":
            for pair in shlex.split(arg):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_entry_point_serves_as_the_image_runs_it(tmp_path: Path) -> None:
    """The image's ENTRYPOINT and ENV, run from this checkout's install (the one the tests
    use): it binds every interface, answers its health check, and serves a request."""
    entry = yaml.safe_load(next(arg for op, arg in final_stage() if op == "ENTRYPOINT"))
    binary = Path(sys.executable).parent / entry[0]  # the console script pip installed
    with scripted_upstream(lambda b, n: text_stream("from the image")) as upstream:
        port = free_port()
        env = {
            **os.environ,
            **{k: v for k, v in image_env().items() if k != "PATH"},
            "KIMI_PROXY_PORT": str(port),
            "KIMI_PROXY_AUTH_TOKEN": "operator-token-0123456789abcdef0123",
            "KIMI_UPSTREAM_URL": upstream.base_url,
            "KIMI_API_KEY": TEST_KEY,
            "KIMI_MODEL": "kimi-big",
        }
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(binary), *entry[1:]], env=env, stdout=out, stderr=out)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 30, log)
            answer = httpx.post(
                f"{url}/v1/messages",
                json=BASIC,
                headers={"x-api-key": "operator-token-0123456789abcdef0123"},
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert answer.status_code == 200
    assert answer.json()["content"][0]["text"] == "from the image"


def docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not docker_engine(), reason="no container engine on this machine")
def test_the_image_builds_and_serves_one_request() -> None:
    tag = "kimi-proxy:test"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=900)
    with scripted_upstream(lambda b, n: text_stream("from the container")) as upstream:
        port = free_port()
        container = subprocess.run(
            [
                "docker", "run", "-d", "--rm", "--network", "host",
                "-e", f"KIMI_PROXY_PORT={port}",
                "-e", "KIMI_PROXY_AUTH_TOKEN=operator-token-0123456789abcdef0123",
                "-e", f"KIMI_UPSTREAM_URL={upstream.base_url}",
                "-e", f"KIMI_API_KEY={TEST_KEY}",
                "-e", "KIMI_MODEL=kimi-big",
                tag,
            ],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 60)
            answer = httpx.post(
                f"{url}/v1/messages",
                json=BASIC,
                headers={"x-api-key": "operator-token-0123456789abcdef0123"},
            )
        finally:
            subprocess.run(["docker", "stop", container], capture_output=True)
    assert answer.json()["content"][0]["text"] == "from the container"
