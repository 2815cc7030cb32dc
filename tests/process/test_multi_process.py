"""Two ``aigw-sidecar serve`` processes on one store share every limit exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import start
from aigw_sidecar.settings import Settings
from tests.servers import SidecarProcess, replicas

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too


async def test_two_processes_admit_exactly_50_of_200_concurrent_requests_in_total(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        created = await one.keys.CreateKey(
            kpb.CreateKeyRequest(name="shared", limits=kpb.Limits(requests_per_minute=50)),
            timeout=10,
        )
        request = adm.AuthorizeRequest(secret=created.secret)
        stubs = [one.admission, two.admission]
        replies = await asyncio.gather(
            *(stubs[i % 2].Authorize(request, timeout=30) for i in range(200))
        )
    assert sum(r.allowed for r in replies) == 50
    assert {r.deny_reason for r in replies if not r.allowed} == {
        adm.DENY_REASON_REQUESTS_PER_MINUTE
    }


async def test_a_key_disabled_through_one_process_is_refused_by_the_other(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        keys = one.keys
        created = await keys.CreateKey(kpb.CreateKeyRequest(name="disabled"), timeout=10)
        await keys.DisableKey(kpb.DisableKeyRequest(key_id=created.key.key_id), timeout=10)
        reply = await two.admission.Authorize(
            adm.AuthorizeRequest(secret=created.secret), timeout=10
        )
    assert reply.deny_reason == adm.DENY_REASON_KEY_DISABLED


async def test_two_processes_reserve_exactly_ten_100_token_estimates_of_a_1000_token_budget(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        created = await one.keys.CreateKey(
            kpb.CreateKeyRequest(name="budget", limits=kpb.Limits(token_limit=1000)), timeout=10
        )
        stubs = [one.admission, two.admission]
        replies = await asyncio.gather(*(
            stubs[i % 2].Authorize(adm.AuthorizeRequest(
                secret=created.secret, request_id=f"r{i}",
                estimate=adm.Estimate(prompt_tokens=60, max_output_tokens=40),
            ), timeout=30)
            for i in range(60)
        ))
        admitted = [i for i, r in enumerate(replies) if r.allowed]
        assert len(admitted) == 10
        assert {r.deny_reason for r in replies if not r.allowed} == {adm.DENY_REASON_TOKEN_LIMIT}
        # Settling through the other process: the budget is exactly used up.
        for i in admitted:
            await stubs[(i + 1) % 2].RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id=f"r{i}", prompt_tokens=60,
                completion_tokens=40), timeout=10)
        reply = await stubs[0].Authorize(adm.AuthorizeRequest(secret=created.secret), timeout=10)
    assert reply.deny_reason == adm.DENY_REASON_TOKEN_LIMIT
    assert reply.tokens.remaining == 0


async def test_a_key_deleted_through_one_process_is_unknown_to_the_next_request_on_the_other(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        keys = one.keys
        other = two.admission
        created = await keys.CreateKey(kpb.CreateKeyRequest(name="deleted"), timeout=10)
        request = adm.AuthorizeRequest(secret=created.secret)
        assert (await other.Authorize(request, timeout=10)).allowed
        await keys.DeleteKey(kpb.DeleteKeyRequest(key_id=created.key.key_id), timeout=10)
        reply = await other.Authorize(request, timeout=10)
    assert reply.deny_reason == adm.DENY_REASON_KEY_UNKNOWN


@pytest.mark.parametrize(
    ("flag", "value"), [("reservation_ttl_s", 300), ("usage_dedupe_s", 3600)]
)
async def test_a_replica_with_other_lease_or_dedupe_times_refuses_to_start(
    valkey_url: str, tmp_path: Path, flag: str, value: int
) -> None:
    # A shorter lease would free a parallel slot while its request still runs on
    # the other replica; a shorter dedupe window would count a retried report twice.
    prefix = f"pin-{flag}"
    first = await start(Settings(listen="127.0.0.1:0", redis_url=valkey_url,
                                 key_prefix=prefix, data_dir=tmp_path))
    try:
        with pytest.raises(RuntimeError, match="--reservation-ttl-s and --usage-dedupe-s"):
            await start(Settings(listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=prefix,
                                 data_dir=tmp_path, **{flag: value}))
        same = await start(Settings(listen="127.0.0.1:0", redis_url=valkey_url,
                                    key_prefix=prefix, data_dir=tmp_path))
        await same.stop()
    finally:
        await first.stop()
