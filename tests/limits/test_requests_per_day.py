"""Requests per day: a fixed UTC-day window, added as one row of the limit kinds table.

Through the store (the window and its counter), gRPC (the deny reason, the
RateLimit, the overview, validation), Envoy's Check (429, Retry-After and the
x-ratelimit-*-requests headers), the CLI as a subprocess and the typed client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aigw_client import AigwClient
from aigw_client import DenyReason as ClientDenyReason
from aigw_client import Limits as ClientLimits
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import DenyReason
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.errors import FailedPrecondition
from aigw_sidecar.keys.model import KeySpec, KeyUpdate, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.kinds import MAX_REQUESTS_PER_DAY
from aigw_sidecar.store.keyspace import Keyspace
from tests.conftest import Clock, Stubs
from tests.server.test_ext_authz_servicer import check, reply_headers
from tests.servers import SidecarProcess

pytestmark = pytest.mark.cluster

DAY_S = 86_400
MIDNIGHT = 1_830_124_800  # 2027-12-29 00:00:00 UTC, a whole day of the store clock
assert MIDNIGHT % DAY_S == 0


def _per_day(n: int) -> KeyUpdate:
    return KeyUpdate(fields=frozenset({"requests_per_day"}), limits=Limits(requests_per_day=n))


async def _admitted(admission: AdmissionService, secret: str, n: int) -> None:
    for _ in range(n):
        assert (await admission.authorize(secret)).allowed


async def test_the_limit_admits_n_requests_a_utc_day_and_then_refuses_until_midnight(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(MIDNIGHT + 3600)
    _key, secret = await keys.create(KeySpec(name="daily", limits=Limits(requests_per_day=3)))
    await _admitted(admission, secret, 3)
    clock.set_s(MIDNIGHT + DAY_S - 90.5)
    denied = await admission.authorize(secret)
    assert (denied.allowed, denied.deny_reason) == (False, DenyReason.REQUESTS_PER_DAY)
    assert denied.retry_after_ms == 90_500
    assert denied.requests_per_day is not None
    assert (denied.requests_per_day.limit, denied.requests_per_day.remaining) == (3, 0)
    assert "Requests-per-day limit reached" in denied.message
    assert "Retry in 91 s." in denied.message
    clock.set_s(MIDNIGHT + DAY_S)  # a new UTC day: the counter reads as zero
    allowed = await admission.authorize(secret)
    assert allowed.allowed and allowed.requests_per_day is not None
    assert (allowed.requests_per_day.remaining, allowed.requests_per_day.reset_ms) == (
        2, DAY_S * 1000
    )


async def test_a_refused_request_changes_no_counter(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    clock.set_s(MIDNIGHT + 10)
    key, secret = await keys.create(KeySpec(name="untouched", limits=Limits(requests_per_day=1)))
    await _admitted(admission, secret, 1)
    record = Keyspace(key_prefix).record(key.key_id)
    before = await redis_client.hgetall(record)
    for _ in range(3):
        assert not (await admission.authorize(secret)).allowed
    assert await redis_client.hgetall(record) == before
    overview = await keys.overview(key.key_id)
    assert (overview.used["requests_per_day"], overview.lifetime_requests) == (1, 1)


async def test_a_limit_set_mid_day_counts_from_then_and_a_cleared_one_stops(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(MIDNIGHT + 100)
    key, secret = await keys.create(KeySpec(name="later"))
    await _admitted(admission, secret, 4)  # no limit: not counted (a key without it pays nothing)
    assert (await keys.overview(key.key_id)).used["requests_per_day"] == 0
    await keys.update(key.key_id, _per_day(2))
    await _admitted(admission, secret, 2)
    assert (await admission.authorize(secret)).deny_reason is DenyReason.REQUESTS_PER_DAY
    await keys.update(key.key_id, KeyUpdate(fields=frozenset({"requests_per_day"})))
    assert (await admission.authorize(secret)).allowed  # cleared: no limit


async def test_the_day_ignores_the_reset_period_and_checks_after_requests_per_minute(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(MIDNIGHT + 50)
    _key, secret = await keys.create(KeySpec(
        name="both", limits=Limits(requests_per_day=2, requests_per_minute=2)
    ))
    await _admitted(admission, secret, 2)
    # Both are used up: the rolling window comes first in the table, so it is the reason.
    assert (await admission.authorize(secret)).deny_reason is DenyReason.REQUESTS_PER_MINUTE
    clock.set_s(MIDNIGHT + 200)
    assert (await admission.authorize(secret)).deny_reason is DenyReason.REQUESTS_PER_DAY


async def test_a_legacy_key_refuses_the_limit(
    keys: KeyService, clock: Clock
) -> None:
    clock.set_s(MIDNIGHT)
    legacy = await keys.import_legacy("sk-legacy-0123456789abcdefghijklmnop", KeySpec(name="old"))
    with pytest.raises(FailedPrecondition):
        await keys.update(legacy.key_id, _per_day(5))


@pytest.mark.parametrize("value", [0, -1, MAX_REQUESTS_PER_DAY + 1])
async def test_a_bad_limit_is_invalid_argument_naming_the_field(
    grpc_stubs: Stubs, value: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.CreateKey(keys_pb.CreateKeyRequest(
            name="bad", limits=keys_pb.Limits(requests_per_day=value)
        ))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.requests_per_day" in (err.value.details() or "")


async def test_grpc_carries_the_deny_reason_the_rate_limit_and_the_overview(
    grpc_stubs: Stubs
) -> None:
    created = await grpc_stubs.keys.CreateKey(keys_pb.CreateKeyRequest(
        name="grpc", limits=keys_pb.Limits(requests_per_day=1)
    ))
    assert created.key.limits.requests_per_day == 1
    first = await grpc_stubs.admission.Authorize(adm_pb.AuthorizeRequest(secret=created.secret))
    assert first.allowed and first.requests_per_day.limited
    assert (first.requests_per_day.limit, first.requests_per_day.remaining) == (1, 0)
    second = await grpc_stubs.admission.Authorize(adm_pb.AuthorizeRequest(secret=created.secret))
    assert second.deny_reason == adm_pb.DENY_REASON_REQUESTS_PER_DAY
    assert 0 < second.retry_after_ms <= DAY_S * 1000
    overview = (await grpc_stubs.keys.GetKeyOverview(
        keys_pb.GetKeyOverviewRequest(key_id=created.key.key_id)
    )).overview
    assert (overview.requests_per_day.limited, overview.requests_per_day.used) == (True, 1)


async def test_envoy_check_answers_429_with_retry_after_and_the_requests_headers(
    grpc_stubs: Stubs
) -> None:
    created = await grpc_stubs.keys.CreateKey(keys_pb.CreateKeyRequest(
        name="envoy", limits=keys_pb.Limits(requests_per_day=1, requests_per_minute=100)
    ))
    auth = f"Bearer {created.secret}"
    assert (await check(grpc_stubs, authorization=auth)).HasField("ok_response")
    denied = await check(grpc_stubs, authorization=auth)
    assert denied.denied_response.status.code == 429
    headers = reply_headers(denied)
    now = datetime.now(UTC)
    to_midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(headers["retry-after"]) - (to_midnight - now).total_seconds()) < 5
    # The refusing kind of the requests family shows, not the roomier per-minute one.
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == (
        "1", "0"
    )
    assert json.loads(denied.denied_response.body)["error"]["code"] == "requests_per_day"


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("rpd")
    proc = SidecarProcess(valkey_url, "rpd", log_path=folder / "sidecar.log").start()
    yield proc.target
    proc.stop()


def test_the_cli_sets_shows_and_clears_it(sidecar: str) -> None:
    env = {**os.environ, "AIGW_ADMIN_TARGET": sidecar}
    env.pop("AIGW_ADMIN_TOKEN", None)
    env.pop("AIGW_ADMIN_TOKEN_FILE", None)

    def admin(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "aigw_sidecar.admin.cli", *args],
                              capture_output=True, text=True, env=env, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = admin("-o", "json", "keys", "create", "--name", "cli-day",
                    "--requests-per-day", "500")
    key_id = json.loads(created)["key"]["key_id"]
    assert "500 rpd" in admin("keys", "get", key_id)
    assert "requests/day" in admin("keys", "overview", key_id)
    admin("keys", "update", key_id, "--clear", "limits.requests_per_day")
    limits_row = next(line for line in admin("keys", "get", key_id).splitlines()
                      if line.startswith("limits"))
    assert "rpd" not in limits_row  # (the key id itself may hold the letters)


def test_the_client_round_trips_it(sidecar: str) -> None:
    with AigwClient(sidecar) as client:
        created = client.create_key("client-day", limits=ClientLimits(requests_per_day=2))
        assert created.key.limits.requests_per_day == 2
        for _ in range(2):
            assert client.authorize(created.secret).allowed
        denied = client.authorize(created.secret)
        assert denied.deny_reason is ClientDenyReason.REQUESTS_PER_DAY
        assert denied.requests_per_day is not None and denied.requests_per_day.remaining == 0
        assert client.get_key_overview(created.key.key_id).requests_per_day.used == 2
        cleared = client.update_key(created.key.key_id, requests_per_day=None)
        assert cleared.limits.requests_per_day is None
