"""Bad input on every RPC: a precise status naming the field, never half a write.

Each case calls the in-process sidecar over gRPC with one bad field and checks
the status code, that the message names the field, and that the store under
the test's prefix is exactly as it was before the call: first every field of
both gRPC services, then the usage-accounting fields (estimates on Authorize,
model and cached tokens on RecordUsage, and every field of ReleaseReservation).

Then hostile input: random fields on every RPC, raw bytes, huge messages,
unknown-key floods. Properties, over an in-process sidecar on the session's
Valkey: only documented statuses come back, the server keeps answering, a
refused call writes nothing, and an unknown key costs at most one store round
trip (malformed ones none), counted with Redis ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.ext_authz import CHECK_METHOD, MAX_KEY_HEADER_BYTES
from tests.conftest import Stubs
from tests.snapshots import key_names, snapshot

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTING = "key_" + "0" * 20  # replaced by the id of a real key in each test
UNKNOWN = "key_" + "z" * 20
FAR = Timestamp(seconds=4_000_000_000)


def _mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


def _labels(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


Case = tuple[str, str, Any, grpc.StatusCode, str]  # name, rpc, request, code, field named


def _each_case(cases: list[Case]) -> pytest.MarkDecorator:
    """Parametrizes ``rpc, request_msg, code, field`` over ``cases``, each by its name."""
    return pytest.mark.parametrize(
        ("rpc", "request_msg", "code", "field"),
        [case[1:] for case in cases],
        ids=[case[0] for case in cases],
    )


CASES: list[Case] = [
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
    ("list-view", "ListKeys", kpb.ListKeysRequest(view=99), INVALID, "view"),  # type: ignore[arg-type]
    ("list-name-contains-long", "ListKeys", kpb.ListKeysRequest(name_contains="x" * 129),
     INVALID, "name_contains"),
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
    ("GetKeyUsageHistory", kpb.GetKeyUsageHistoryRequest),
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


def _with_key_id(request: Any, key_id: str) -> Any:
    if getattr(request, "key_id", None) == EXISTING:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.key_id = key_id
        return copy
    return request


@_each_case(CASES)
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


# --- The usage-accounting fields: estimates on Authorize, model and cached tokens on
# RecordUsage, and every field of ReleaseReservation (their own placeholders: SECRET and
# EXISTING_ID, replaced by _for_key; UNKNOWN_ID, a key id no key has).

SECRET = "<secret of the existing key>"
EXISTING_ID = "<key id of the existing key>"
UNKNOWN_ID = "key_" + "a" * 20


def _authorize(request_id: str = "r1", **estimate: Any) -> adm.AuthorizeRequest:
    return adm.AuthorizeRequest(
        secret=SECRET, request_id=request_id, estimate=adm.Estimate(**estimate)
    )


def _usage(**fields: Any) -> adm.RecordUsageRequest:
    return adm.RecordUsageRequest(**{"key_id": EXISTING_ID, "request_id": "r1", **fields})


USAGE_CASES: list[Case] = [
    ("estimate-without-request-id", "Authorize", _authorize(""), INVALID, "request_id"),
    ("estimate-request-id-space", "Authorize", _authorize("a b"), INVALID, "request_id"),
    ("estimate-request-id-long", "Authorize", _authorize("x" * 129), INVALID, "request_id"),
    ("estimate-request-id-secret", "Authorize", _authorize(secrets.new_secret().secret),
     INVALID, "request_id"),
    ("estimate-prompt-negative", "Authorize", _authorize(prompt_tokens=-1), INVALID,
     "estimate.prompt_tokens"),
    ("estimate-prompt-huge", "Authorize", _authorize(prompt_tokens=10**13), INVALID,
     "estimate.prompt_tokens"),
    ("estimate-max-output-negative", "Authorize", _authorize(max_output_tokens=-5), INVALID,
     "estimate.max_output_tokens"),
    ("estimate-cost-negative", "Authorize", _authorize(cost_micro_usd=-1), INVALID,
     "estimate.cost_micro_usd"),
    ("estimate-cost-huge", "Authorize", _authorize(cost_micro_usd=10**16), INVALID,
     "estimate.cost_micro_usd"),
    ("estimate-model-long", "Authorize", _authorize(model="m" * 129), INVALID,
     "estimate.model"),
    ("estimate-model-space", "Authorize", _authorize(model="gpt 4o"), INVALID,
     "estimate.model"),
    ("estimate-model-non-ascii", "Authorize", _authorize(model="gpt-4ø"), INVALID,
     "estimate.model"),
    ("estimate-model-secret", "Authorize", _authorize(model=secrets.new_secret().secret),
     INVALID, "estimate.model"),
    ("usage-model-secret", "RecordUsage", _usage(model=secrets.new_secret().secret), INVALID,
     "model"),
    ("usage-cost-both", "RecordUsage", _usage(cost_micro_usd=5, cost_usd="0.000005"), INVALID,
     "cost_usd"),
    ("usage-cached-above-prompt", "RecordUsage",
     _usage(prompt_tokens=10, cached_prompt_tokens=11), INVALID, "cached_prompt_tokens"),
    ("usage-cached-negative", "RecordUsage", _usage(cached_prompt_tokens=-1), INVALID,
     "cached_prompt_tokens"),
    ("usage-model-long", "RecordUsage", _usage(model="m" * 129), INVALID, "model"),
    ("usage-model-space", "RecordUsage", _usage(model="gpt 4o"), INVALID, "model"),
    ("usage-model-newline", "RecordUsage", _usage(model="gpt\n4o"), INVALID, "model"),
    ("release-key-id-missing", "ReleaseReservation",
     adm.ReleaseReservationRequest(key_id="", request_id="r1"), INVALID, "key_id"),
    ("release-key-id-malformed", "ReleaseReservation",
     adm.ReleaseReservationRequest(key_id="key_nope", request_id="r1"), INVALID, "key_id"),
    ("release-key-id-secret", "ReleaseReservation",
     adm.ReleaseReservationRequest(key_id=secrets.new_secret().secret, request_id="r1"),
     INVALID, "key_id"),
    *[
        (f"release-request-id-{i}", "ReleaseReservation",
         adm.ReleaseReservationRequest(key_id=EXISTING_ID, request_id=rid), INVALID, "request_id")
        for i, rid in enumerate(["", "has space", "x" * 129, "é"])
    ],
    ("release-unknown-key", "ReleaseReservation",
     adm.ReleaseReservationRequest(key_id=UNKNOWN_ID, request_id="r1"), grpc.StatusCode.NOT_FOUND,
     ""),
]


def _for_key(request: Any, key_id: str, secret: str) -> Any:
    copy = type(request)()
    copy.CopyFrom(request)
    if getattr(copy, "key_id", None) == EXISTING_ID:
        copy.key_id = key_id
    if getattr(copy, "secret", None) == SECRET:
        copy.secret = secret
    return copy


@_each_case(USAGE_CASES)
async def test_bad_usage_accounting_input_is_refused_naming_the_field_and_writes_nothing(
    grpc_stubs: Stubs,
    store_client: Redis,
    key_prefix: str,
    rpc: str,
    request_msg: Any,
    code: grpc.StatusCode,
    field: str,
) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name="existing", limits=kpb.Limits(token_limit=1000))
    )
    before = await snapshot(store_client, key_prefix)
    request = _for_key(request_msg, created.key.key_id, created.secret)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(grpc_stubs.admission, rpc)(request, timeout=10)
    details = err.value.details() or ""
    assert err.value.code() == code, details
    assert field in details
    assert created.secret not in details
    assert await snapshot(store_client, key_prefix) == before


async def test_a_report_that_would_take_a_counter_past_its_cap_is_refused_without_a_write(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
) -> None:
    # 2^53 - 1 micro-USD (about 9 billion USD): nine reports of the largest cost fit,
    # a tenth would pass the cap (and, repeated, once overflowed int64 half-way).
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="spender"))
    key_id = created.key.key_id
    for i in range(9):
        await grpc_stubs.admission.RecordUsage(adm.RecordUsageRequest(
            key_id=key_id, request_id=f"r{i}", prompt_tokens=5, cost_micro_usd=10**15,
        ), timeout=10)
    before = await snapshot(store_client, key_prefix)
    for attempt in range(2):  # a retry is refused the same way: nothing half-counted
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await grpc_stubs.admission.RecordUsage(adm.RecordUsageRequest(
                key_id=key_id, request_id="r9", prompt_tokens=5, cost_micro_usd=10**15,
            ), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, attempt
        assert "2^53-1" in (err.value.details() or "")
    assert await snapshot(store_client, key_prefix) == before


async def test_a_request_id_settled_by_a_report_is_refused_when_authorized_again(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
) -> None:
    # Admitted again, it would reserve anew while its second report counted as a retry:
    # 600 tokens never charged and a reservation left open until its lease ended.
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(
        name="reuser", limits=kpb.Limits(token_limit=10_000, max_parallel_requests=2)
    ))
    request = adm.AuthorizeRequest(
        secret=created.secret, request_id="r1",
        estimate=adm.Estimate(prompt_tokens=100, max_output_tokens=500),
    )
    assert (await grpc_stubs.admission.Authorize(request, timeout=10)).allowed
    await grpc_stubs.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=created.key.key_id, request_id="r1", prompt_tokens=100, completion_tokens=500,
    ), timeout=10)
    before = await snapshot(store_client, key_prefix)
    for again in (request, adm.AuthorizeRequest(secret=created.secret, request_id="r1")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await grpc_stubs.admission.Authorize(again, timeout=10)
        assert err.value.code() == INVALID
        assert "request_id" in (err.value.details() or "")
    assert await snapshot(store_client, key_prefix) == before
    assert (await grpc_stubs.admission.Authorize(
        adm.AuthorizeRequest(secret=created.secret, request_id="r2"), timeout=10
    )).allowed


# --- Hostile input: random fields on every RPC, raw bytes, huge messages, unknown-key floods.

CODE = grpc.StatusCode
FUZZ = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Text with control characters, surrogate-free unicode, and now and then something long.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.text(min_size=1, max_size=3).map(lambda s: s * 4000),
    st.sampled_from(["sk-aigw-", "Bearer ", "key_", "a,b", " ", "\x00", "é" * 600]),
)
big_int = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))


async def _status(call: Any) -> CODE:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() != CODE.INTERNAL, err.details()
        return err.code()
    return CODE.OK


@FUZZ
@given(secret=hostile_text, request_id=hostile_text, model=hostile_text,
       prompt=big_int, output=big_int)
async def test_any_authorize_is_a_decision_or_invalid_argument_and_writes_nothing(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    secret: str, request_id: str, model: str, prompt: int, output: int,
) -> None:
    before = await snapshot(store_client, key_prefix)
    request = adm.AuthorizeRequest(
        secret=secret, request_id=request_id,
        estimate=adm.Estimate(model=model, prompt_tokens=prompt, max_output_tokens=output),
    )
    code = await _status(grpc_stubs.admission.Authorize(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT)
    assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(key_id=st.one_of(hostile_text, st.just("real")), request_id=hostile_text,
       prompt=big_int, completion=big_int, cost=big_int, cost_usd=hostile_text)
async def test_any_usage_report_is_counted_or_refused_without_a_write(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    key_id: str, request_id: str, prompt: int, completion: int, cost: int, cost_usd: str,
) -> None:
    real = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name=f"k{secrets.new_key_id()}"), timeout=10
    )
    before = await snapshot(store_client, key_prefix)
    request = adm.RecordUsageRequest(
        key_id=real.key.key_id if key_id == "real" else key_id, request_id=request_id,
        prompt_tokens=prompt, completion_tokens=completion,
    )
    if cost_usd:
        request.cost_usd = cost_usd
    else:
        request.cost_micro_usd = cost
    code = await _status(grpc_stubs.admission.RecordUsage(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND)
    if code != CODE.OK:
        assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(name=hostile_text, workspace=hostile_text, project=hostile_text,
       labels=st.dictionaries(hostile_text, hostile_text, max_size=4),
       cost_usd=hostile_text, tokens=big_int, rpm=big_int)
async def test_any_create_key_is_created_or_refused_without_a_trace(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, name: str, workspace: str,
    project: str, labels: dict[str, str], cost_usd: str, tokens: int, rpm: int,
) -> None:
    before = await snapshot(store_client, key_prefix)
    request = kpb.CreateKeyRequest(
        name=name, workspace=workspace, project=project, labels=labels,
        limits=kpb.Limits(cost_limit_usd=cost_usd, token_limit=tokens, requests_per_minute=rpm),
    )
    code = await _status(grpc_stubs.keys.CreateKey(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.ALREADY_EXISTS)
    if code != CODE.OK:
        assert await snapshot(store_client, key_prefix) == before


header_name = st.one_of(
    st.sampled_from(["authorization", "x-api-key", "api-key"]), hostile_text
)


@FUZZ
@given(headers=st.dictionaries(header_name, hostile_text, max_size=6),
       repeat=st.integers(0, 3))
async def test_any_check_request_gets_an_http_answer_never_an_rpc_error(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    headers: dict[str, str], repeat: int,
) -> None:
    for name in list(headers)[:1]:
        headers[name] = ",".join([headers[name]] * (repeat + 1))  # Envoy joins repeats with ","
    request = authz.CheckRequest(attributes=authz.AttributeContext(
        request=authz.AttributeContext.Request(
            http=authz.AttributeContext.HttpRequest(headers=headers)
        )
    ))
    before = await snapshot(store_client, key_prefix)
    check = grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )
    try:
        reply = await check(request, timeout=10)
    except grpc.aio.AioRpcError as err:
        # Only a message past --max-request-bytes is refused as such.
        assert err.code() == CODE.RESOURCE_EXHAUSTED
        return
    assert reply.denied_response.status.code in (401, 403, 429)
    assert await snapshot(store_client, key_prefix) == before


RAW_METHODS = [
    "/aigw.v1.Admission/Authorize", "/aigw.v1.Admission/RecordUsage",
    "/aigw.v1.KeyManagement/CreateKey", "/aigw.v1.KeyManagement/ImportLegacyKey",
    "/aigw.v1.KeyManagement/UpdateKey", "/aigw.v1.KeyManagement/ListKeys", CHECK_METHOD,
]


def _identity(raw: bytes) -> bytes:
    return raw


@FUZZ
@given(method=st.sampled_from(RAW_METHODS),
       body=st.one_of(
           st.binary(max_size=200),
           # field 1 (a string in every request here) holding invalid UTF-8
           st.binary(min_size=1, max_size=50).map(
               lambda b: b"\x0a" + bytes([len(b) + 1]) + b"\xff" + b),
       ))
async def test_raw_bytes_get_a_documented_status_and_the_server_keeps_answering(
    grpc_stubs: Stubs, method: str, body: bytes
) -> None:
    call = grpc_stubs.channel.unary_unary(
        method, request_serializer=_identity, response_deserializer=_identity
    )
    code = await _status(call(body, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND, CODE.ALREADY_EXISTS)


async def test_invalid_utf8_in_a_string_field_is_invalid_argument(grpc_stubs: Stubs) -> None:
    call = grpc_stubs.channel.unary_unary(
        "/aigw.v1.Admission/Authorize", request_serializer=_identity,
        response_deserializer=_identity,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\x0a\x03\xff\xfe\xfd", timeout=10)
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert "\xff" not in (err.value.details() or "")


async def test_a_request_past_the_size_limit_is_resource_exhausted(grpc_stubs: Stubs) -> None:
    limit = grpc_stubs.sidecar.settings.max_request_bytes
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.admission.Authorize(
            adm.AuthorizeRequest(secret="x" * (limit + 1)), timeout=10
        )
    assert err.value.code() == CODE.RESOURCE_EXHAUSTED
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret="x" * 5000))
    assert reply.deny_reason == adm.DENY_REASON_KEY_MALFORMED


async def _command_calls(client: Redis) -> dict[str, int]:
    """Calls per command (commands a script runs count too), minus pings and INFO."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in ("ping", "info")
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


