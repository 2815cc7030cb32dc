"""The blocking client: one method per RPC, typed values in and out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any

import grpc

from aigw_client import _convert
from aigw_client._api.v1 import admission_pb2 as adm_pb
from aigw_client._api.v1 import keys_pb2 as keys_pb
from aigw_client._convert import KEEP, Keep
from aigw_client._transport import (
    DEFAULT_TIMEOUT_S,
    RPCS,
    ChannelOptions,
    Connection,
    admin_metadata,
)
from aigw_client.errors import from_rpc_error
from aigw_client.models import (
    ApiKey,
    AuditPage,
    CreatedKey,
    DailyUsage,
    Decision,
    Estimate,
    EventPage,
    KeyOverview,
    KeyPage,
    KeyStatus,
    Limits,
    ModelPrice,
    PricePage,
    ResetPeriod,
    RotatedKey,
    UsageResult,
)

# The template of the async client: aio.py is generated from this file by
# clients/python/gen_aio.py (a test fails when it is stale), so their methods never drift.


class AigwClient:
    """Blocking client of one sidecar listener.

    Args:
        target: ``host:port`` or ``unix:/path``; ignored when ``channel`` is given.
        admin_token: sent as ``authorization: Bearer <token>`` on KeyManagement calls only.
        credentials: TLS (or mTLS) channel credentials, see ``tls_credentials``;
            None: plaintext.
        channel: an existing channel (not closed by ``close``).
        timeout_s: the deadline of every call, unless a call passes its own.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        admin_token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        options: ChannelOptions = (),
    ) -> None:
        """Unset arguments come from the AIGW_ADMIN_* variables aigw-admin reads
        (AIGW_ADMIN_TARGET, AIGW_ADMIN_TOKEN_FILE or AIGW_ADMIN_TOKEN, AIGW_ADMIN_TLS,
        AIGW_ADMIN_TLS_CA_FILE), then the defaults (127.0.0.1:50051, no token,
        plaintext); an explicit argument always wins."""
        conn = Connection.resolve(target, admin_token, credentials)
        self._owns_channel = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(conn.target, conn.credentials, options=list(options))
                if conn.credentials is not None
                else grpc.insecure_channel(conn.target, options=list(options))
            )
        self._channel = channel
        self._admin_metadata = admin_metadata(conn.admin_token)
        self._timeout_s = timeout_s
        self._stubs = {
            name: channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
            for name, rpc in RPCS.items()
        }

    def _call(self, name: str, request: Any, timeout_s: float | None) -> Any:
        metadata = self._admin_metadata if RPCS[name].admin else ()
        try:
            return self._stubs[name](
                request,
                timeout=self._timeout_s if timeout_s is None else timeout_s,
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> AigwClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def authorize(
        self,
        secret: str,
        *,
        request_id: str = "",
        model: str = "",
        estimate: Estimate | None = None,
        timeout_s: float | None = None,
    ) -> Decision:
        """Ask whether a request carrying ``secret`` may go ahead.

        Args:
            request_id: names the reservation or parallel slot the request holds
                (required with ``estimate``); "" lets the sidecar make one, returned
                in ``Decision.request_id``.
            model: checked against the key's allowed models; "" means the estimate's.
            estimate: reserved against the token, tokens-per-minute and cost limits.
        """
        req = _convert.authorize_request(secret, request_id, model, estimate)
        return _convert.decision(self._call("Authorize", req, timeout_s))

    def record_usage(
        self,
        key_id: str,
        request_id: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_prompt_tokens: int = 0,
        model: str = "",
        cost_usd: Decimal | None = None,
        timeout_s: float | None = None,
    ) -> UsageResult:
        """Report what a request used; a retried ``request_id`` counts once.

        Without ``cost_usd`` the sidecar prices the report from ``model`` and the
        token counts (``cached_prompt_tokens`` is the part of the prompt served from
        a cache). It settles the request's reservation and frees its parallel slot.
        """
        req = _convert.record_usage_request(
            key_id, request_id, prompt_tokens, completion_tokens, cost_usd,
            model, cached_prompt_tokens,
        )
        return _convert.usage_result(self._call("RecordUsage", req, timeout_s))

    def release_reservation(
        self, key_id: str, request_id: str, *, timeout_s: float | None = None
    ) -> bool:
        """Give back a request's reservation and parallel slot without usage.

        Returns False when nothing was open (already settled, released or expired).
        """
        req = adm_pb.ReleaseReservationRequest(key_id=key_id, request_id=request_id)
        return bool((self._call("ReleaseReservation", req, timeout_s)).released)

    def create_key(
        self,
        name: str,
        *,
        workspace: str = "",
        project: str = "",
        environment: str = "",
        labels: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        expires_at: datetime | None = None,
        alert_thresholds_percent: Sequence[int] = (),
        alert_expiry_days: int | None = None,
        timeout_s: float | None = None,
    ) -> CreatedKey:
        """A new API key; its ``secret`` is returned this once and never again."""
        req = _convert.create_key_request(
            name, workspace, project, environment, labels, limits, expires_at,
            alert_thresholds_percent, alert_expiry_days,
        )
        return _convert.created_key(self._call("CreateKey", req, timeout_s))

    def import_legacy_key(
        self,
        secret: str,
        name: str,
        *,
        workspace: str = "",
        project: str = "",
        environment: str = "",
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ApiKey:
        """Register an existing (legacy) secret as an API key without limits."""
        req = keys_pb.ImportLegacyKeyRequest(
            secret=secret, name=name, workspace=workspace, project=project,
            environment=environment, labels=dict(labels or {}),
        )
        return _convert.api_key((self._call("ImportLegacyKey", req, timeout_s)).key)

    def get_key(self, key_id: str, *, timeout_s: float | None = None) -> ApiKey:
        req = keys_pb.GetKeyRequest(key_id=key_id)
        return _convert.api_key((self._call("GetKey", req, timeout_s)).key)

    def list_keys(
        self,
        *,
        workspace: str = "",
        project: str = "",
        environment: str = "",
        status: KeyStatus | None = None,
        page_size: int = 0,
        page_token: str = "",
        name_contains: str = "",
        with_usage: bool = False,
        timeout_s: float | None = None,
    ) -> KeyPage:
        """One page of keys; pass ``next_page_token`` back for the next one.

        Args:
            name_contains: only keys whose name contains this text, ignoring case.
            with_usage: each key's overview too (``KeyPage.overviews``), from the
                same call.
        """
        req = _convert.list_keys_request(
            workspace, project, environment, status, page_size, page_token,
            name_contains, with_usage,
        )
        return _convert.key_page(self._call("ListKeys", req, timeout_s))

    def update_key(
        self,
        key_id: str,
        *,
        name: str | Keep = KEEP,
        project: str | Keep = KEEP,
        environment: str | Keep = KEEP,
        labels: Mapping[str, str] | Keep = KEEP,
        cost_limit_usd: Decimal | Keep | None = KEEP,
        token_limit: int | Keep | None = KEEP,
        requests_per_minute: int | Keep | None = KEEP,
        reset_period: ResetPeriod | Keep = KEEP,
        expires_at: datetime | Keep | None = KEEP,
        tokens_per_minute: int | Keep | None = KEEP,
        max_parallel_requests: int | Keep | None = KEEP,
        allowed_models: Sequence[str] | Keep | None = KEEP,
        alert_thresholds_percent: Sequence[int] | Keep | None = KEEP,
        alert_expiry_days: int | Keep | None = KEEP,
        requests_per_day: int | Keep | None = KEEP,
        timeout_s: float | None = None,
    ) -> ApiKey:
        """Change only the fields given; None (or an empty list) removes a limit or the expiry."""
        req = _convert.update_key_request(key_id, {
            "name": name, "project": project, "environment": environment, "labels": labels,
            "cost_limit_usd": cost_limit_usd, "token_limit": token_limit,
            "requests_per_minute": requests_per_minute, "reset_period": reset_period,
            "expires_at": expires_at, "tokens_per_minute": tokens_per_minute,
            "max_parallel_requests": max_parallel_requests, "allowed_models": allowed_models,
            "alert_thresholds_percent": alert_thresholds_percent,
            "alert_expiry_days": alert_expiry_days, "requests_per_day": requests_per_day,
        })
        return _convert.api_key((self._call("UpdateKey", req, timeout_s)).key)

    def rotate_key_secret(
        self,
        key_id: str,
        grace_period: timedelta = timedelta(0),
        *,
        timeout_s: float | None = None,
    ) -> RotatedKey:
        """A new secret for the same key id, limits and usage, returned this once.

        The previous secret keeps working for ``grace_period`` (whole seconds, at
        most 30 days; 0: it stops at once). Legacy keys: ``FailedPrecondition``.
        """
        req = keys_pb.RotateKeySecretRequest(
            key_id=key_id, grace_period_s=_convert.whole_seconds(grace_period, "grace_period")
        )
        return _convert.rotated_key(self._call("RotateKeySecret", req, timeout_s))

    def enable_key(self, key_id: str, *, timeout_s: float | None = None) -> ApiKey:
        req = keys_pb.EnableKeyRequest(key_id=key_id)
        return _convert.api_key((self._call("EnableKey", req, timeout_s)).key)

    def disable_key(self, key_id: str, *, timeout_s: float | None = None) -> ApiKey:
        req = keys_pb.DisableKeyRequest(key_id=key_id)
        return _convert.api_key((self._call("DisableKey", req, timeout_s)).key)

    def delete_key(self, key_id: str, *, timeout_s: float | None = None) -> None:
        self._call("DeleteKey", keys_pb.DeleteKeyRequest(key_id=key_id), timeout_s)

    def get_key_overview(
        self, key_id: str, *, timeout_s: float | None = None
    ) -> KeyOverview:
        """Usage against each limit, and the next reset."""
        req = keys_pb.GetKeyOverviewRequest(key_id=key_id)
        return _convert.overview((self._call("GetKeyOverview", req, timeout_s)).overview)

    def get_key_usage_history(
        self, key_id: str, days: int = 30, *, timeout_s: float | None = None
    ) -> tuple[DailyUsage, ...]:
        """Usage per UTC day, the last ``days`` days (1-100) to today, oldest first;
        a day without usage is zeros."""
        req = keys_pb.GetKeyUsageHistoryRequest(key_id=key_id, days=days)
        return _convert.usage_history(self._call("GetKeyUsageHistory", req, timeout_s))

    def list_audit_entries(
        self,
        *,
        key_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout_s: float | None = None,
    ) -> AuditPage:
        """The audit trail of admin actions, newest first."""
        req = keys_pb.ListAuditEntriesRequest(
            key_id=key_id, page_size=page_size, page_token=page_token
        )
        return _convert.audit_page(self._call("ListAuditEntries", req, timeout_s))

    def list_events(
        self,
        *,
        key_id: str = "",
        after: str = "",
        page_size: int = 0,
        timeout_s: float | None = None,
    ) -> EventPage:
        """Budget alert events, oldest first.

        Args:
            after: the ``next_cursor`` of a previous page (poll with it to follow);
                "" starts with the newest ``page_size`` events, "0" with the oldest.
        """
        req = keys_pb.ListEventsRequest(key_id=key_id, after=after, page_size=page_size)
        return _convert.event_page(self._call("ListEvents", req, timeout_s))

    def list_model_prices(
        self,
        *,
        contains: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout_s: float | None = None,
    ) -> PricePage:
        """The sidecar's price table in force (built-in and pricing file), by name."""
        req = keys_pb.ListModelPricesRequest(
            contains=contains, page_size=page_size, page_token=page_token
        )
        return _convert.price_page(self._call("ListModelPrices", req, timeout_s))

    def get_model_price(self, model: str, *, timeout_s: float | None = None) -> ModelPrice | None:
        """What ``model`` is priced as (prefixes, dates and aliases resolved); None: no price."""
        reply = self._call("GetModelPrice", keys_pb.GetModelPriceRequest(model=model), timeout_s)
        return _convert.model_price(reply.price) if reply.priced else None
