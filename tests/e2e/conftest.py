"""The end-to-end stack: mock OpenAI upstream <- Envoy (shipped config) <- ext_authz sidecar.

The sidecar runs in-process on the session's event loop (so tests use the async
OpenAI client); Envoy and the store are real processes.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import openai
import pytest
import pytest_asyncio

from aigw_sidecar.api.v1 import keys_pb2
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.settings import Settings
from tests.e2e.envoy_process import EnvoyProcess, render_shipped_config
from tests.e2e.upstream import MockUpstream
from tests.servers import ChannelStubs

_prefixes = itertools.count()


@dataclass
class Gateway(ChannelStubs):
    """Envoy in front of the mock upstream, checking keys with a sidecar."""

    envoy: EnvoyProcess
    sidecar: Sidecar
    channel: grpc.aio.Channel
    upstream: MockUpstream

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy.ports['llm_gateway']}"

    def client(self, secret: str, **kwargs: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1", api_key=secret, max_retries=0, timeout=10,
            **kwargs,  # type: ignore[arg-type]
        )

    async def create_key(self, **limits: int) -> keys_pb2.CreateKeyResponse:
        reply: keys_pb2.CreateKeyResponse = await self.keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                name=f"e2e-{uuid.uuid4().hex[:12]}",
                project="chat",
                limits=keys_pb2.Limits(**limits),
            )
        )
        return reply


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstream]:
    server = MockUpstream().start()
    yield server
    server.stop()


async def open_gateway(
    redis_url: str,
    upstream: MockUpstream,
    workdir: Path,
    envoy_config: Callable[[int, int], str] = render_shipped_config,
    **settings: object,
) -> Gateway:
    """``envoy_config(sidecar_port, upstream_port)``: Envoy's config (the shipped one)."""
    sidecar = await start(
        Settings(
            listen="127.0.0.1:0", redis_url=redis_url, key_prefix=f"e2e{next(_prefixes)}",
            data_dir=workdir, shutdown_grace_s=0.5, **settings,  # type: ignore[arg-type]
        )
    )
    envoy = EnvoyProcess(envoy_config(sidecar.port, upstream.port), workdir / "envoy")
    try:
        envoy.start()
    except Exception:
        await sidecar.stop()
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}")
    return Gateway(envoy, sidecar, channel, upstream)


async def close_gateway(gateway: Gateway) -> None:
    gateway.envoy.stop()
    await gateway.channel.close()
    await gateway.sidecar.stop()


@pytest_asyncio.fixture(scope="module")
async def gateway(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """Envoy + sidecar on the session Valkey, failing closed (the defaults)."""
    gw = await open_gateway(valkey_url, upstream, tmp_path_factory.mktemp("gateway"))
    yield gw
    await close_gateway(gw)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def gateway_factory(
    upstream: MockUpstream, tmp_path: Path
) -> AsyncIterator[GatewayFactory]:
    """Gateways on stores a test may stop; every one is closed after the test."""
    opened: list[Gateway] = []

    async def make(redis_url: str, **settings: object) -> Gateway:
        gw = await open_gateway(redis_url, upstream, tmp_path / f"gw{len(opened)}", **settings)
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        await close_gateway(gw)
