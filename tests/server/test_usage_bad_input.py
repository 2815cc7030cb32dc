"""Bad input on the usage-accounting fields: a status naming the field, and no trace.

Estimates on Authorize, model and cached tokens on RecordUsage, and every field
of ReleaseReservation, over gRPC against an in-process sidecar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys import secrets
from tests.conftest import Stubs
from tests.snapshots import snapshot

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SECRET = "<secret of the existing key>"
EXISTING = "<key id of the existing key>"
UNKNOWN = "key_" + "a" * 20


def _authorize(request_id: str = "r1", **estimate: Any) -> adm.AuthorizeRequest:
    return adm.AuthorizeRequest(
        secret=SECRET, request_id=request_id, estimate=adm.Estimate(**estimate)
    )


def _usage(**fields: Any) -> adm.RecordUsageRequest:
    return adm.RecordUsageRequest(**{"key_id": EXISTING, "request_id": "r1", **fields})


CASES: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
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
         adm.ReleaseReservationRequest(key_id=EXISTING, request_id=rid), INVALID, "request_id")
        for i, rid in enumerate(["", "has space", "x" * 129, "é"])
    ],
    ("release-unknown-key", "ReleaseReservation",
     adm.ReleaseReservationRequest(key_id=UNKNOWN, request_id="r1"), grpc.StatusCode.NOT_FOUND,
     ""),
]


@pytest.fixture
async def store_client(valkey_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(valkey_url, decode_responses=True)
    yield client
    await client.aclose()


def _for_key(request: Any, key_id: str, secret: str) -> Any:
    copy = type(request)()
    copy.CopyFrom(request)
    if getattr(copy, "key_id", None) == EXISTING:
        copy.key_id = key_id
    if getattr(copy, "secret", None) == SECRET:
        copy.secret = secret
    return copy


@pytest.mark.parametrize(
    ("rpc", "request_msg", "code", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
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
