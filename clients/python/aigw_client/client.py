"""The blocking client: one method per RPC, typed values in and out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import grpc

from aigw_client import _convert
from aigw_client._api.v1 import admission_pb2 as adm_pb
from aigw_client._api.v1 import keys_pb2 as keys_pb
from aigw_client._convert import KEEP, Keep
from aigw_client._transport import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    RPCS,
    ChannelOptions,
    admin_metadata,
)
from aigw_client.errors import from_rpc_error
from aigw_client.models import (
    ApiKey,
    AuditPage,
    CreatedKey,
    Decision,
    KeyOverview,
    KeyPage,
    KeyStatus,
    Limits,
    ResetPeriod,
    UsageResult,
)

# Generated from one template (with the async client) so their methods never drift.


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
        target: str = DEFAULT_TARGET,
        *,
        admin_token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        options: ChannelOptions = (),
    ) -> None:
        self._owns_channel = channel is None
        if channel is None:
            channel = (
                grpc.secure_channel(target, credentials, options=list(options))
                if credentials is not None
                else grpc.insecure_channel(target, options=list(options))
            )
        self._channel = channel
        self._admin_metadata = admin_metadata(admin_token)
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

    def authorize(self, secret: str, *, timeout_s: float | None = None) -> Decision:
        """Ask whether a request carrying ``secret`` may go ahead."""
        msg = self._call("Authorize", adm_pb.AuthorizeRequest(secret=secret), timeout_s)
        return _convert.decision(msg)

    def record_usage(
        self,
        key_id: str,
        request_id: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: Decimal | None = None,
        timeout_s: float | None = None,
    ) -> UsageResult:
        """Report what a request used; a retried ``request_id`` counts once."""
        req = _convert.record_usage_request(
            key_id, request_id, prompt_tokens, completion_tokens, cost_usd
        )
        return _convert.usage_result(self._call("RecordUsage", req, timeout_s))

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
        timeout_s: float | None = None,
    ) -> CreatedKey:
        """A new API key; its ``secret`` is returned this once and never again."""
        req = _convert.create_key_request(
            name, workspace, project, environment, labels, limits, expires_at
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
        timeout_s: float | None = None,
    ) -> KeyPage:
        """One page of keys; pass ``next_page_token`` back for the next one."""
        req = _convert.list_keys_request(
            workspace, project, environment, status, page_size, page_token
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
        timeout_s: float | None = None,
    ) -> ApiKey:
        """Change only the fields given; None removes a limit or the expiry."""
        req = _convert.update_key_request(
            key_id, name=name, project=project, environment=environment, labels=labels,
            cost_limit_usd=cost_limit_usd, token_limit=token_limit,
            requests_per_minute=requests_per_minute, reset_period=reset_period,
            expires_at=expires_at,
        )
        return _convert.api_key((self._call("UpdateKey", req, timeout_s)).key)

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
