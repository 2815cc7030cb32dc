"""The composition root: builds settings' objects, wires them, and tears them down.

Store (embedded or external) -> RedisKeyStore -> services -> servicers ->
grpc.aio server with health and reflection. On SIGTERM or SIGINT: health goes
NOT_SERVING, in-flight calls get ``shutdown_grace_s`` to finish, then the store
pool closes and an embedded store is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2, admission_pb2_grpc, keys_pb2, keys_pb2_grpc
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.server.health import StoreHealthWatcher
from aigw_sidecar.server.servicers import AdmissionServicer, KeyManagementServicer
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.embedded import EmbeddedStore
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore

log = logging.getLogger("aigw_sidecar")

SERVICE_NAMES = (
    admission_pb2.DESCRIPTOR.services_by_name["Admission"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyManagement"].full_name,
)


def connect_store(url: str, settings: Settings) -> Redis:
    """A redis.asyncio client with short timeouts and one retry on a dropped connection.

    The pool blocks (up to the store timeout) when all its connections are busy,
    rather than failing the call at once.
    """
    timeout_s = settings.store_timeout_ms / 1000
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=settings.store_max_connections,
        timeout=timeout_s,
        # Retry only a refused or dropped connection (a restarted store), never
        # a timeout: a timed-out script may already have run.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return Redis(connection_pool=pool)


@dataclass
class Sidecar:
    """A running sidecar; ``port`` is the bound gRPC port."""

    settings: Settings
    server: grpc.aio.Server
    redis: Redis
    watcher: StoreHealthWatcher
    port: int
    embedded: EmbeddedStore | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        await self.watcher.shutdown()
        await self.server.stop(self.settings.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        await self.redis.aclose()
        if self.embedded is not None:
            self.embedded.stop()
        log.info("stopped")


async def start(settings: Settings) -> Sidecar:
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedStore(settings.data_dir, settings.embedded_binary)
        url = await embedded.start()
        log.info("embedded store ready in %s", settings.data_dir)
    redis = connect_store(url, settings)
    store = RedisKeyStore(
        redis, Keyspace(settings.key_prefix), dedupe_ms=settings.usage_dedupe_s * 1000
    )

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    admission_pb2_grpc.add_AdmissionServicer_to_server(
        AdmissionServicer(AdmissionService(store)), server
    )
    keys_pb2_grpc.add_KeyManagementServicer_to_server(
        KeyManagementServicer(KeyService(store)), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError(f"could not listen on {settings.listen}")

    watcher = StoreHealthWatcher(
        health_servicer, store.ping, SERVICE_NAMES, settings.health_interval_s
    )
    await watcher.check_once()
    await server.start()
    sidecar = Sidecar(settings, server, redis, watcher, port, embedded)
    sidecar._tasks.append(asyncio.create_task(watcher.run()))
    host = settings.listen.rsplit(":", 1)[0]
    log.info("listening on %s:%d", host, port)
    return sidecar


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    sidecar = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining (grace %.1f s)", settings.shutdown_grace_s)
    await sidecar.stop()
