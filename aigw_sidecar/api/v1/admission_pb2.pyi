from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DenyReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DENY_REASON_UNSPECIFIED: _ClassVar[DenyReason]
    DENY_REASON_KEY_MISSING: _ClassVar[DenyReason]
    DENY_REASON_KEY_MALFORMED: _ClassVar[DenyReason]
    DENY_REASON_KEY_UNKNOWN: _ClassVar[DenyReason]
    DENY_REASON_KEY_DISABLED: _ClassVar[DenyReason]
    DENY_REASON_KEY_EXPIRED: _ClassVar[DenyReason]
    DENY_REASON_REQUESTS_PER_MINUTE: _ClassVar[DenyReason]
    DENY_REASON_TOKEN_LIMIT: _ClassVar[DenyReason]
    DENY_REASON_COST_LIMIT: _ClassVar[DenyReason]
    DENY_REASON_TOKENS_PER_MINUTE: _ClassVar[DenyReason]
    DENY_REASON_PARALLEL_REQUESTS: _ClassVar[DenyReason]
    DENY_REASON_MODEL_NOT_ALLOWED: _ClassVar[DenyReason]
    DENY_REASON_MODEL_NOT_PRICED: _ClassVar[DenyReason]
    DENY_REASON_REQUESTS_PER_DAY: _ClassVar[DenyReason]
DENY_REASON_UNSPECIFIED: DenyReason
DENY_REASON_KEY_MISSING: DenyReason
DENY_REASON_KEY_MALFORMED: DenyReason
DENY_REASON_KEY_UNKNOWN: DenyReason
DENY_REASON_KEY_DISABLED: DenyReason
DENY_REASON_KEY_EXPIRED: DenyReason
DENY_REASON_REQUESTS_PER_MINUTE: DenyReason
DENY_REASON_TOKEN_LIMIT: DenyReason
DENY_REASON_COST_LIMIT: DenyReason
DENY_REASON_TOKENS_PER_MINUTE: DenyReason
DENY_REASON_PARALLEL_REQUESTS: DenyReason
DENY_REASON_MODEL_NOT_ALLOWED: DenyReason
DENY_REASON_MODEL_NOT_PRICED: DenyReason
DENY_REASON_REQUESTS_PER_DAY: DenyReason

class RateLimit(_message.Message):
    __slots__ = ("limited", "limit", "remaining", "reset_ms", "resets")
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_MS_FIELD_NUMBER: _ClassVar[int]
    RESETS_FIELD_NUMBER: _ClassVar[int]
    limited: bool
    limit: int
    remaining: int
    reset_ms: int
    resets: bool
    def __init__(self, limited: _Optional[bool] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_ms: _Optional[int] = ..., resets: _Optional[bool] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("model", "prompt_tokens", "max_output_tokens", "cost_micro_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt_tokens: int
    max_output_tokens: int
    cost_micro_usd: int
    def __init__(self, model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("secret", "request_id", "estimate", "model")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    secret: str
    request_id: str
    estimate: Estimate
    model: str
    def __init__(self, secret: _Optional[str] = ..., request_id: _Optional[str] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("tokens", "cost_micro_usd")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    cost_micro_usd: int
    def __init__(self, tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("allowed", "deny_reason", "message", "key_id", "workspace", "project", "environment", "legacy", "requests", "tokens", "cost_micro_usd", "retry_after_ms", "reservation", "tokens_per_minute", "parallel_requests", "request_id", "requests_per_day")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENY_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LEGACY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    deny_reason: DenyReason
    message: str
    key_id: str
    workspace: str
    project: str
    environment: str
    legacy: bool
    requests: RateLimit
    tokens: RateLimit
    cost_micro_usd: RateLimit
    retry_after_ms: int
    reservation: Reservation
    tokens_per_minute: RateLimit
    parallel_requests: RateLimit
    request_id: str
    requests_per_day: RateLimit
    def __init__(self, allowed: _Optional[bool] = ..., deny_reason: _Optional[_Union[DenyReason, str]] = ..., message: _Optional[str] = ..., key_id: _Optional[str] = ..., workspace: _Optional[str] = ..., project: _Optional[str] = ..., environment: _Optional[str] = ..., legacy: _Optional[bool] = ..., requests: _Optional[_Union[RateLimit, _Mapping]] = ..., tokens: _Optional[_Union[RateLimit, _Mapping]] = ..., cost_micro_usd: _Optional[_Union[RateLimit, _Mapping]] = ..., retry_after_ms: _Optional[int] = ..., reservation: _Optional[_Union[Reservation, _Mapping]] = ..., tokens_per_minute: _Optional[_Union[RateLimit, _Mapping]] = ..., parallel_requests: _Optional[_Union[RateLimit, _Mapping]] = ..., request_id: _Optional[str] = ..., requests_per_day: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("key_id", "request_id", "prompt_tokens", "completion_tokens", "cost_micro_usd", "cost_usd", "model", "cached_prompt_tokens")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    cost_usd: str
    model: str
    cached_prompt_tokens: int
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., cost_usd: _Optional[str] = ..., model: _Optional[str] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("counted", "period_tokens", "period_cost_micro_usd", "cost_micro_usd", "settled_reservation")
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    SETTLED_RESERVATION_FIELD_NUMBER: _ClassVar[int]
    counted: bool
    period_tokens: int
    period_cost_micro_usd: int
    cost_micro_usd: int
    settled_reservation: bool
    def __init__(self, counted: _Optional[bool] = ..., period_tokens: _Optional[int] = ..., period_cost_micro_usd: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., settled_reservation: _Optional[bool] = ...) -> None: ...

class ReleaseReservationRequest(_message.Message):
    __slots__ = ("key_id", "request_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReleaseReservationResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...
