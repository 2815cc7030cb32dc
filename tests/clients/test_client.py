"""The typed Python client (clients/python): sync against a sidecar process, async in-process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aigw_client
import pytest
from aigw_client import (
    AigwClient,
    AlreadyExists,
    AsyncAigwClient,
    AuthenticationError,
    Budget,
    BudgetEventType,
    DenyReason,
    Estimate,
    FailedPrecondition,
    InvalidArgument,
    KeyStatus,
    Limits,
    ModelUsage,
    NotFound,
    RateLimit,
    Reservation,
    ResetPeriod,
    Unavailable,
)

from tests.conftest import Stubs
from tests.servers import REPO, SidecarProcess

TOKEN = "client-test-token-0123456789"
# 1 and 2 micro-USD per input and output token, half price for cached input.
PRICING = """\
unknown_model: zero
models:
  mock: {input: "1.00", output: "2.00", cached_input: "0.50"}
"""


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("client")
    (folder / "tokens").write_text(f"client-tests {TOKEN}\n")
    (folder / "pricing.yaml").write_text(PRICING)
    proc = SidecarProcess(valkey_url, "client", extra_args=[
        "--admin-token-file", str(folder / "tokens"),
        "--pricing-file", str(folder / "pricing.yaml"),
    ], log_path=folder / "sidecar.log").start()
    yield proc.target
    proc.stop()


@pytest.fixture
def client(sidecar: str) -> Iterator[AigwClient]:
    with AigwClient(sidecar, admin_token=TOKEN, timeout_s=5) as c:
        yield c


def test_create_with_every_limit_round_trips_decimal_and_datetime(client: AigwClient) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    created = client.create_key(
        "typed", project="web", environment="prod", labels={"team": "ml"},
        limits=Limits(cost_limit_usd=Decimal("12.345678"), token_limit=1000,
                      requests_per_minute=5, reset_period=ResetPeriod.DAILY),
        expires_at=expires,
    )
    key = created.key
    assert created.secret.startswith("sk-aigw-") and created.secret not in repr(created)
    assert key.limits == Limits(Decimal("12.345678"), 1000, 5, ResetPeriod.DAILY)
    assert key.expires_at == expires and key.status is KeyStatus.ENABLED
    assert client.get_key(key.key_id) == key


def test_authorize_and_record_usage_show_in_the_overview(client: AigwClient) -> None:
    created = client.create_key("usage", limits=Limits(cost_limit_usd=Decimal(5)))
    decision = client.authorize(created.secret)
    assert decision.allowed and decision.key_id == created.key.key_id
    result = client.record_usage(created.key.key_id, "req-1", prompt_tokens=10,
                                 completion_tokens=5, cost_usd=Decimal("0.25"))
    assert result.counted and result.period_cost_usd == Decimal("0.25")
    overview = client.get_key_overview(created.key.key_id)
    assert overview.cost.used_usd == Decimal("0.25")
    assert overview.cost.remaining_usd == Decimal("4.75")
    assert overview.tokens.limit is None and overview.tokens.used == 15
    assert client.authorize("sk-aigw-nonsense").deny_reason is DenyReason.KEY_MALFORMED


def test_update_changes_only_what_is_given_and_none_clears(client: AigwClient) -> None:
    key = client.create_key("upd", limits=Limits(token_limit=10, requests_per_minute=3)).key
    updated = client.update_key(key.key_id, token_limit=None, cost_limit_usd=Decimal("2"))
    assert updated.limits.token_limit is None
    assert updated.limits.requests_per_minute == 3
    assert updated.limits.cost_limit_usd == Decimal(2)
    assert updated.name == "upd"


def test_toggle_delete_list_and_audit(client: AigwClient) -> None:
    key = client.create_key("toggle", workspace="ws-client").key
    assert client.disable_key(key.key_id).status is KeyStatus.DISABLED
    assert client.enable_key(key.key_id).enabled
    page = client.list_keys(workspace="ws-client")
    assert [k.key_id for k in page.keys] == [key.key_id] and page.next_page_token == ""
    client.delete_key(key.key_id)
    audit = client.list_audit_entries(key_id=key.key_id)
    assert [e.action for e in audit.entries] == [
        "delete_key", "enable_key", "disable_key", "create_key"]
    assert {e.principal for e in audit.entries} == {"client-tests"}


def test_list_keys_with_usage_brings_each_keys_overview_in_order(client: AigwClient) -> None:
    used = client.create_key("Paying", workspace="ws-usage",
                             limits=Limits(cost_limit_usd=Decimal(5))).key
    client.record_usage(used.key_id, "req-1", prompt_tokens=10, completion_tokens=5,
                        cost_usd=Decimal("0.25"))
    idle = client.create_key("idle", workspace="ws-usage").key
    page = client.list_keys(workspace="ws-usage", with_usage=True)
    assert {k.key_id for k in page.keys} == {used.key_id, idle.key_id}
    assert tuple(ov.key for ov in page.overviews) == page.keys
    by_id = {ov.key.key_id: ov for ov in page.overviews}
    assert by_id[used.key_id].cost.used_usd == Decimal("0.25")
    assert by_id[used.key_id].cost.remaining_usd == Decimal("4.75")
    assert by_id[idle.key_id].tokens.used == 0
    assert client.list_keys(workspace="ws-usage").overviews == ()
    only = client.list_keys(workspace="ws-usage", name_contains="PAY", with_usage=True)
    assert [k.key_id for k in only.keys] == [used.key_id] and len(only.overviews) == 1


def test_errors_map_to_the_exception_tree(client: AigwClient, sidecar: str) -> None:
    client.create_key("taken")
    with pytest.raises(AlreadyExists):
        client.create_key("taken")
    with pytest.raises(NotFound):
        client.get_key("key_00000000000000000000")
    with pytest.raises(InvalidArgument) as err:
        client.get_key("nope")
    assert err.value.code == "INVALID_ARGUMENT" and "key_id" in err.value.message
    legacy = client.import_legacy_key("legacy-secret-for-client-1", "legacy")
    with pytest.raises(FailedPrecondition):
        client.update_key(legacy.key_id, token_limit=5)
    with AigwClient(sidecar, admin_token="wrong-token-0123456789") as wrong:
        with pytest.raises(AuthenticationError):
            wrong.list_keys()
        assert not wrong.authorize("").allowed  # the data plane needs no admin token
    with AigwClient("127.0.0.1:1", timeout_s=1) as nowhere, pytest.raises(Unavailable):
        nowhere.list_keys()


def test_naive_datetime_is_refused_before_any_call(client: AigwClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        client.create_key("naive", expires_at=datetime(2030, 1, 1))


def test_key_policies_and_alerts_round_trip_and_update_clears_them(client: AigwClient) -> None:
    policies = Limits(token_limit=1000, tokens_per_minute=500, max_parallel_requests=2,
                      allowed_models=("gpt-4o-mini", "claude-*"))
    key = client.create_key("policies", limits=policies, alert_thresholds_percent=[80, 100],
                            alert_expiry_days=7).key
    assert key.limits == policies
    assert key.alert_thresholds_percent == (80, 100) and key.alert_expiry_days == 7
    assert key.previous_secret_expires_at is None
    updated = client.update_key(key.key_id, allowed_models=None, max_parallel_requests=None,
                                tokens_per_minute=600, alert_thresholds_percent=[50],
                                alert_expiry_days=None)
    assert updated.limits.allowed_models == () and updated.limits.max_parallel_requests is None
    assert updated.limits.tokens_per_minute == 600 and updated.limits.token_limit == 1000
    assert updated.alert_thresholds_percent == (50,) and updated.alert_expiry_days is None


def test_an_estimate_is_reserved_and_a_priced_report_settles_it(client: AigwClient) -> None:
    created = client.create_key("estimate", limits=Limits(token_limit=1000,
                                                          cost_limit_usd=Decimal(1)))
    key_id = created.key.key_id
    decision = client.authorize(created.secret, request_id="est-1", estimate=Estimate(
        model="mock", prompt_tokens=100, max_output_tokens=50))
    assert decision.allowed and decision.request_id == "est-1"
    # 100 input tokens at 1 micro-USD + 50 output tokens at 2.
    assert decision.reservation == Reservation(tokens=150, cost_usd=Decimal("0.0002"))
    assert decision.tokens is not None and decision.tokens.remaining == 850
    held = client.get_key_overview(key_id)
    assert (held.reserved_tokens, held.reserved_cost_usd, held.open_reservations) == (
        150, Decimal("0.0002"), 1)
    result = client.record_usage(key_id, "est-1", prompt_tokens=100, completion_tokens=20,
                                 cached_prompt_tokens=40, model="mock")
    # No cost given: 60 uncached at 1 + 40 cached at 0.5 + 20 output at 2 micro-USD.
    assert result.cost_usd == Decimal("0.00012") and result.settled_reservation
    overview = client.get_key_overview(key_id)
    assert (overview.reserved_tokens, overview.open_reservations) == (0, 0)
    assert overview.reserved_cost_usd == Decimal(0)
    assert overview.per_model == (ModelUsage("mock", 1, 120, Decimal("0.00012")),)
    assert overview.unpriced_requests == 0 and overview.cost.used_usd == Decimal("0.00012")


def test_a_parallel_slot_is_held_until_release_reservation(client: AigwClient) -> None:
    created = client.create_key("parallel", limits=Limits(max_parallel_requests=1))
    key_id = created.key.key_id
    first = client.authorize(created.secret)
    assert first.allowed and first.request_id  # the sidecar named the slot
    assert first.parallel_requests == RateLimit(limit=1, remaining=0, reset_after=None)
    assert client.get_key_overview(key_id).parallel_requests.used == 1
    second = client.authorize(created.secret)
    assert second.deny_reason is DenyReason.PARALLEL_REQUESTS
    assert second.retry_after is not None
    assert client.release_reservation(key_id, first.request_id)
    assert not client.release_reservation(key_id, first.request_id)  # nothing open any more
    assert client.authorize(created.secret).allowed


def test_tokens_per_minute_and_allowed_models_deny_with_their_reasons(
    client: AigwClient,
) -> None:
    created = client.create_key("tpm", limits=Limits(tokens_per_minute=100,
                                                     allowed_models=("mock",)))
    estimate = Estimate(model="mock", prompt_tokens=50, max_output_tokens=30)
    first = client.authorize(created.secret, request_id="t-1", estimate=estimate)
    assert first.allowed
    assert first.tokens_per_minute is not None and first.tokens_per_minute.limit == 100
    assert first.tokens_per_minute.remaining == 20
    refused = client.authorize(created.secret, request_id="t-2", estimate=estimate)
    assert refused.deny_reason is DenyReason.TOKENS_PER_MINUTE
    other = client.authorize(created.secret, model="gpt-4o")
    assert other.deny_reason is DenyReason.MODEL_NOT_ALLOWED and "gpt-4o" in other.message


def test_rotation_returns_the_new_secret_once_and_the_old_one_works_in_its_grace(
    client: AigwClient,
) -> None:
    created = client.create_key("rotate")
    key_id = created.key.key_id
    rotated = client.rotate_key_secret(key_id, timedelta(hours=1))
    assert rotated.secret != created.secret and rotated.secret not in repr(rotated)
    assert rotated.key.key_id == key_id and rotated.key.previous_secret_expires_at is not None
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    assert abs(rotated.key.previous_secret_expires_at - in_an_hour) < timedelta(minutes=1)
    assert client.authorize(created.secret).allowed and client.authorize(rotated.secret).allowed
    again = client.rotate_key_secret(key_id)  # no grace: the rotated-out secrets stop now
    assert again.key.previous_secret_expires_at is None
    assert client.authorize(rotated.secret).deny_reason is DenyReason.KEY_UNKNOWN
    assert client.authorize(again.secret).allowed
    with pytest.raises(ValueError, match="whole seconds"):
        client.rotate_key_secret(key_id, timedelta(milliseconds=1500))


def test_a_crossed_cost_threshold_is_listed_as_an_event_in_usd(client: AigwClient) -> None:
    created = client.create_key("alerts", limits=Limits(cost_limit_usd=Decimal(1)),
                                alert_thresholds_percent=[50])
    key_id = created.key.key_id
    client.record_usage(key_id, "a-1", prompt_tokens=1, cost_usd=Decimal("0.6"))
    page = client.list_events(key_id=key_id, after="0")
    [event] = page.events
    assert event.type is BudgetEventType.BUDGET_THRESHOLD and event.budget is Budget.COST
    assert (event.threshold_percent, event.used, event.limit) == (50, Decimal("0.6"), Decimal(1))
    assert event.key_id == key_id and event.dedupe_key and event.period_start is not None
    assert event.expires_at is None and event.expiry_days is None
    assert client.list_events(key_id=key_id, after=page.next_cursor).events == ()


async def test_async_client_covers_the_same_calls(grpc_stubs: Stubs) -> None:
    async with AsyncAigwClient(grpc_stubs.target, timeout_s=5) as client:
        created = await client.create_key("async", limits=Limits(token_limit=100))
        key_id = created.key.key_id
        assert (await client.authorize(created.secret)).allowed
        assert (await client.record_usage(key_id, "r1", prompt_tokens=7)).counted
        assert (await client.get_key_overview(key_id)).tokens.used == 7
        assert (await client.update_key(key_id, name="async-2")).name == "async-2"
        assert (await client.disable_key(key_id)).status is KeyStatus.DISABLED
        assert (await client.enable_key(key_id)).enabled
        assert [k.key_id for k in (await client.list_keys()).keys] == [key_id]
        page = await client.list_keys(with_usage=True)
        assert [ov.tokens.used for ov in page.overviews] == [7]
        audit = await client.list_audit_entries(key_id=key_id)
        assert audit.entries[0].action == "enable_key"
        assert audit.entries[0].principal == "anonymous"  # no admin token configured
        await client.delete_key(key_id)
        with pytest.raises(NotFound):
            await client.get_key(key_id)


async def test_async_client_covers_the_newer_calls(grpc_stubs: Stubs) -> None:
    async with AsyncAigwClient(grpc_stubs.target, timeout_s=5) as client:
        created = await client.create_key(
            "async-new", limits=Limits(token_limit=100, max_parallel_requests=1),
            alert_thresholds_percent=[10])
        key_id = created.key.key_id
        decision = await client.authorize(created.secret, request_id="a-1", model="mock",
                                          estimate=Estimate(prompt_tokens=5))
        assert decision.reservation == Reservation(tokens=5, cost_usd=Decimal(0))
        assert await client.release_reservation(key_id, "a-1")
        await client.record_usage(key_id, "a-2", prompt_tokens=20, model="mock")
        assert (await client.get_key_overview(key_id)).per_model[0].tokens == 20
        events = await client.list_events(key_id=key_id, after="0")
        assert [e.budget for e in events.events] == [Budget.TOKENS]
        rotated = await client.rotate_key_secret(key_id)
        assert (await client.authorize(rotated.secret)).allowed


def test_the_async_client_is_generated_from_the_sync_one() -> None:
    generator = REPO / "clients" / "python" / "gen_aio.py"
    result = subprocess.run([sys.executable, str(generator), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_vendored_stubs_are_the_servers_generated_modules() -> None:
    vendored = Path(aigw_client.__file__).parent / "_api" / "v1"
    for name in ("keys_pb2.py", "keys_pb2.pyi", "admission_pb2.py", "admission_pb2.pyi"):
        server = REPO / "aigw_sidecar" / "api" / "v1" / name
        assert (vendored / name).read_bytes() == server.read_bytes(), f"run make proto ({name})"


def test_the_price_table_in_force_is_read_with_the_pricing_file_first(
    client: AigwClient,
) -> None:
    page = client.list_model_prices(contains="mock")
    assert [p.model for p in page.prices] == ["mock"]
    mock = page.prices[0]
    assert (mock.input_usd, mock.output_usd, mock.cached_input_usd) == (
        Decimal("1"), Decimal("2"), Decimal("0.5")
    )
    assert "over" in page.table  # the file over the built-in table
    builtin = client.get_model_price("anthropic/claude-sonnet-4-5-20250929")
    assert builtin is not None and builtin.model.startswith("claude-sonnet-4-5")
    assert client.get_model_price("no-such-model") is None
    first = client.list_model_prices(page_size=2)
    second = client.list_model_prices(page_size=2, page_token=first.next_page_token)
    assert len(first.prices) == 2 and first.prices[-1].model < second.prices[0].model
