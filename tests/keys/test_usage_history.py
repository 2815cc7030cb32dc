"""Usage history: what counted usage reports added per UTC day, for the last 1-100 days.

Through the store (record_usage.lua writes the days, usage_history.lua reads
them, delete_key.lua removes them), gRPC (GetKeyUsageHistory, its validation
and admin auth), the CLI as a subprocess and the typed client.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aigw_client
import grpc
import pytest
from aigw_client import AigwClient
from aigw_client import NotFound as ClientNotFound
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.api.v1 import keys_pb2_grpc
from aigw_sidecar.errors import FailedPrecondition, InvalidArgument, NotFound
from aigw_sidecar.keys.model import DAY_MS, HISTORY_DAYS, DailyUsage, KeySpec
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.server.admin_auth import UNAUTHENTICATED_MESSAGE
from aigw_sidecar.store.keyspace import Keyspace
from tests.conftest import Clock, Stubs
from tests.servers import SidecarProcess
from tests.snapshots import snapshot

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

DAY0 = 23_000  # 2032-12-21, a UTC day number of the store clock
TOKEN = "history-test-token-0123456789"


def _at(clock: Clock, day: int, hour: float = 12) -> None:
    clock.now_us = round((day * DAY_MS + hour * 3_600_000) * 1000)


def _day(day: int, cost: int = 0, tokens: int = 0, requests: int = 0) -> DailyUsage:
    return DailyUsage(day * DAY_MS, cost, tokens, requests)


async def _key(keys: KeyService, clock: Clock) -> str:
    _at(clock, DAY0, 0)
    key, _secret = await keys.create(KeySpec(name="history"))
    return key.key_id


async def _report(
    admission: AdmissionService, key_id: str, request_id: str, prompt: int, completion: int,
    cost: int,
) -> None:
    await admission.record_usage(UsageReport(key_id, request_id, prompt, completion, cost))


async def _days_held(redis: Redis, key_prefix: str, key_id: str) -> set[int]:
    """The days the key's history hash holds: the running day and each 'd:<day>'."""
    fields = dict(await redis.hgetall(Keyspace(key_prefix).history(key_id)))
    return {int(fields["day"])} | {int(f[2:]) for f in fields if f.startswith("d:")}


# --- the store ----------------------------------------------------------------------


