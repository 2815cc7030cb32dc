"""Bad input on every field of both gRPC services: a precise status, never half a write.

Each case calls the in-process sidecar over gRPC with one bad field and checks
the status code, that the message names the field, and that the store under
the test's prefix is exactly as it was before the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys import secrets
from tests.conftest import Stubs
from tests.snapshots import key_names, snapshot

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTING = "key_" + "0" * 20  # replaced by the id of a real key in each test
UNKNOWN = "key_" + "z" * 20
FAR = Timestamp(seconds=4_000_000_000)


def _mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


def _labels(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


CASES: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    # --- KeyManagement.CreateKey
    ("empty-name", "CreateKey", kpb.CreateKeyRequest(name=""), INVALID, "name"),
    ("blank-name", "CreateKey", kpb.CreateKeyRequest(name="   "), INVALID, "name"),
    ("long-name", "CreateKey", kpb.CreateKeyRequest(name="x" * 129), INVALID, "name"),
    ("control-name", "CreateKey", kpb.CreateKeyRequest(name="a\nb"), INVALID, "name"),
    ("workspace", "CreateKey", kpb.CreateKeyRequest(name="n", workspace="bad ws"), INVALID,
     "workspace"),
    ("workspace-dash", "CreateKey", kpb.CreateKeyRequest(name="n", workspace="-x"), INVALID,
     "workspace"),
    ("project", "CreateKey", kpb.CreateKeyRequest(name="n", project="a/b"), INVALID, "project"),
    ("environment", "CreateKey", kpb.CreateKeyRequest(name="n", environment="e" * 65), INVALID,
     "environment"),
    ("label-key", "CreateKey", kpb.CreateKeyRequest(name="n", labels={"Bad": "v"}), INVALID,
     "labels"),
    ("label-value", "CreateKey", kpb.CreateKeyRequest(name="n", labels={"k": "v\n"}), INVALID,
     "labels"),
    ("label-count", "CreateKey", kpb.CreateKeyRequest(name="n", labels=_labels(33)), INVALID,
     "labels"),
    *[
        (f"cost-usd-{text}", "CreateKey",
         kpb.CreateKeyRequest(name="n", limits=kpb.Limits(cost_limit_usd=text)), INVALID,
         "limits.cost_limit_usd")
        for text in ("abc", "", "-1", "0", "0.0000001", "1000000001", "NaN")
    ],
    *[
        (f"cost-micro-{value}", "CreateKey",
         kpb.CreateKeyRequest(name="n", limits=kpb.Limits(cost_limit_micro_usd=value)), INVALID,
         "limits.cost_limit_micro_usd")
        for value in (0, -5, 10**16)
    ],
    ("cost-disagree", "CreateKey",
     kpb.CreateKeyRequest(name="n", limits=kpb.Limits(cost_limit_usd="1",
                                                      cost_limit_micro_usd=2)),
     INVALID, "limits.cost_limit_micro_usd"),
    *[
        (f"tokens-{value}", "CreateKey",
         kpb.CreateKeyRequest(name="n", limits=kpb.Limits(token_limit=value)), INVALID,
         "limits.token_limit")
        for value in (0, -1, 10**16)
    ],
    *[
        (f"rpm-{value}", "CreateKey",
         kpb.CreateKeyRequest(name="n", limits=kpb.Limits(requests_per_minute=value)), INVALID,
         "limits.requests_per_minute")
        for value in (0, -1, 10**7)
    ],
    ("reset-period", "CreateKey",
     kpb.CreateKeyRequest(name="n", limits=kpb.Limits(reset_period=99)), INVALID,  # type: ignore[arg-type]
     "limits.reset_period"),
    ("expires-past", "CreateKey",
     kpb.CreateKeyRequest(name="n", expires_at=Timestamp(seconds=1_000_000_000)), INVALID,
     "expires_at"),
    ("expires-negative", "CreateKey",
     kpb.CreateKeyRequest(name="n", expires_at=Timestamp(seconds=-5)), INVALID, "expires_at"),
    ("expires-nanos", "CreateKey",
     kpb.CreateKeyRequest(name="n", expires_at=Timestamp(seconds=4_000_000_000, nanos=-1)),
     INVALID, "expires_at"),
    ("expires-year-10000", "CreateKey",
     kpb.CreateKeyRequest(name="n", expires_at=Timestamp(seconds=300_000_000_000)), INVALID,
     "expires_at"),
    # --- KeyManagement.ImportLegacyKey
    *[
        (f"legacy-secret-{i}", "ImportLegacyKey",
         kpb.ImportLegacyKeyRequest(secret=secret, name="n"), INVALID, "secret")
        for i, secret in enumerate(
            ["", "short", "has a space", "comma,in,it", "x" * 513, "tab\there-x",
             secrets.new_secret().secret, "é" * 10]
        )
    ],
    ("legacy-name", "ImportLegacyKey", kpb.ImportLegacyKeyRequest(secret="legacy-abc-123"),
     INVALID, "name"),
    ("legacy-workspace", "ImportLegacyKey",
     kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="n", workspace="a b"), INVALID,
     "workspace"),
    ("legacy-project", "ImportLegacyKey",
     kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="n", project="a b"), INVALID,
     "project"),
    ("legacy-environment", "ImportLegacyKey",
     kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="n", environment="a b"), INVALID,
     "environment"),
    ("legacy-labels", "ImportLegacyKey",
     kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="n", labels={"A": "b"}), INVALID,
     "labels"),
    # --- KeyManagement.ListKeys
    ("list-workspace", "ListKeys", kpb.ListKeysRequest(workspace="a b"), INVALID, "workspace"),
    ("list-project", "ListKeys", kpb.ListKeysRequest(project="a b"), INVALID, "project"),
    ("list-environment", "ListKeys", kpb.ListKeysRequest(environment="a b"), INVALID,
     "environment"),
    ("list-status", "ListKeys", kpb.ListKeysRequest(status=99), INVALID, "status"),  # type: ignore[arg-type]
    ("list-page-size-negative", "ListKeys", kpb.ListKeysRequest(page_size=-1), INVALID,
     "page_size"),
    ("list-page-size-large", "ListKeys", kpb.ListKeysRequest(page_size=501), INVALID,
     "page_size"),
    *[
        (f"list-page-token-{i}", "ListKeys", kpb.ListKeysRequest(page_token=token), INVALID,
         "page_token")
        for i, token in enumerate(["zzz", "!!", "é", "WzEsMiwzXQ", "e30", "WyJhIiwxXQ"])
    ],
    # --- KeyManagement.UpdateKey
    ("update-mask-empty", "UpdateKey", kpb.UpdateKeyRequest(key_id=EXISTING, name="x"), INVALID,
     "update_mask"),
    ("update-mask-unknown", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("key_id")), INVALID, "update_mask"),
    ("update-name", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("name"), name=" "), INVALID,
     "name"),
    ("update-project", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("project"), project="a b"),
     INVALID, "project"),
    ("update-environment", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("environment"),
                          environment="a b"),
     INVALID, "environment"),
    ("update-labels", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("labels"), labels={"A": "b"}),
     INVALID, "labels"),
    ("update-cost-usd", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("limits.cost_limit_usd"),
                          limits=kpb.Limits(cost_limit_usd="x")),
     INVALID, "limits.cost_limit_usd"),
    ("update-cost-micro", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("limits.cost_limit_micro_usd"),
                          limits=kpb.Limits(cost_limit_micro_usd=-1)),
     INVALID, "limits.cost_limit_micro_usd"),
    ("update-tokens", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("limits.token_limit"),
                          limits=kpb.Limits(token_limit=0)),
     INVALID, "limits.token_limit"),
    ("update-rpm", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("limits"),
                          limits=kpb.Limits(requests_per_minute=-3)),
     INVALID, "limits.requests_per_minute"),
    ("update-reset-period", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("limits.reset_period"),
                          limits=kpb.Limits(reset_period=42)),  # type: ignore[arg-type]
     INVALID, "limits.reset_period"),
    ("update-expires-past", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("expires_at"),
                          expires_at=Timestamp(seconds=1_000_000_000)),
     INVALID, "expires_at"),
    ("update-expires-nanos", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("expires_at"),
                          expires_at=Timestamp(seconds=4_000_000_000, nanos=10**9)),
     INVALID, "expires_at"),
    ("update-rename-and-bad-expiry", "UpdateKey",
     kpb.UpdateKeyRequest(key_id=EXISTING, update_mask=_mask("name", "expires_at"),
                          name="fresh", expires_at=Timestamp(seconds=1_000_000_000)),
     INVALID, "expires_at"),
    # --- Admission.RecordUsage
    *[
        (f"usage-request-id-{i}", "RecordUsage",
         adm.RecordUsageRequest(key_id=EXISTING, request_id=rid), INVALID, "request_id")
        for i, rid in enumerate(["", "has space", "x" * 129, "é", "new\nline"])
    ],
    ("usage-prompt-negative", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", prompt_tokens=-1), INVALID,
     "prompt_tokens"),
    ("usage-prompt-huge", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", prompt_tokens=10**13), INVALID,
     "prompt_tokens"),
    ("usage-completion-negative", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", completion_tokens=-1), INVALID,
     "completion_tokens"),
    ("usage-cost-negative", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", cost_micro_usd=-1), INVALID,
     "cost_micro_usd"),
    ("usage-cost-huge", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", cost_micro_usd=10**16), INVALID,
     "cost_micro_usd"),
    *[
        (f"usage-cost-usd-{text}", "RecordUsage",
         adm.RecordUsageRequest(key_id=EXISTING, request_id="r", cost_usd=text), INVALID,
         "cost_usd")
        for text in ("abc", "-1", "0.0000001", "1e30")
    ],
    ("usage-cost-both", "RecordUsage",
     adm.RecordUsageRequest(key_id=EXISTING, request_id="r", cost_usd="1", cost_micro_usd=5),
     INVALID, "cost_usd"),
    ("usage-unknown-key", "RecordUsage",
     adm.RecordUsageRequest(key_id=UNKNOWN, request_id="r"), NOT_FOUND, ""),
]

# Every RPC that names a key: missing, malformed and unknown key ids.
_BY_KEY_ID: list[tuple[str, Any]] = [
    ("GetKey", kpb.GetKeyRequest),
    ("EnableKey", kpb.EnableKeyRequest),
    ("DisableKey", kpb.DisableKeyRequest),
    ("DeleteKey", kpb.DeleteKeyRequest),
    ("GetKeyOverview", kpb.GetKeyOverviewRequest),
    ("UpdateKey", lambda key_id: kpb.UpdateKeyRequest(key_id=key_id, update_mask=_mask("name"),
                                                       name="x")),
    ("RecordUsage", lambda key_id: adm.RecordUsageRequest(key_id=key_id, request_id="r")),
]
for _rpc, _make in _BY_KEY_ID:
    CASES += [
        (f"{_rpc}-key-id-missing", _rpc, _make(key_id=""), INVALID, "key_id"),
        (f"{_rpc}-key-id-malformed", _rpc, _make(key_id="key_nope"), INVALID, "key_id"),
        (f"{_rpc}-key-id-secret", _rpc, _make(key_id=secrets.new_secret().secret), INVALID,
         "key_id"),
    ]
    if _rpc != "RecordUsage":
        CASES.append((f"{_rpc}-key-id-unknown", _rpc, _make(key_id=UNKNOWN), NOT_FOUND, ""))

_AUDIT = getattr(kpb, "ListAuditEntriesRequest", None)
if _AUDIT is not None:
    CASES += [
        ("audit-key-id", "ListAuditEntries", _AUDIT(key_id="key_nope"), INVALID, "key_id"),
        ("audit-page-size", "ListAuditEntries", _AUDIT(page_size=-1), INVALID, "page_size"),
        ("audit-page-token", "ListAuditEntries", _AUDIT(page_token="zzz"), INVALID,
         "page_token"),
    ]


@pytest.fixture
async def store_client(valkey_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(valkey_url, decode_responses=True)
    yield client
    await client.aclose()


def _with_key_id(request: Any, key_id: str) -> Any:
    if getattr(request, "key_id", None) == EXISTING:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.key_id = key_id
        return copy
    return request


@pytest.mark.parametrize(
    ("rpc", "request_msg", "code", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_input_is_refused_with_a_status_naming_the_field_and_writes_nothing(
    grpc_stubs: Stubs,
    store_client: Redis,
    key_prefix: str,
    rpc: str,
    request_msg: Any,
    code: grpc.StatusCode,
    field: str,
) -> None:
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="existing"))
    before = await snapshot(store_client, key_prefix)
    stub = grpc_stubs.admission if hasattr(grpc_stubs.admission, rpc) else grpc_stubs.keys
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stub, rpc)(_with_key_id(request_msg, created.key.key_id), timeout=10)
    assert err.value.code() == code, err.value.details()
    assert field in (err.value.details() or "")
    assert created.secret not in (err.value.details() or "")
    assert await snapshot(store_client, key_prefix) == before


async def test_a_create_refused_for_a_past_expiry_leaves_no_trace_in_the_store(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_stubs.keys.CreateKey(
            kpb.CreateKeyRequest(name="n", workspace="fresh",
                                 expires_at=Timestamp(seconds=1_000_000_000))
        )
    # Only the deployment settings the sidecar pinned when it started.
    assert await key_names(store_client, key_prefix) == [f"{key_prefix}:deployment"]
    await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="n", workspace="fresh"))


async def test_an_invalid_create_leaves_no_trace_in_the_store(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_stubs.keys.CreateKey(
            kpb.CreateKeyRequest(name="n", limits=kpb.Limits(token_limit=-1))
        )
    # Only the deployment settings the sidecar pinned when it started.
    assert await key_names(store_client, key_prefix) == [f"{key_prefix}:deployment"]


async def test_an_empty_secret_is_a_denial_for_a_missing_key_not_an_error(
    grpc_stubs: Stubs,
) -> None:
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=""))
    assert (reply.allowed, reply.deny_reason) == (False, adm.DENY_REASON_KEY_MISSING)


@pytest.mark.parametrize("secret", ["garbage", "sk-aigw-", "x" * 5000, "é" * 40, "\x00" * 10])
async def test_a_malformed_secret_is_a_denial_not_an_error(grpc_stubs: Stubs, secret: str) -> None:
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=secret))
    assert (reply.allowed, reply.deny_reason) == (False, adm.DENY_REASON_KEY_MALFORMED)
    assert secret not in reply.message


async def test_setting_a_limit_on_a_legacy_key_is_a_failed_precondition(
    grpc_stubs: Stubs,
) -> None:
    legacy = await grpc_stubs.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="old")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.UpdateKey(
            kpb.UpdateKeyRequest(key_id=legacy.key.key_id, update_mask=_mask("limits.token_limit"),
                                 limits=kpb.Limits(token_limit=5))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "create a new API key" in (err.value.details() or "")
