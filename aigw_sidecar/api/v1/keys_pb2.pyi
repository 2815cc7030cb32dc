import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResetPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESET_PERIOD_UNSPECIFIED: _ClassVar[ResetPeriod]
    RESET_PERIOD_NEVER: _ClassVar[ResetPeriod]
    RESET_PERIOD_DAILY: _ClassVar[ResetPeriod]
    RESET_PERIOD_WEEKLY: _ClassVar[ResetPeriod]
    RESET_PERIOD_MONTHLY: _ClassVar[ResetPeriod]
    RESET_PERIOD_YEARLY: _ClassVar[ResetPeriod]

class KeyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATUS_UNSPECIFIED: _ClassVar[KeyStatus]
    KEY_STATUS_ENABLED: _ClassVar[KeyStatus]
    KEY_STATUS_DISABLED: _ClassVar[KeyStatus]
    KEY_STATUS_EXPIRED: _ClassVar[KeyStatus]

class KeyView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_VIEW_UNSPECIFIED: _ClassVar[KeyView]
    KEY_VIEW_BASIC: _ClassVar[KeyView]
    KEY_VIEW_WITH_USAGE: _ClassVar[KeyView]
RESET_PERIOD_UNSPECIFIED: ResetPeriod
RESET_PERIOD_NEVER: ResetPeriod
RESET_PERIOD_DAILY: ResetPeriod
RESET_PERIOD_WEEKLY: ResetPeriod
RESET_PERIOD_MONTHLY: ResetPeriod
RESET_PERIOD_YEARLY: ResetPeriod
KEY_STATUS_UNSPECIFIED: KeyStatus
KEY_STATUS_ENABLED: KeyStatus
KEY_STATUS_DISABLED: KeyStatus
KEY_STATUS_EXPIRED: KeyStatus
KEY_VIEW_UNSPECIFIED: KeyView
KEY_VIEW_BASIC: KeyView
KEY_VIEW_WITH_USAGE: KeyView