async def test_usage_on_three_days_lands_on_its_days_with_zeros_between(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id = await _key(keys, clock)
    _at(clock, DAY0, 0.5)
    await _report(admission, key_id, "a", 10, 5, 1_000)
    _at(clock, DAY0, 23.99)
    await _report(admission, key_id, "b", 1, 2, 250)
    _at(clock, DAY0 + 2, 0)
    await _report(admission, key_id, "c", 100, 0, 7)
    _at(clock, DAY0 + 5, 18)
    await _report(admission, key_id, "d", 0, 40, 123_456)
    assert await keys.usage_history(key_id, 7) == (
        _day(DAY0 - 1),
        _day(DAY0, cost=1_250, tokens=18, requests=2),
        _day(DAY0 + 1),
        _day(DAY0 + 2, cost=7, tokens=100, requests=1),
        _day(DAY0 + 3),
        _day(DAY0 + 4),
        _day(DAY0 + 5, cost=123_456, tokens=40, requests=1),
    )


async def test_the_default_is_30_days_ending_today_and_a_new_key_reads_as_zeros(
    keys: KeyService, clock: Clock
) -> None:
    key_id = await _key(keys, clock)
    _at(clock, DAY0 + 1, 9)
    history = await keys.usage_history(key_id)
    assert len(history) == 30
    assert history[-1] == _day(DAY0 + 1)
    assert history[0].day_start_ms == (DAY0 - 28) * DAY_MS
    assert {(d.cost_micro_usd, d.tokens, d.requests) for d in history} == {(0, 0, 0)}


async def test_a_repeated_request_id_changes_nothing(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id = await _key(keys, clock)
    _at(clock, DAY0, 23)
    await _report(admission, key_id, "once", 10, 10, 500)
    before = await snapshot(redis_client, key_prefix)
    _at(clock, DAY0 + 1, 1)  # a retry after midnight, within the dedupe time
    await _report(admission, key_id, "once", 10, 10, 500)
    assert await snapshot(redis_client, key_prefix) == before
    assert (await keys.usage_history(key_id, 2))[0] == _day(DAY0, 500, 20, 1)


async def test_a_report_refused_at_the_counter_cap_changes_nothing(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id = await _key(keys, clock)
    _at(clock, DAY0, 10)
    await _report(admission, key_id, "first", 1, 1, 1)
    await redis_client.hset(Keyspace(key_prefix).record(key_id), "lt_pt", str(2**53 - 10))
    before = await snapshot(redis_client, key_prefix)
    with pytest.raises(FailedPrecondition):
        await _report(admission, key_id, "too-much", 100, 0, 0)
    assert await snapshot(redis_client, key_prefix) == before
    assert (await keys.usage_history(key_id, 1))[0] == _day(DAY0, 1, 2, 1)


async def test_the_first_report_of_day_d_drops_day_d_minus_100(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id = await _key(keys, clock)
    for offset in range(HISTORY_DAYS):
        _at(clock, DAY0 + offset)
        await _report(admission, key_id, f"r{offset}", 1, 0, 1)
    assert (await keys.usage_history(key_id, HISTORY_DAYS))[0] == _day(DAY0, 1, 1, 1)
    assert await _days_held(redis_client, key_prefix, key_id) == set(
        range(DAY0, DAY0 + HISTORY_DAYS)
    )
    _at(clock, DAY0 + HISTORY_DAYS)
    await _report(admission, key_id, "last", 1, 0, 1)
    assert await _days_held(redis_client, key_prefix, key_id) == set(
        range(DAY0 + 1, DAY0 + HISTORY_DAYS + 1)
    )
    history = await keys.usage_history(key_id, HISTORY_DAYS)
    assert history[0] == _day(DAY0 + 1, 1, 1, 1)
    assert history[-1] == _day(DAY0 + HISTORY_DAYS, 1, 1, 1)


async def test_the_running_day_stays_at_the_head_of_a_compact_hash(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    # A listpack is searched from its head: a report must not cost more as days add up.
    key_id = await _key(keys, clock)
    for offset in range(HISTORY_DAYS + 20):
        _at(clock, DAY0 + offset)
        await _report(admission, key_id, f"r{offset}", 1, 0, 1)
    name = Keyspace(key_prefix).history(key_id)
    assert list(await redis_client.hgetall(name))[:4] == ["day", "c", "t", "r"]
    assert await redis_client.object("encoding", name) == "listpack"
    assert await redis_client.hlen(name) == 4 + HISTORY_DAYS - 1


async def test_days_a_gap_skipped_past_leave_the_hash_too(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    # A weekly job: day D - 100 is never a day with usage, yet nothing older stays.
    key_id = await _key(keys, clock)
    for week in range(20):
        _at(clock, DAY0 + 7 * week)
        await _report(admission, key_id, f"w{week}", 1, 0, 1)
    today = DAY0 + 7 * 19
    held = await _days_held(redis_client, key_prefix, key_id)
    assert held == {DAY0 + 7 * week for week in range(20) if DAY0 + 7 * week > today - 100}
    assert sum(d.requests for d in await keys.usage_history(key_id, HISTORY_DAYS)) == len(held)


async def test_a_report_dated_before_the_last_one_counts_on_its_own_day(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    # Clocks of two store nodes a little apart around midnight (a failover).
    key_id = await _key(keys, clock)
    _at(clock, DAY0 + 1, 0.01)
    await _report(admission, key_id, "after-midnight", 1, 0, 10)
    _at(clock, DAY0, 23.99)
    await _report(admission, key_id, "before-midnight", 2, 0, 20)
    await _report(admission, key_id, "before-midnight-2", 3, 0, 30)
    _at(clock, DAY0 + 1, 1)
    await _report(admission, key_id, "later", 4, 0, 40)
    assert await keys.usage_history(key_id, 2) == (
        _day(DAY0, 50, 5, 2), _day(DAY0 + 1, 50, 5, 2)
    )


async def test_the_history_shares_the_keys_hash_tag_and_expires_a_day_after_the_window(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id = await _key(keys, clock)
    await _report(admission, key_id, "r", 1, 1, 1)
    name = Keyspace(key_prefix).history(key_id)
    assert f"{{{key_id}}}" in name
    ttl_ms = await redis_client.pttl(name)
    assert (HISTORY_DAYS + 1) * DAY_MS - 60_000 < ttl_ms <= (HISTORY_DAYS + 1) * DAY_MS


async def test_deleting_the_key_deletes_its_history(
    keys: KeyService, admission: AdmissionService, clock: Clock, redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id = await _key(keys, clock)
    await _report(admission, key_id, "r", 1, 1, 1)
    name = Keyspace(key_prefix).history(key_id)
    assert await redis_client.exists(name) == 1
    await keys.delete(key_id)
    assert await redis_client.exists(name) == 0
    with pytest.raises(NotFound):
        await keys.usage_history(key_id, 1)


@pytest.mark.parametrize("days", [-1, HISTORY_DAYS + 1])
async def test_days_out_of_range_is_invalid_argument_naming_days(
    keys: KeyService, clock: Clock, days: int
) -> None:
    key_id = await _key(keys, clock)
    with pytest.raises(InvalidArgument, match="days"):
        await keys.usage_history(key_id, days)


# --- gRPC ---------------------------------------------------------------------------


async def test_grpc_returns_each_day_from_its_start_with_cost_as_micro_usd_and_decimal(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(keys_pb.CreateKeyRequest(name="grpc-history"))
    key_id = created.key.key_id
    await grpc_stubs.admission.RecordUsage(adm_pb.RecordUsageRequest(
        key_id=key_id, request_id="r1", prompt_tokens=30, completion_tokens=12, cost_usd="0.25"
    ))
    reply = await grpc_stubs.keys.GetKeyUsageHistory(
        keys_pb.GetKeyUsageHistoryRequest(key_id=key_id, days=3)
    )
    assert len(reply.days) == 3
    starts = [d.day.ToDatetime(tzinfo=UTC) for d in reply.days]
    assert all(s.time() == datetime.min.time() for s in starts)
    assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(days=1)] * 2
    assert timedelta(0) <= datetime.now(UTC) - starts[-1] < timedelta(days=1, minutes=1)
    today = reply.days[-1]
    assert (today.cost_micro_usd, today.cost_usd, today.tokens, today.requests) == (
        250_000, "0.25", 42, 1
    )
    assert [(d.cost_usd, d.requests) for d in reply.days[:2]] == [("0", 0), ("0", 0)]
    default = await grpc_stubs.keys.GetKeyUsageHistory(
        keys_pb.GetKeyUsageHistoryRequest(key_id=key_id)
    )
    assert len(default.days) == 30


@pytest.mark.parametrize("days", [-1, HISTORY_DAYS + 1, 1_000_000])
async def test_grpc_refuses_days_out_of_range_naming_the_field(
    grpc_stubs: Stubs, days: int
) -> None:
    created = await grpc_stubs.keys.CreateKey(keys_pb.CreateKeyRequest(name="bad-days"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.GetKeyUsageHistory(
            keys_pb.GetKeyUsageHistoryRequest(key_id=created.key.key_id, days=days)
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "days" in (err.value.details() or "")


async def test_grpc_answers_not_found_for_an_unknown_key(grpc_stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.keys.GetKeyUsageHistory(
            keys_pb.GetKeyUsageHistoryRequest(key_id="key_00000000000000000000")
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


# --- a sidecar process: admin auth, the CLI, the client -------------------------------


@dataclass
class Sidecar:
    target: str
    folder: Path


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    folder = tmp_path_factory.mktemp("history")
    (folder / "tokens").write_text(f"history-tests {TOKEN}\n")
    proc = SidecarProcess(valkey_url, "hist", extra_args=[
        "--admin-token-file", str(folder / "tokens"),
    ], log_path=folder / "sidecar.log").start()
    yield Sidecar(proc.target, folder)
    proc.stop()


def _used_key(sidecar: Sidecar, name: str) -> str:
    """A key with one report today: 10 + 5 tokens, $1.5."""
    with AigwClient(sidecar.target, admin_token=TOKEN) as client:
        key_id = client.create_key(name).key.key_id
        client.record_usage(key_id, "r1", prompt_tokens=10, completion_tokens=5,
                            cost_usd=Decimal("1.5"))
    return key_id


def test_the_rpc_needs_an_admin_token(sidecar: Sidecar) -> None:
    with grpc.insecure_channel(sidecar.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            keys_pb2_grpc.KeyManagementStub(channel).GetKeyUsageHistory(
                keys_pb.GetKeyUsageHistoryRequest(key_id="key_00000000000000000000"), timeout=10
            )
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == UNAUTHENTICATED_MESSAGE


def _admin(sidecar: Sidecar, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIGW_ADMIN_TARGET": sidecar.target, "AIGW_ADMIN_TOKEN": TOKEN}
    env.pop("AIGW_ADMIN_TOKEN_FILE", None)
    return subprocess.run([sys.executable, "-m", "aigw_sidecar.admin.cli", *args],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_the_cli_shows_a_row_per_day_and_a_total(sidecar: Sidecar) -> None:
    key_id = _used_key(sidecar, "cli-history")
    shown = _admin(sidecar, "keys", "history", key_id, "--days", "3")
    assert shown.returncode == 0, shown.stderr
    header, *days, total = shown.stdout.splitlines()
    assert header.split() == ["DAY", "(UTC)", "REQUESTS", "TOKENS", "COST"]
    assert len(days) == 3
    assert days[0].split()[1:] == ["0", "0", "$0"]
    today = days[-1].split()
    assert date.fromisoformat(today[0]) >= datetime.now(UTC).date() - timedelta(days=1)
    assert today[1:] == ["1", "15", "$1.50"]
    assert total.split() == ["total", "1", "15", "$1.50"]
    as_json = _admin(sidecar, "-o", "json", "get-key-usage-history", key_id, "--days", "2")
    assert as_json.returncode == 0, as_json.stderr
    last = json.loads(as_json.stdout)["days"][-1]
    assert (last["cost_usd"], last["cost_micro_usd"], last["tokens"], last["requests"]) == (
        "1.5", "1500000", "15", "1"
    )


def test_the_cli_refuses_days_out_of_range_in_one_line(sidecar: Sidecar) -> None:
    key_id = _used_key(sidecar, "cli-bad-days")
    refused = _admin(sidecar, "keys", "history", key_id, "--days", "101")
    assert refused.returncode == 1
    assert "days" in refused.stderr and "[INVALID_ARGUMENT]" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_client_returns_typed_days(sidecar: Sidecar) -> None:
    key_id = _used_key(sidecar, "client-history")
    with AigwClient(sidecar.target, admin_token=TOKEN) as client:
        history = client.get_key_usage_history(key_id, days=2)
        assert len(client.get_key_usage_history(key_id)) == 30
        with pytest.raises(ClientNotFound):
            client.get_key_usage_history("key_00000000000000000000")
    first, today = history
    assert isinstance(today, aigw_client.DailyUsage)
    assert today.day - first.day == timedelta(days=1)
    assert (today.cost_usd, today.tokens, today.requests) == (Decimal("1.5"), 15, 1)
    assert (first.cost_usd, first.tokens, first.requests) == (Decimal(0), 0, 0)