@pytest.mark.single_node
async def test_unknown_keys_cost_one_store_call_each_and_malformed_ones_none(
    grpc_stubs: Stubs, store_client: Redis
) -> None:
    unknown = [secrets.new_secret().secret for _ in range(200)]
    malformed = [s[:-1] + ("A" if s[-1] != "A" else "B") for s in unknown]  # bad checksum
    malformed += ["garbage", "sk-aigw-" + "x" * 60, "\x00\x01", "é" * 70]
    await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=unknown[0]))  # load script
    start = await _command_calls(store_client)
    replies = await asyncio.gather(*(
        grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=s), timeout=30)
        for s in unknown
    ))
    after_unknown = await _command_calls(store_client)
    await asyncio.gather(*(
        grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=s), timeout=30)
        for s in malformed
    ))
    after_malformed = await _command_calls(store_client)
    assert {r.deny_reason for r in replies} == {adm.DENY_REASON_KEY_UNKNOWN}
    # One EVALSHA each; the script reads the clock and the key record once, then stops.
    assert _delta(start, after_unknown) == {
        "evalsha": len(unknown), "time": len(unknown), "hmget": len(unknown),
    }
    assert _delta(after_unknown, after_malformed) == {}


@pytest.mark.single_node
async def test_an_oversized_or_control_character_key_header_is_401_without_a_store_call(
    grpc_stubs: Stubs, store_client: Redis
) -> None:
    check = grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )
    real = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name=f"k{secrets.new_key_id()}"), timeout=10
    )
    values = [
        {"x-api-key": "L" * (MAX_KEY_HEADER_BYTES + 1)},
        {"authorization": "Bearer " + "sk-aigw-" * 200},
        {"x-api-key": real.secret + "\x00"},
        {"authorization": f"Bearer {real.secret}\r\nx-aigw-key-id: forged"},
    ]
    start = await _command_calls(store_client)
    for headers in values:
        reply = await check(authz.CheckRequest(attributes=authz.AttributeContext(
            request=authz.AttributeContext.Request(
                http=authz.AttributeContext.HttpRequest(headers=headers)
            )
        )), timeout=10)
        assert reply.denied_response.status.code == 401
        assert "key_malformed" in reply.denied_response.body
    assert _delta(start, await _command_calls(store_client)) == {}


