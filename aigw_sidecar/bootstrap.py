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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aigw_sidecar import __version__
from aigw_sidecar.admission.observed import ObservedAdmissionService
from aigw_sidecar.admission.recovery import AdmittedChecks, UnknownOutcomes
from aigw_sidecar.admission.settlement import UsageSettler
from aigw_sidecar.api.v1 import admission_pb2, admission_pb2_grpc, keys_pb2, keys_pb2_grpc
from aigw_sidecar.errors import AigwError, FailedPrecondition, StoreUnavailable
from aigw_sidecar.keys.audit import AuditedKeyService
from aigw_sidecar.limits.alerts import AlertSink, BudgetAlerts
from aigw_sidecar.pricing.builtin import builtin_table
from aigw_sidecar.pricing.loader import LOAD_ERRORS, PricingFile
from aigw_sidecar.server.access_log import AccessLogServicer
from aigw_sidecar.server.admin_auth import (
    AdminAuthenticator,
    AdminAuthInterceptor,
    current_principal,
    load_admin_tokens,
)
from aigw_sidecar.server.admin_http import OFF as ADMIN_HTTP_OFF
from aigw_sidecar.server.admin_http import AdminHttp, build_app
from aigw_sidecar.server.console import CONSOLE_PATH
from aigw_sidecar.server.decoding import MalformedRequestInterceptor
from aigw_sidecar.server.ext_authz import ExtAuthzOptions, ExtAuthzServicer
from aigw_sidecar.server.health import StoreHealthWatcher
from aigw_sidecar.server.listeners import bind, is_local_address, server_credentials
from aigw_sidecar.server.metrics import (
    MeasurableStore,
    MeasuredStore,
    Metrics,
    MetricsEndpoint,
    TelemetryInterceptor,
    multiprocess_registry,
)
from aigw_sidecar.server.reflection_pool import ENVOY_SERVICE_NAMES, reflection_pool
from aigw_sidecar.server.servicers import AdmissionServicer, KeyManagementServicer
from aigw_sidecar.server.webhook import WebhookSink
from aigw_sidecar.settings import Settings, masked_url, unpriced_fallback
from aigw_sidecar.store.audit_log import RedisAuditLog
from aigw_sidecar.store.client import StoreClient, connect
from aigw_sidecar.store.embedded import EmbeddedStore
from aigw_sidecar.store.event_log import RedisEventLog
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.multiplexed import MultiplexedScripts
from aigw_sidecar.store.multiplexed import supports as multiplexed_supports
from aigw_sidecar.store.redis_store import RedisKeyStore

if TYPE_CHECKING:  # imported at run time only when tracing is on
    from aigw_sidecar.server.tracing import Tracing

log = logging.getLogger("aigw_sidecar")