class Limits(_message.Message):
    __slots__ = ("cost_limit_usd", "cost_limit_micro_usd", "token_limit", "requests_per_minute", "reset_period", "tokens_per_minute", "max_parallel_requests", "allowed_models", "requests_per_day")
    COST_LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    COST_LIMIT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    RESET_PERIOD_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    cost_limit_usd: str
    cost_limit_micro_usd: int
    token_limit: int
    requests_per_minute: int
    reset_period: ResetPeriod
    tokens_per_minute: int
    max_parallel_requests: int
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    requests_per_day: int
    def __init__(self, cost_limit_usd: _Optional[str] = ..., cost_limit_micro_usd: _Optional[int] = ..., token_limit: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., reset_period: _Optional[_Union[ResetPeriod, str]] = ..., tokens_per_minute: _Optional[int] = ..., max_parallel_requests: _Optional[int] = ..., allowed_models: _Optional[_Iterable[str]] = ..., requests_per_day: _Optional[int] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "name", "workspace", "project", "environment", "labels", "limits", "status", "enabled", "legacy", "masked_secret", "created_at", "updated_at", "expires_at", "last_used_at", "alert_thresholds_percent", "alert_expiry_days", "previous_secret_expires_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LEGACY_FIELD_NUMBER: _ClassVar[int]
    MASKED_SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_EXPIRY_DAYS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    workspace: str
    project: str
    environment: str
    labels: _containers.ScalarMap[str, str]
    limits: Limits
    status: KeyStatus
    enabled: bool
    legacy: bool
    masked_secret: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    alert_thresholds_percent: _containers.RepeatedScalarFieldContainer[int]
    alert_expiry_days: int
    previous_secret_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., workspace: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., status: _Optional[_Union[KeyStatus, str]] = ..., enabled: _Optional[bool] = ..., legacy: _Optional[bool] = ..., masked_secret: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alert_thresholds_percent: _Optional[_Iterable[int]] = ..., alert_expiry_days: _Optional[int] = ..., previous_secret_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "workspace", "project", "environment", "labels", "limits", "expires_at", "alert_thresholds_percent", "alert_expiry_days")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_EXPIRY_DAYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    workspace: str
    project: str
    environment: str
    labels: _containers.ScalarMap[str, str]
    limits: Limits
    expires_at: _timestamp_pb2.Timestamp
    alert_thresholds_percent: _containers.RepeatedScalarFieldContainer[int]
    alert_expiry_days: int
    def __init__(self, name: _Optional[str] = ..., workspace: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alert_thresholds_percent: _Optional[_Iterable[int]] = ..., alert_expiry_days: _Optional[int] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ImportLegacyKeyRequest(_message.Message):
    __slots__ = ("secret", "name", "workspace", "project", "environment", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SECRET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    secret: str
    name: str
    workspace: str
    project: str
    environment: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, secret: _Optional[str] = ..., name: _Optional[str] = ..., workspace: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ImportLegacyKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("workspace", "project", "environment", "status", "page_size", "page_token", "view", "name_contains")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    project: str
    environment: str
    status: KeyStatus
    page_size: int
    page_token: str
    view: KeyView
    name_contains: str
    def __init__(self, workspace: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., status: _Optional[_Union[KeyStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[KeyView, str]] = ..., name_contains: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token", "overviews")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OVERVIEWS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    overviews: _containers.RepeatedCompositeFieldContainer[KeyOverview]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., overviews: _Optional[_Iterable[_Union[KeyOverview, _Mapping]]] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("key_id", "update_mask", "name", "project", "environment", "labels", "limits", "expires_at", "alert_thresholds_percent", "alert_expiry_days")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_EXPIRY_DAYS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    update_mask: _field_mask_pb2.FieldMask
    name: str
    project: str
    environment: str
    labels: _containers.ScalarMap[str, str]
    limits: Limits
    expires_at: _timestamp_pb2.Timestamp
    alert_thresholds_percent: _containers.RepeatedScalarFieldContainer[int]
    alert_expiry_days: int
    def __init__(self, key_id: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., name: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alert_thresholds_percent: _Optional[_Iterable[int]] = ..., alert_expiry_days: _Optional[int] = ...) -> None: ...

class UpdateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RotateKeySecretRequest(_message.Message):
    __slots__ = ("key_id", "grace_period_s")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    grace_period_s: int
    def __init__(self, key_id: _Optional[str] = ..., grace_period_s: _Optional[int] = ...) -> None: ...

class RotateKeySecretResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class EnableKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class EnableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class DisableKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class DisableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class DeleteKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeyOverviewRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class LimitUsage(_message.Message):
    __slots__ = ("limited", "limit", "used", "remaining")
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    limited: bool
    limit: int
    used: int
    remaining: int
    def __init__(self, limited: _Optional[bool] = ..., limit: _Optional[int] = ..., used: _Optional[int] = ..., remaining: _Optional[int] = ...) -> None: ...

class KeyOverview(_message.Message):
    __slots__ = ("key", "cost_micro_usd", "tokens", "requests_per_minute", "period_start", "next_reset", "period_requests", "period_prompt_tokens", "period_completion_tokens", "lifetime_requests", "lifetime_prompt_tokens", "lifetime_completion_tokens", "lifetime_cost_micro_usd", "last_used_at", "observed_at", "reserved_tokens", "reserved_cost_micro_usd", "open_reservations", "per_model", "unpriced_requests", "tokens_per_minute", "parallel_requests", "requests_per_day")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    NEXT_RESET_FIELD_NUMBER: _ClassVar[int]
    PERIOD_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    OPEN_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    PER_MODEL_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    cost_micro_usd: LimitUsage
    tokens: LimitUsage
    requests_per_minute: LimitUsage
    period_start: _timestamp_pb2.Timestamp
    next_reset: _timestamp_pb2.Timestamp
    period_requests: int
    period_prompt_tokens: int
    period_completion_tokens: int
    lifetime_requests: int
    lifetime_prompt_tokens: int
    lifetime_completion_tokens: int
    lifetime_cost_micro_usd: int
    last_used_at: _timestamp_pb2.Timestamp
    observed_at: _timestamp_pb2.Timestamp
    reserved_tokens: int
    reserved_cost_micro_usd: int
    open_reservations: int
    per_model: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    unpriced_requests: int
    tokens_per_minute: LimitUsage
    parallel_requests: LimitUsage
    requests_per_day: LimitUsage
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., cost_micro_usd: _Optional[_Union[LimitUsage, _Mapping]] = ..., tokens: _Optional[_Union[LimitUsage, _Mapping]] = ..., requests_per_minute: _Optional[_Union[LimitUsage, _Mapping]] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_reset: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_requests: _Optional[int] = ..., period_prompt_tokens: _Optional[int] = ..., period_completion_tokens: _Optional[int] = ..., lifetime_requests: _Optional[int] = ..., lifetime_prompt_tokens: _Optional[int] = ..., lifetime_completion_tokens: _Optional[int] = ..., lifetime_cost_micro_usd: _Optional[int] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reserved_tokens: _Optional[int] = ..., reserved_cost_micro_usd: _Optional[int] = ..., open_reservations: _Optional[int] = ..., per_model: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., unpriced_requests: _Optional[int] = ..., tokens_per_minute: _Optional[_Union[LimitUsage, _Mapping]] = ..., parallel_requests: _Optional[_Union[LimitUsage, _Mapping]] = ..., requests_per_day: _Optional[_Union[LimitUsage, _Mapping]] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("model", "requests", "tokens", "cost_micro_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    requests: int
    tokens: int
    cost_micro_usd: int
    def __init__(self, model: _Optional[str] = ..., requests: _Optional[int] = ..., tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ...) -> None: ...

class GetKeyOverviewResponse(_message.Message):
    __slots__ = ("overview",)
    OVERVIEW_FIELD_NUMBER: _ClassVar[int]
    overview: KeyOverview
    def __init__(self, overview: _Optional[_Union[KeyOverview, _Mapping]] = ...) -> None: ...

class GetKeyUsageHistoryRequest(_message.Message):
    __slots__ = ("key_id", "days")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    days: int
    def __init__(self, key_id: _Optional[str] = ..., days: _Optional[int] = ...) -> None: ...

class DailyUsage(_message.Message):
    __slots__ = ("day", "cost_micro_usd", "cost_usd", "tokens", "requests")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    cost_micro_usd: int
    cost_usd: str
    tokens: int
    requests: int
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cost_micro_usd: _Optional[int] = ..., cost_usd: _Optional[str] = ..., tokens: _Optional[int] = ..., requests: _Optional[int] = ...) -> None: ...

class GetKeyUsageHistoryResponse(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[DailyUsage]
    def __init__(self, days: _Optional[_Iterable[_Union[DailyUsage, _Mapping]]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("entry_id", "occurred_at", "principal", "action", "key_id", "name", "workspace", "detail")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    occurred_at: _timestamp_pb2.Timestamp
    principal: str
    action: str
    key_id: str
    name: str
    workspace: str
    detail: str
    def __init__(self, entry_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., key_id: _Optional[str] = ..., name: _Optional[str] = ..., workspace: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("key_id", "page_size", "page_token")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    page_size: int
    page_token: str
    def __init__(self, key_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BudgetEvent(_message.Message):
    __slots__ = ("event_id", "occurred_at", "type", "key_id", "workspace", "project", "budget", "threshold_percent", "used", "limit", "period_start", "expires_at", "expiry_days", "dedupe_key")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_DAYS_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    type: str
    key_id: str
    workspace: str
    project: str
    budget: str
    threshold_percent: int
    used: int
    limit: int
    period_start: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    expiry_days: int
    dedupe_key: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[str] = ..., key_id: _Optional[str] = ..., workspace: _Optional[str] = ..., project: _Optional[str] = ..., budget: _Optional[str] = ..., threshold_percent: _Optional[int] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expiry_days: _Optional[int] = ..., dedupe_key: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("key_id", "after", "page_size")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    after: str
    page_size: int
    def __init__(self, key_id: _Optional[str] = ..., after: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_cursor")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[BudgetEvent]
    next_cursor: str
    def __init__(self, events: _Optional[_Iterable[_Union[BudgetEvent, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model", "input_usd", "output_usd", "cached_input_usd", "cache_write_usd", "max_output_tokens", "source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_USD_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_usd: str
    output_usd: str
    cached_input_usd: str
    cache_write_usd: str
    max_output_tokens: int
    source: str
    def __init__(self, model: _Optional[str] = ..., input_usd: _Optional[str] = ..., output_usd: _Optional[str] = ..., cached_input_usd: _Optional[str] = ..., cache_write_usd: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class ListModelPricesRequest(_message.Message):
    __slots__ = ("contains", "page_size", "page_token")
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contains: str
    page_size: int
    page_token: str
    def __init__(self, contains: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelPricesResponse(_message.Message):
    __slots__ = ("prices", "next_page_token", "table")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    next_page_token: str
    table: str
    def __init__(self, prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...

class GetModelPriceRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelPriceResponse(_message.Message):
    __slots__ = ("priced", "price", "unknown_model")
    PRICED_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_MODEL_FIELD_NUMBER: _ClassVar[int]
    priced: bool
    price: ModelPrice
    unknown_model: str
    def __init__(self, priced: _Optional[bool] = ..., price: _Optional[_Union[ModelPrice, _Mapping]] = ..., unknown_model: _Optional[str] = ...) -> None: ...