def _check_call(grpc_stubs: Stubs) -> Any:
    return grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )


def _chat_check(body: bytes, bearer: str = "Bearer anything") -> authz.CheckRequest:
    request = authz.CheckRequest()
    request.attributes.context_extensions["endpoint"] = "chat"
    http = request.attributes.request.http
    http.headers["authorization"] = bearer
    http.path = "/v1/chat/completions"
    http.raw_body = body
    return request


@pytest.mark.parametrize("depth", [1_100, 50_000])
async def test_a_deeply_nested_check_body_is_a_400_not_an_internal_error(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, depth: int
) -> None:
    before = await snapshot(store_client, key_prefix)
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        reply = await _check_call(grpc_stubs)(_chat_check(body), timeout=10)
        assert reply.denied_response.status.code == 400
        assert b'"invalid_request_body"' in reply.denied_response.body.encode()
    assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=20,
    ).map(lambda value: repr(value).encode()),
))
async def test_any_check_body_gets_an_http_answer_and_writes_nothing(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, body: bytes
) -> None:
    before = await snapshot(store_client, key_prefix)
    reply = await _check_call(grpc_stubs)(_chat_check(body), timeout=10)
    assert reply.denied_response.status.code in (400, 401)
    assert await snapshot(store_client, key_prefix) == before


async def test_an_access_log_frame_that_does_not_parse_is_invalid_argument(
    grpc_stubs: Stubs,
) -> None:
    call = grpc_stubs.channel.stream_unary(
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
        request_serializer=_identity, response_deserializer=_identity,
    )
    for garbage in (b"\x12\x03\xff\xfe\xfd", b"\x0a\x05\x12\x03\xff\xfe", b"\xff" * 20):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(iter([b"", garbage]), timeout=10)
        assert err.value.code() == CODE.INVALID_ARGUMENT
    assert await call(iter([b""]), timeout=10) == b""  # the service still answers