SERVICE_NAMES = (
    admission_pb2.DESCRIPTOR.services_by_name["Admission"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyManagement"].full_name,
)
# Services that require an admin token.
ADMIN_SERVICE_NAMES = (keys_pb2.DESCRIPTOR.services_by_name["KeyManagement"].full_name,)


def connect_store(url: str, settings: Settings) -> StoreClient:
    """A store client (a single server, or a Redis Cluster for ``redis+cluster://``).

    Short timeouts and no automatic resend of a command; see ``store/client.py``.
    """
    return connect(
        url,
        timeout_s=settings.store_timeout_ms / 1000,
        max_connections=settings.store_max_connections,
    )


def admin_authenticator(settings: Settings) -> AdminAuthenticator:
    """The admin token check, or RuntimeError when the admin plane would be left open.

    Without a token KeyManagement (gRPC and HTTP) is served only on a loopback
    address or a unix socket (with a warning); on any other address the sidecar
    refuses to start.
    """
    tokens = load_admin_tokens(
        settings.admin_token, settings.admin_token_file, settings.admin_principal
    )
    address = settings.admin_listen or settings.listen
    if not tokens:
        if not is_local_address(address):
            raise RuntimeError(
                f"refusing to serve KeyManagement on {address} without an admin token: "
                "set AIGW_ADMIN_TOKEN or --admin-token-file, or move the admin plane to "
                "loopback or a unix socket path with --admin-listen (an abstract socket "
                "has no permissions: every local user can connect)"
            )
        http = settings.admin_http_listen
        if http.lower() not in ADMIN_HTTP_OFF and not is_local_address(http):
            raise RuntimeError(
                f"refusing to serve the HTTP admin API on {http} without an admin token: "
                "set AIGW_ADMIN_TOKEN or --admin-token-file, or listen on loopback "
                "(--admin-http-listen 127.0.0.1:8080), or turn it off (--admin-http-listen off)"
            )
        log.warning(
            "NO ADMIN TOKEN CONFIGURED: KeyManagement on %s accepts every local caller; "
            "set AIGW_ADMIN_TOKEN or --admin-token-file", address,
        )
    return AdminAuthenticator(tokens)


NOT_SERVING_NOTICE_S = 0.05
# Long enough for the second release of an unknown outcome (recovery.CONFIRM_S).
UNKNOWN_OUTCOMES_DRAIN_S = 2.5
# At most this long on stop to export the last spans (tracing on).
TRACING_SHUTDOWN_S = 5.0


@dataclass
class Sidecar:
    """A running sidecar; ``port`` is the bound gRPC port."""

    settings: Settings
    server: grpc.aio.Server
    redis: StoreClient
    watcher: StoreHealthWatcher
    port: int
    embedded: EmbeddedStore | None = None
    admin_server: grpc.aio.Server | None = None  # None: KeyManagement is on ``server``
    admin_port: int = 0
    admin_http: AdminHttp | None = None  # the HTTP/JSON admin API, when on
    pricing: PricingFile | None = None
    multiplexed: MultiplexedScripts | None = None
    access_log: AccessLogServicer | None = None
    ext_authz: ExtAuthzServicer | None = None
    unknown_outcomes: UnknownOutcomes | None = None
    metrics: Metrics | None = None
    metrics_endpoint: MetricsEndpoint | None = None
    webhook: WebhookSink | None = None
    tracing: Tracing | None = None
    # Background work the sidecar owns: cancelled by ``stop`` before the pool closes.
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)

    def start_task(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the background until ``stop``."""
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        await self.watcher.shutdown()
        # A moment for health watchers (load balancers, Envoy) to see NOT_SERVING
        # before the listener stops taking calls.
        await asyncio.sleep(NOT_SERVING_NOTICE_S)
        if self.admin_http is not None:
            await self.admin_http.stop()
        if self.admin_server is not None:
            await self.admin_server.stop(self.settings.shutdown_grace_s)
        await self.server.stop(self.settings.shutdown_grace_s)
        if self.access_log is not None:  # the last settlements, before the pool closes
            await self.access_log.drain()
        if self.unknown_outcomes is not None:  # releases still due, while the store answers
            await self.unknown_outcomes.drain(UNKNOWN_OUTCOMES_DRAIN_S)
        if self.webhook is not None:
            await self.webhook.stop()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        for task in self._tasks:
            task.cancel()
        # A health check still running must not open a connection after the pool closed;
        # bounded, as a client library may turn a cancellation into an error it handles.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await self.redis.aclose()
        if self.multiplexed is not None:
            await self.multiplexed.aclose()
        if self.embedded is not None:
            self.embedded.stop()
        if self.tracing is not None:  # the last spans, the shutdown's included
            await self.tracing.shutdown(TRACING_SHUTDOWN_S)
        log.info("stopped")


def start_tracing(settings: Settings) -> Tracing | None:
    """OpenTelemetry tracing when --otel-endpoint is set; the SDK is imported only then."""
    if not settings.otel_endpoint:
        return None
    from aigw_sidecar.server.tracing import Tracing

    tracing = Tracing(settings)
    log.info("tracing to %s (sample ratio %g)", masked_url(settings.otel_endpoint),
             settings.otel_sample_ratio)
    return tracing


def load_pricing(settings: Settings) -> PricingFile | None:
    """The price table in force: the built-in one, a pricing file over it, or neither."""
    base = builtin_table() if settings.default_pricing else None
    path = Path(settings.pricing_file) if settings.pricing_file else None
    try:
        pricing = PricingFile(path, base)
    except (AigwError, *LOAD_ERRORS) as exc:
        raise RuntimeError(f"pricing file {settings.pricing_file}: {exc}") from exc
    if pricing.table is None or pricing.table.is_empty():
        log.warning(
            "NO PRICE TABLE: usage reported without a cost is charged 0, so no cost limit "
            "can ever be reached; drop --no-default-pricing or set --pricing-file"
        )
    if pricing.table is None:
        return None
    log.info("pricing: %s", pricing.table.describe())
    return pricing


async def _reload_pricing(pricing: PricingFile, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        pricing.reload_if_changed()


def _browsable(host: str) -> str:
    """An address a browser on this machine can open: a wildcard bind is reached on loopback."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 (not a bind: a URL to print)
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC server options: the port-sharing rule and the per-call size limits.

    SO_REUSEPORT stays off for a lone sidecar, so a stale server still holding
    the port makes the start fail instead of silently splitting the traffic;
    only the workers of one supervisor (``--workers``) share their port.
    """
    return [
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
    ]


def build_metrics(settings: Settings) -> Metrics | None:
    """Metrics when they are served here or, in multiprocess mode, by someone else."""
    if not (settings.metrics_listen or settings.metrics_multiproc_dir):
        return None
    return Metrics(
        label_cap=settings.metrics_label_cap,
        key_id_cap=settings.metrics_key_ids,
        fail_mode=settings.envoy_failure_mode,
    )


def build_webhook(settings: Settings, metrics: Metrics | None) -> WebhookSink | None:
    if not settings.alert_webhook_url:
        return None
    return WebhookSink(
        settings.alert_webhook_url,
        settings.alert_webhook_secret,
        on_result=metrics.webhook_result if metrics is not None else (lambda result: None),
    )


async def start(settings: Settings) -> Sidecar:
    # Checked before anything starts, so a refusal leaves nothing running.
    authenticator = admin_authenticator(settings)
    pricing = load_pricing(settings)
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedStore(settings.data_dir, settings.embedded_binary)
        url = await embedded.start()
        log.info("embedded store ready in %s", settings.data_dir)
    redis = connect_store(url, settings)
    # The admission scripts share one pipelined connection (a single server only).
    multiplexed = (
        MultiplexedScripts(url, timeout_s=settings.store_timeout_ms / 1000)
        if settings.store_multiplex and multiplexed_supports(url)
        else None
    )
    store = RedisKeyStore(
        redis,
        Keyspace(settings.key_prefix),
        dedupe_ms=settings.usage_dedupe_s * 1000,
        lease_ms=settings.reservation_ttl_s * 1000,
        multiplexed=multiplexed,
    )
    try:
        await store.pin_deployment_settings()
    except StoreUnavailable:
        log.warning("store unreachable at start: lease and dedupe times not checked against "
                    "the other replicas'")
    except FailedPrecondition as exc:
        await redis.aclose()
        if multiplexed is not None:
            await multiplexed.aclose()
        if embedded is not None:
            embedded.stop()
        raise RuntimeError(str(exc)) from None

    metrics = build_metrics(settings)
    # The admission path's store calls are timed when metrics are on.
    admission_store: MeasurableStore = (
        store if metrics is None else MeasuredStore(store, metrics)
    )
    key_store: Any = store
    tracing = start_tracing(settings)
    if tracing is not None:  # off: nothing wrapped, no interceptor, the SDK not imported
        admission_store = tracing.store(admission_store)
        key_store = tracing.key_store(store)
    # Innermost: it wraps the registered handlers once per method.
    telemetry = TelemetryInterceptor(metrics)
    interceptors = [
        # Outermost: no other interceptor or servicer ever sees an unparseable request.
        MalformedRequestInterceptor(),
        # Before admin auth, so a refused admin call is traced too.
        *([tracing.interceptor()] if tracing is not None else []),
        AdminAuthInterceptor(authenticator, ADMIN_SERVICE_NAMES),
        telemetry,
    ]
    options = server_options(settings)
    server = grpc.aio.server(options=options, interceptors=interceptors)
    # KeyManagement goes on its own server when --admin-listen is set.
    admin_server = (
        grpc.aio.server(options=options, interceptors=interceptors)
        if settings.admin_listen
        else None
    )
    event_log = RedisEventLog(redis, Keyspace(settings.key_prefix), settings.events_max_entries)
    webhook = build_webhook(settings, metrics)
    sinks: list[AlertSink] = [webhook] if webhook is not None else []
    # Admissions and settlements a stalled store left unknown, finished when it answers.
    unknown_outcomes = UnknownOutcomes()
    admission = ObservedAdmissionService(
        admission_store,
        (lambda: pricing.table) if pricing is not None else (lambda: None),
        observer=metrics,
        alerts=BudgetAlerts(event_log, sinks),
        default_max_output_tokens=settings.default_max_output_tokens,
        unknown_outcomes=unknown_outcomes,
        refuse_unpriced_models=settings.refuse_unpriced_models,
    )
    admission_pb2_grpc.add_AdmissionServicer_to_server(AdmissionServicer(admission), server)
    # Envoy's Authorization/Check: the same AdmissionService, so the same one script.
    # Checks whose answer Envoy may drop, released when it logs their request without it.
    admitted_checks = AdmittedChecks(ttl_s=settings.reservation_ttl_s)
    ext_authz = ExtAuthzServicer(admission, ExtAuthzOptions(
        key_headers=ExtAuthzOptions.parse_key_headers(settings.envoy_key_headers),
        strip_key_headers=settings.envoy_strip_key_headers,
        fail_open=settings.envoy_failure_mode == "open",
        include_usage=settings.envoy_include_usage,
    ), admitted_checks)
    # Envoy's gRPC access log: settles what ext_authz admitted and reserved.
    access_log = AccessLogServicer(UsageSettler(
        admission, on_fallback=metrics.usage_fallback if metrics is not None else None,
        unknown_outcomes=unknown_outcomes,
        trust_upstream_cost=settings.trust_upstream_cost,
        unpriced_fallback=unpriced_fallback(settings),
    ), admitted_checks, spans=tracing.usage_spans() if tracing is not None else None)
    server.add_generic_rpc_handlers((ext_authz.handler(), access_log.handler()))
    audit = RedisAuditLog(redis, Keyspace(settings.key_prefix), settings.audit_max_entries)
    keys_servicer = KeyManagementServicer(
        AuditedKeyService(key_store, audit, current_principal, event_log),
        (lambda: pricing.table) if pricing is not None else (lambda: None),
    )
    keys_pb2_grpc.add_KeyManagementServicer_to_server(keys_servicer, admin_server or server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Each listener lists only what it serves: KeyManagement only where it is.
    data_services = SERVICE_NAMES if admin_server is None else tuple(
        name for name in SERVICE_NAMES if name not in ADMIN_SERVICE_NAMES
    )
    # Every service the port serves, Envoy's too, so grpcurl needs no .proto file.
    pool = reflection_pool()
    reflection.enable_server_reflection(
        (*data_services, *ENVOY_SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server, pool=pool,
    )
    port = bind(
        server,
        settings.listen,
        server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        ),
    )
    admin_port = port
    if admin_server is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, admin_server)
        reflection.enable_server_reflection(
            (*ADMIN_SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), admin_server,
            pool=pool,
        )
        admin_port = bind(
            admin_server,
            settings.admin_listen,
            server_credentials(
                settings.admin_tls_cert_file or settings.tls_cert_file,
                settings.admin_tls_key_file or settings.tls_key_file,
            ),
        )

    watcher = StoreHealthWatcher(
        health_servicer, admission_store.ping, SERVICE_NAMES, settings.health_interval_s
    )
    await watcher.start()
    admin_http = None
    if settings.admin_http_listen.lower() not in ADMIN_HTTP_OFF:
        # The same servicer, authenticator and certificate as the gRPC admin plane.
        admin_http = await AdminHttp.start(
            settings.admin_http_listen,
            build_app(keys_servicer, authenticator, __version__),
            cert_file=settings.admin_tls_cert_file or settings.tls_cert_file,
            key_file=settings.admin_tls_key_file or settings.tls_key_file,
            reuse_port=settings.reuse_port,
            shutdown_timeout_s=settings.shutdown_grace_s,
        )
        scheme = "https" if settings.admin_tls_cert_file or settings.tls_cert_file else "http"
        host = settings.admin_http_listen.rpartition(":")[0] or "0.0.0.0"  # noqa: S104
        log.info("admin HTTP API on %s://%s:%d/v1/ (OpenAPI: /v1/openapi.json)",
                 scheme, host, admin_http.port)
        log.info("console on %s://%s:%d%s", scheme, _browsable(host), admin_http.port,
                 CONSOLE_PATH)
    await server.start()
    if admin_server is not None:
        await admin_server.start()
        log.info("admin plane (KeyManagement) listening on %s", settings.admin_listen)
    sidecar = Sidecar(
        settings, server, redis, watcher, port, embedded,
        admin_server=admin_server, admin_port=admin_port, access_log=access_log,
        ext_authz=ext_authz, admin_http=admin_http,
    )
    sidecar.start_task(watcher.run(), "store health watcher")
    sidecar.start_task(unknown_outcomes.run(), "unknown outcomes")
    sidecar.unknown_outcomes = unknown_outcomes
    sidecar.multiplexed = multiplexed
    sidecar.metrics = metrics
    sidecar.tracing = tracing
    if webhook is not None:
        webhook.start()
        sidecar.webhook = webhook
    if metrics is not None and settings.metrics_listen:
        registry = (
            multiprocess_registry(settings.metrics_multiproc_dir)
            if settings.metrics_multiproc_dir
            else metrics.registry
        )
        sidecar.metrics_endpoint = MetricsEndpoint.start(settings.metrics_listen, registry)
        log.info("metrics on http://%s/metrics", settings.metrics_listen.rsplit(":", 1)[0]
                 + f":{sidecar.metrics_endpoint.port}")
    if embedded is not None and embedded.process is not None:
        sidecar.start_task(embedded.keep_alive(), "embedded store keep-alive")
    if pricing is not None:
        sidecar.pricing = pricing
    if pricing is not None and pricing.path is not None:
        sidecar.start_task(_reload_pricing(pricing, settings.pricing_reload_s), "pricing reload")
    if settings.listen.startswith(("unix:", "unix-abstract:")):
        log.info("listening on %s", settings.listen)
    else:
        log.info("listening on %s:%d", settings.listen.rsplit(":", 1)[0], port)
    return sidecar


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    sidecar = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if sidecar.pricing is not None:
        loop.add_signal_handler(signal.SIGHUP, sidecar.pricing.reload)
    await stop.wait()
    log.info("draining (grace %.1f s)", settings.shutdown_grace_s)
    await sidecar.stop()
