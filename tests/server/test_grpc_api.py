"""The gRPC API end to end on an in-process sidecar: concurrency, conversions, health."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import start
from aigw_sidecar.settings import Settings
from tests.conftest import Stubs
from tests.servers import StoreProcess, store_binaries

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too


async def test_200_concurrent_requests_on_a_50_per_minute_key_admit_exactly_50(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name="k", limits=kpb.Limits(requests_per_minute=50))
    )
    request = adm.AuthorizeRequest(secret=created.secret)
    replies = await asyncio.gather(
        *(grpc_stubs.admission.Authorize(request, timeout=30) for _ in range(200))
    )
    assert sum(r.allowed for r in replies) == 50
    refused = [r for r in replies if not r.allowed]
    assert {r.deny_reason for r in refused} == {adm.DENY_REASON_REQUESTS_PER_MINUTE}
    assert all(0 < r.retry_after_ms <= 60_000 for r in refused)


async def test_concurrent_retries_of_one_usage_report_over_grpc_count_once(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k"))
    report = adm.RecordUsageRequest(
        key_id=created.key.key_id, request_id="chatcmpl-1", prompt_tokens=7, cost_usd="0.25"
    )
    replies = await asyncio.gather(
        *(grpc_stubs.admission.RecordUsage(report, timeout=30) for _ in range(30))
    )
    assert sum(r.counted for r in replies) == 1
    overview = (
        await grpc_stubs.keys.GetKeyOverview(kpb.GetKeyOverviewRequest(key_id=created.key.key_id))
    ).overview
    assert (overview.lifetime_prompt_tokens, overview.lifetime_cost_micro_usd) == (7, 250_000)


async def test_an_allowed_request_carries_the_key_identity_and_its_limits(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(
            name="k", workspace="acme", project="web", environment="prod",
            limits=kpb.Limits(requests_per_minute=10, token_limit=1000,
                              reset_period=kpb.RESET_PERIOD_DAILY),
        )
    )
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=created.secret))
    assert reply.allowed and reply.deny_reason == adm.DENY_REASON_UNSPECIFIED
    assert (reply.key_id, reply.workspace, reply.project, reply.environment) == (
        created.key.key_id, "acme", "web", "prod"
    )
    assert (reply.requests.limited, reply.requests.limit, reply.requests.remaining) == (
        True, 10, 9
    )
    assert reply.tokens.limited and reply.tokens.resets and reply.tokens.reset_ms > 0
    assert not reply.cost_micro_usd.limited


async def test_a_budget_used_up_over_grpc_is_denied_with_the_reason_and_retry_time(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(
            name="k", limits=kpb.Limits(cost_limit_usd="0.10", reset_period=kpb.RESET_PERIOD_DAILY)
        )
    )
    await grpc_stubs.admission.RecordUsage(
        adm.RecordUsageRequest(key_id=created.key.key_id, request_id="r1", cost_usd="0.10")
    )
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=created.secret))
    assert (reply.allowed, reply.deny_reason) == (False, adm.DENY_REASON_COST_LIMIT)
    assert 0 < reply.retry_after_ms <= 86_400_000
    assert reply.retry_after_ms == reply.cost_micro_usd.reset_ms


async def test_a_cost_limit_reads_back_in_usd_and_in_micro_usd(grpc_stubs: Stubs) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name="k", limits=kpb.Limits(cost_limit_usd="12.50"))
    )
    limits = created.key.limits
    assert (limits.cost_limit_usd, limits.cost_limit_micro_usd) == ("12.5", 12_500_000)
    assert created.key.status == kpb.KEY_STATUS_ENABLED
    assert created.key.masked_secret.endswith(created.secret[-4:])
    assert created.secret not in str(created.key)


async def test_the_same_cost_in_both_forms_is_accepted(grpc_stubs: Stubs) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(
            name="k", limits=kpb.Limits(cost_limit_usd="2", cost_limit_micro_usd=2_000_000)
        )
    )
    assert created.key.limits.cost_limit_micro_usd == 2_000_000


async def test_a_duplicate_name_over_grpc_is_already_exists(grpc_stubs: Stubs) -> None:
    await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k", workspace="acme"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k", workspace="acme"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k", workspace="globex"))


async def test_listing_over_grpc_pages_until_the_token_is_empty(grpc_stubs: Stubs) -> None:
    ids = set()
    for i in range(7):
        ids.add((await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name=f"k{i}"))).key.key_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await grpc_stubs.keys.ListKeys(kpb.ListKeysRequest(page_size=3, page_token=token))
        seen += [k.key_id for k in page.keys]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids)


async def test_a_page_with_usage_over_grpc_holds_each_keys_overview_in_order(
    grpc_stubs: Stubs,
) -> None:
    limits = [kpb.Limits(cost_limit_usd="5"), kpb.Limits(token_limit=1000), kpb.Limits()]
    for i, lim in enumerate(limits):
        created = await grpc_stubs.keys.CreateKey(
            kpb.CreateKeyRequest(name=f"k{i}", project="web", limits=lim)
        )
        await grpc_stubs.admission.RecordUsage(adm.RecordUsageRequest(
            key_id=created.key.key_id, request_id="r", prompt_tokens=10 * i, cost_usd="0.25",
        ))
    page = await grpc_stubs.keys.ListKeys(
        kpb.ListKeysRequest(project="web", view=kpb.KEY_VIEW_WITH_USAGE)
    )
    assert len(page.keys) == len(page.overviews) == 3
    for key, overview in zip(page.keys, page.overviews, strict=True):
        assert overview.key == key
        alone = (await grpc_stubs.keys.GetKeyOverview(
            kpb.GetKeyOverviewRequest(key_id=key.key_id)
        )).overview
        overview.ClearField("observed_at")
        alone.ClearField("observed_at")
        assert overview == alone
    assert [ov.cost_micro_usd.used for ov in page.overviews] == [250_000] * 3
    assert page.overviews[0].cost_micro_usd.remaining == 4_750_000


async def test_a_basic_page_over_grpc_has_no_overviews(grpc_stubs: Stubs) -> None:
    await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k"))
    for view in (kpb.KEY_VIEW_UNSPECIFIED, kpb.KEY_VIEW_BASIC):
        page = await grpc_stubs.keys.ListKeys(kpb.ListKeysRequest(view=view))
        assert [k.name for k in page.keys] == ["k"] and not page.overviews


async def test_name_contains_over_grpc_ignores_case(grpc_stubs: Stubs) -> None:
    for name in ("Checkout API", "checkout-batch", "search"):
        await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name=name))
    page = await grpc_stubs.keys.ListKeys(
        kpb.ListKeysRequest(name_contains="CHECKOUT", view=kpb.KEY_VIEW_WITH_USAGE)
    )
    assert sorted(k.name for k in page.keys) == ["Checkout API", "checkout-batch"]
    assert sorted(ov.key.name for ov in page.overviews) == ["Checkout API", "checkout-batch"]


async def test_an_update_mask_changes_only_the_named_fields(grpc_stubs: Stubs) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name="k", labels={"team": "a"},
                             limits=kpb.Limits(token_limit=5, requests_per_minute=3))
    )
    updated = await grpc_stubs.keys.UpdateKey(
        kpb.UpdateKeyRequest(
            key_id=created.key.key_id,
            update_mask=FieldMask(paths=["limits.token_limit", "labels"]),
            limits=kpb.Limits(token_limit=50),
            labels={"team": "b"},
            name="ignored",
        )
    )
    assert (updated.key.name, dict(updated.key.labels)) == ("k", {"team": "b"})
    assert (updated.key.limits.token_limit, updated.key.limits.requests_per_minute) == (50, 3)


async def test_disable_enable_and_delete_take_effect_on_the_next_authorize(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(name="k"))
    key_id, request = created.key.key_id, adm.AuthorizeRequest(secret=created.secret)
    disabled = await grpc_stubs.keys.DisableKey(kpb.DisableKeyRequest(key_id=key_id))
    assert disabled.key.status == kpb.KEY_STATUS_DISABLED
    reply = await grpc_stubs.admission.Authorize(request)
    assert (reply.deny_reason, reply.retry_after_ms) == (adm.DENY_REASON_KEY_DISABLED, 0)
    await grpc_stubs.keys.EnableKey(kpb.EnableKeyRequest(key_id=key_id))
    assert (await grpc_stubs.admission.Authorize(request)).allowed
    await grpc_stubs.keys.DeleteKey(kpb.DeleteKeyRequest(key_id=key_id))
    reply = await grpc_stubs.admission.Authorize(request)
    assert reply.deny_reason == adm.DENY_REASON_KEY_UNKNOWN
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.GetKey(kpb.GetKeyRequest(key_id=key_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_legacy_keys_are_listed_as_legacy_over_grpc(grpc_stubs: Stubs) -> None:
    await grpc_stubs.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret="legacy-abc-123", name="old")
    )
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret="legacy-abc-123"))
    assert reply.allowed and reply.legacy
    listed = await grpc_stubs.keys.ListKeys(kpb.ListKeysRequest())
    assert [(k.name, k.legacy) for k in listed.keys] == [("old", True)]


async def _health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


async def test_health_is_serving_while_the_store_answers(grpc_stubs: Stubs) -> None:
    assert await _health(grpc_stubs.target) == health_pb2.HealthCheckResponse.SERVING


async def test_health_is_not_serving_once_the_store_stops_and_serving_when_it_returns(
    tmp_path: Path, key_prefix: str
) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "store").start()
    settings = Settings(
        listen="127.0.0.1:0", redis_url=store.url, key_prefix=key_prefix,
        data_dir=tmp_path, shutdown_grace_s=1.0, health_interval_s=0.1,
    )
    sidecar = await start(settings)
    target = f"127.0.0.1:{sidecar.port}"
    restarted = None
    try:
        assert await _health(target) == health_pb2.HealthCheckResponse.SERVING
        store.stop()
        await _wait_for_health(target, health_pb2.HealthCheckResponse.NOT_SERVING)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = admission_pb2_grpc.AdmissionStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Authorize(adm.AuthorizeRequest(secret="legacy-abc-123"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        restarted = StoreProcess("valkey", store.binary, store.data_dir, port=store.port).start()
        await _wait_for_health(target, health_pb2.HealthCheckResponse.SERVING)
    finally:
        await sidecar.stop()
        store.stop()
        if restarted is not None:
            restarted.stop()


async def _wait_for_health(target: str, status: int) -> None:
    seen = None
    for _ in range(200):
        seen = await _health(target)
        if seen == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health stayed {seen}, wanted {status}")
