"""The typed Python client (clients/python): sync against a sidecar process, async in-process."""

from __future__ import annotations

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
    DenyReason,
    FailedPrecondition,
    InvalidArgument,
    KeyStatus,
    Limits,
    NotFound,
    ResetPeriod,
    Unavailable,
)

from tests.conftest import Stubs
from tests.servers import REPO, SidecarProcess

TOKEN = "client-test-token-0123456789"


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("client")
    (folder / "tokens").write_text(f"client-tests {TOKEN}\n")
    proc = SidecarProcess(valkey_url, "client", extra_args=[
        "--admin-token-file", str(folder / "tokens")], log_path=folder / "sidecar.log").start()
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
        audit = await client.list_audit_entries(key_id=key_id)
        assert audit.entries[0].action == "enable_key"
        assert audit.entries[0].principal == "anonymous"  # no admin token configured
        await client.delete_key(key_id)
        with pytest.raises(NotFound):
            await client.get_key(key_id)


def test_vendored_stubs_are_the_servers_generated_modules() -> None:
    vendored = Path(aigw_client.__file__).parent / "_api" / "v1"
    for name in ("keys_pb2.py", "keys_pb2.pyi", "admission_pb2.py", "admission_pb2.pyi"):
        server = REPO / "aigw_sidecar" / "api" / "v1" / name
        assert (vendored / name).read_bytes() == server.read_bytes(), f"run make proto ({name})"
