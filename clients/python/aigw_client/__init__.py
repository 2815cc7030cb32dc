"""Typed Python client of aigw-sidecar: ``AigwClient`` (blocking) and ``AsyncAigwClient``.

    from aigw_client import AigwClient, Limits
    with AigwClient("127.0.0.1:50051", admin_token=token) as client:
        created = client.create_key("ci", limits=Limits(token_limit=100_000))
"""

from __future__ import annotations

from aigw_client._convert import KEEP
from aigw_client._transport import tls_credentials
from aigw_client.aio import AsyncAigwClient
from aigw_client.client import AigwClient
from aigw_client.errors import (
    AigwError,
    AlreadyExists,
    AuthenticationError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServerError,
    TransportError,
    Unavailable,
)
from aigw_client.models import (
    ApiKey,
    AuditEntry,
    AuditPage,
    Budget,
    BudgetEvent,
    BudgetEventType,
    CostUsage,
    CreatedKey,
    DailyUsage,
    Decision,
    DenyReason,
    Estimate,
    EventPage,
    KeyOverview,
    KeyPage,
    KeyStatus,
    LimitUsage,
    Limits,
    ModelPrice,
    ModelUsage,
    PricePage,
    RateLimit,
    Reservation,
    ResetPeriod,
    RotatedKey,
    UsageResult,
)

__all__ = [
    "KEEP",
    "AigwClient",
    "AigwError",
    "AlreadyExists",
    "ApiKey",
    "AsyncAigwClient",
    "AuditEntry",
    "AuditPage",
    "AuthenticationError",
    "Budget",
    "BudgetEvent",
    "BudgetEventType",
    "CostUsage",
    "CreatedKey",
    "DailyUsage",
    "DeadlineExceeded",
    "Decision",
    "DenyReason",
    "Estimate",
    "EventPage",
    "FailedPrecondition",
    "InvalidArgument",
    "KeyOverview",
    "KeyPage",
    "KeyStatus",
    "LimitUsage",
    "Limits",
    "ModelPrice",
    "ModelUsage",
    "NotFound",
    "PricePage",
    "RateLimit",
    "Reservation",
    "ResetPeriod",
    "RotatedKey",
    "ServerError",
    "TransportError",
    "Unavailable",
    "UsageResult",
    "tls_credentials",
]
