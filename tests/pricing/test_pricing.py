"""Pricing: the rounding rule, the pricing file, the unknown-model policy, reloads.

Pure tests of the integer arithmetic and the loader first; then RecordUsage
priced by the sidecar against the real stores, over gRPC, and in an
``aigw-sidecar serve`` process whose pricing file changes under it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from math import ceil
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import KeySpec, ModelUsage
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.pricing.loader import PricingFile, load_table, parse_table
from aigw_sidecar.pricing.table import ModelPrice, PriceTable, UnknownModelPolicy
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.servers import REPO, SidecarProcess
from tests.snapshots import snapshot

EXAMPLE = REPO / "clients" / "pricing" / "example-pricing.yaml"
MINI = ModelPrice(input=150_000, output=600_000, cached_input=75_000)  # 0.15 / 0.60 / 0.075


# --- the rounding rule ---------------------------------------------------------


def test_a_request_is_rounded_up_once_not_per_kind_of_token() -> None:
    # 0.15 + 0.60 micro-USD = 0.75: one micro-USD, not one per part.
    assert MINI.cost_micro_usd(1, 1, 0) == 1


def test_an_exact_cost_is_not_rounded() -> None:
    assert MINI.cost_micro_usd(1_000_000, 2_000_000, 0) == 150_000 + 1_200_000


def test_a_request_without_tokens_costs_nothing() -> None:
    assert MINI.cost_micro_usd(0, 0, 0) == 0


@given(
    price=st.integers(0, 10**9),
    input_tokens=st.integers(0, 10**12),
    output_tokens=st.integers(0, 10**12),
)
def test_costs_are_exactly_the_ceiling_of_the_rational_cost_even_for_huge_counts(
    price: int, input_tokens: int, output_tokens: int
) -> None:
    model = ModelPrice(input=price, output=3 * price + 1)
    exact = Fraction(input_tokens * price + output_tokens * (3 * price + 1), 1_000_000)
    assert model.cost_micro_usd(input_tokens, output_tokens, 0) == ceil(exact)


def test_cached_input_tokens_are_charged_the_cached_input_price() -> None:
    # 600k uncached at 0.15 + 400k cached at 0.075 + 0 output
    assert MINI.cost_micro_usd(1_000_000, 0, 400_000) == 90_000 + 30_000


def test_cached_input_without_a_cached_price_costs_the_input_price() -> None:
    plain = ModelPrice(input=150_000, output=600_000)
    assert plain.cost_micro_usd(1_000_000, 0, 400_000) == 150_000


# --- lookup and the unknown-model policy ---------------------------------------


def _table(**kwargs: Any) -> PriceTable:
    return parse_table({
        "models": {
            "gpt-4o-*": {"input": "2.50", "output": "10"},
            "gpt-4o-mini": {"input": "0.15", "output": "0.60"},
            "gpt-4o-m*": {"input": "9", "output": "9"},
            "claude-?-haiku": {"input": "0.25", "output": "1.25"},
        },
        **kwargs,
    })


def test_a_glob_pattern_prices_every_model_it_matches() -> None:
    assert _table().price_of("claude-3-haiku") == ModelPrice(250_000, 1_250_000)


def test_an_exact_name_wins_over_a_pattern_listed_before_it() -> None:
    assert _table().price_of("gpt-4o-mini") == ModelPrice(150_000, 600_000)


def test_the_first_matching_pattern_in_file_order_wins() -> None:
    assert _table().price_of("gpt-4o-mini-2024-07-18") == ModelPrice(2_500_000, 10_000_000)


def test_patterns_match_case_sensitively() -> None:
    assert _table().price_of("GPT-4o-2024") is None


def test_an_unknown_model_is_refused_by_default_naming_the_model_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        _table().quote("mystery", 10, 10)
    assert err.value.field == "model" and "mystery" in str(err.value)


def test_an_unknown_model_costs_nothing_under_the_zero_policy() -> None:
    quote = _table(unknown_model="zero").quote("mystery", 10**6, 10**6)
    assert (quote.cost_micro_usd, quote.known_model) == (0, False)


def test_an_unknown_model_is_charged_the_default_price_under_the_default_policy() -> None:
    table = _table(unknown_model="default", default={"input": "1", "output": "2"})
    quote = table.quote("mystery", 10**6, 10**6)
    assert (quote.cost_micro_usd, quote.known_model) == (3_000_000, False)


def test_a_known_model_is_quoted_as_known() -> None:
    assert _table().quote("gpt-4o-mini", 1, 0).known_model


# --- the pricing file ----------------------------------------------------------

SAMPLE = {
    "unknown_model": "default",
    "default": {"input": "1.00", "output": "2.00"},
    "models": {
        "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075"},
        "gpt-4o-*": {"input": "2.50", "output": "10.00"},
    },
}


def test_yaml_and_json_pricing_files_load_the_same_table(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(SAMPLE))
    (tmp_path / "p.json").write_text(json.dumps(SAMPLE))
    from_yaml, from_json = load_table(tmp_path / "p.yaml"), load_table(tmp_path / "p.json")
    assert from_yaml == from_json
    assert from_yaml.models["gpt-4o-mini"] == MINI
    assert from_yaml.patterns == (("gpt-4o-*", ModelPrice(2_500_000, 10_000_000)),)
    assert from_yaml.default == ModelPrice(1_000_000, 2_000_000)
    assert from_yaml.unknown_model is UnknownModelPolicy.DEFAULT


def test_unquoted_yaml_prices_are_read_as_the_decimals_written(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("models:\n  m: {input: 0.15, output: 10, cached_input: 0.075}\n")
    assert load_table(path).models["m"] == ModelPrice(150_000, 10_000_000, 75_000)


def test_an_empty_models_section_is_a_table_that_prices_nothing() -> None:
    assert parse_table({"models": None}) == PriceTable()


_OK = {"input": "1", "output": "1"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (["not", "a", "mapping"], "p.yaml"),
        ({"models": {}, "currency": "EUR"}, "p.yaml"),
        ({"unknown_model": "ask"}, "p.yaml.unknown_model"),
        ({"unknown_model": "default"}, "p.yaml.default"),
        ({"default": "cheap"}, "p.yaml.default"),
        ({"models": ["gpt-4o"]}, "p.yaml.models"),
        ({"models": {"m": "0.15"}}, "p.yaml.models['m']"),
        ({"models": {"m": {"input": "1"}}}, "p.yaml.models['m']"),
        ({"models": {"m": {"output": "1"}}}, "p.yaml.models['m']"),
        ({"models": {"m": {**_OK, "cached": "1"}}}, "p.yaml.models['m']"),
        ({"models": {"m": {**_OK, "input": "-1"}}}, "p.yaml.models['m'].input"),
        ({"models": {"m": {**_OK, "output": "abc"}}}, "p.yaml.models['m'].output"),
        ({"models": {"m": {**_OK, "output": None}}}, "p.yaml.models['m'].output"),
        ({"models": {"m": {**_OK, "input": "0.0000001"}}}, "p.yaml.models['m'].input"),
        ({"models": {"m": {**_OK, "cached_input": "NaN"}}}, "p.yaml.models['m'].cached_input"),
        ({"models": {"m": {**_OK, "input": "1e30"}}}, "p.yaml.models['m'].input"),
        ({"models": {"ok": _OK, "bad": {**_OK, "input": "x"}}}, "p.yaml.models['bad'].input"),
    ],
    ids=[
        "not-a-mapping", "unknown-section", "unknown-policy", "default-policy-without-default",
        "default-not-a-mapping", "models-not-a-mapping", "price-not-a-mapping",
        "output-missing", "input-missing", "unknown-price-field", "negative-price",
        "price-not-a-number", "price-null", "price-below-a-micro-usd", "price-nan",
        "price-too-large", "second-model-bad",
    ],
)
def test_a_malformed_pricing_file_is_refused_naming_the_bad_entry(
    tmp_path: Path, data: Any, field: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidArgument) as err:
        load_table(path)
    assert err.value.field == field


def test_the_shipped_example_pricing_file_loads_and_orders_its_patterns_right() -> None:
    table = load_table(EXAMPLE)
    assert table.price_of("gpt-4o-mini") == MINI
    assert table.price_of("gpt-4o-mini-2024-07-18") == MINI
    assert table.price_of("gpt-4o-2024-08-06") == table.price_of("gpt-4o")
    assert table.quote("some-new-model", 1_000_000, 0).known_model is False


# --- reloading a pricing file ----------------------------------------------------


def _write(path: Path, input_usd: str) -> None:
    path.write_text(f'models:\n  m: {{input: "{input_usd}", output: "0"}}\n')


def test_a_changed_pricing_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, "1")
    pricing = PricingFile(path)
    _write(path, "2.5")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert pricing.reload_if_changed()
    assert pricing.table.models["m"].input == 2_500_000


def test_an_unchanged_pricing_file_is_not_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, "1")
    assert not PricingFile(path).reload_if_changed()


def test_a_pricing_file_rewritten_within_one_timestamp_tick_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, "1")
    pricing = PricingFile(path)
    mtime_ns = path.stat().st_mtime_ns
    _write(path, "2.5")
    os.utime(path, ns=(mtime_ns, mtime_ns))  # the same timestamp, another size
    assert pricing.reload_if_changed()
    assert pricing.table.models["m"].input == 2_500_000


@pytest.mark.parametrize("broken", ["models: [unclosed", "models: {m: {input: x}}", ""])
def test_a_broken_pricing_file_keeps_the_previous_table(tmp_path: Path, broken: str) -> None:
    path = tmp_path / "p.yaml"
    _write(path, "1")
    pricing = PricingFile(path)
    path.write_text(broken)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not pricing.reload_if_changed()
    assert pricing.table.models["m"].input == 1_000_000


def test_a_removed_pricing_file_keeps_the_previous_table(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, "1")
    pricing = PricingFile(path)
    path.unlink()
    assert not pricing.reload_if_changed()
    assert pricing.table.models["m"].input == 1_000_000


# --- RecordUsage priced by the sidecar -------------------------------------------


def _service(store: RedisKeyStore, policy: str) -> AdmissionService:
    table = parse_table({**SAMPLE, "unknown_model": policy})
    return AdmissionService(store, lambda: table)


async def test_usage_without_a_cost_is_priced_from_model_and_token_counts(
    keys: KeyService, store: RedisKeyStore
) -> None:
    key, _ = await keys.create(KeySpec(name="p"))
    service = _service(store, "refuse")
    result = await service.record_usage(
        UsageReport(key.key_id, "r1", 1_000_000, 1_000_000, None, "gpt-4o-mini", 400_000)
    )
    assert result.cost_micro_usd == 90_000 + 30_000 + 600_000
    assert (await store.overview(key.key_id)).period_cost_micro_usd == 720_000


async def test_an_unknown_model_under_the_refuse_policy_is_refused_and_counts_nothing(
    keys: KeyService, store: RedisKeyStore, redis_client: Redis, key_prefix: str
) -> None:
    key, _ = await keys.create(KeySpec(name="p"))
    before = await snapshot(redis_client, key_prefix)
    with pytest.raises(InvalidArgument) as err:
        await _service(store, "refuse").record_usage(
            UsageReport(key.key_id, "r1", 10, 10, None, "mystery")
        )
    assert err.value.field == "model"
    assert await snapshot(redis_client, key_prefix) == before


@pytest.mark.parametrize(("policy", "cost"), [("zero", 0), ("default", 3)])
async def test_an_unknown_model_is_charged_by_the_policy_and_counted_as_unpriced(
    keys: KeyService, store: RedisKeyStore, policy: str, cost: int
) -> None:
    key, _ = await keys.create(KeySpec(name="p"))
    result = await _service(store, policy).record_usage(
        UsageReport(key.key_id, "r1", 1, 1, None, "mystery")
    )
    ov = await store.overview(key.key_id)
    assert (result.counted, result.cost_micro_usd, ov.unpriced_requests) == (True, cost, 1)
    assert ov.per_model == (ModelUsage("mystery", 1, 2, cost),)


async def test_without_a_pricing_file_a_model_reported_without_a_cost_is_unpriced(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore
) -> None:
    key, _ = await keys.create(KeySpec(name="p"))
    result = await admission.record_usage(UsageReport(key.key_id, "r1", 5, 5, None, "gpt-4o"))
    ov = await store.overview(key.key_id)
    assert (result.cost_micro_usd, ov.period_tokens, ov.unpriced_requests) == (0, 10, 1)


@pytest.fixture
async def priced_sidecar(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[Sidecar]:
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps({**SAMPLE, "unknown_model": "refuse"}))
    sidecar = await start(Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix,
        data_dir=tmp_path, shutdown_grace_s=1.0, pricing_file=str(path),
    ))
    yield sidecar
    await sidecar.stop()


async def test_record_usage_over_grpc_is_priced_by_the_sidecar(priced_sidecar: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{priced_sidecar.port}") as channel:
        created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            kpb.CreateKeyRequest(name="priced")
        )
        reply = await admission_pb2_grpc.AdmissionStub(channel).RecordUsage(adm.RecordUsageRequest(
            key_id=created.key.key_id, request_id="r1", model="gpt-4o-2024-08-06",
            prompt_tokens=1000, completion_tokens=100,
        ))
    assert (reply.counted, reply.cost_micro_usd, reply.period_cost_micro_usd) == (
        True, 2500 + 1000, 3500
    )


async def test_an_unknown_model_over_grpc_is_invalid_argument_naming_the_model(
    priced_sidecar: Sidecar,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{priced_sidecar.port}") as channel:
        created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            kpb.CreateKeyRequest(name="priced")
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admission_pb2_grpc.AdmissionStub(channel).RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id="r1", model="mystery", prompt_tokens=1,
            ))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("model:")


async def test_a_sidecar_refuses_to_start_with_a_broken_pricing_file(
    valkey_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text("models: {m: {input: 1}}\n")
    with pytest.raises(RuntimeError, match=r"pricing\.yaml"):
        await start(Settings(listen="127.0.0.1:0", redis_url=valkey_url, pricing_file=str(path)))


# --- reloading a running sidecar -------------------------------------------------


@pytest.fixture
def pricing_path(tmp_path: Path) -> Path:
    path = tmp_path / "pricing.yaml"
    _write(path, "1")  # 1 micro-USD per input token
    return path


def _serve(valkey_url: str, pricing_path: Path, reload_s: str) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        valkey_url, f"pr{uuid.uuid4().hex[:8]}",
        ["--pricing-file", str(pricing_path), "--pricing-reload-s", reload_s],
        log_path=pricing_path.with_suffix(".log"),
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def polling_sidecar(valkey_url: str, pricing_path: Path) -> Iterator[SidecarProcess]:
    yield from _serve(valkey_url, pricing_path, "0.1")


@pytest.fixture
def sighup_sidecar(valkey_url: str, pricing_path: Path) -> Iterator[SidecarProcess]:
    yield from _serve(valkey_url, pricing_path, "3600")


class _Meter:
    """Records 1000 input tokens of model m under fresh request ids: the price in force."""

    def __init__(self, channel: grpc.aio.Channel, key_id: str) -> None:
        self._stub = admission_pb2_grpc.AdmissionStub(channel)
        self._key_id = key_id
        self._n = 0

    async def cost(self) -> int:
        self._n += 1
        reply = await self._stub.RecordUsage(adm.RecordUsageRequest(
            key_id=self._key_id, request_id=f"m{self._n}", model="m", prompt_tokens=1000,
        ), timeout=10)
        return int(reply.cost_micro_usd)

    async def cost_becomes(self, expected: int) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if await self.cost() == expected:
                return True
            await asyncio.sleep(0.05)
        return False


async def _meter(channel: grpc.aio.Channel) -> _Meter:
    created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
        kpb.CreateKeyRequest(name="meter"), timeout=10
    )
    return _Meter(channel, created.key.key_id)


async def test_a_running_sidecar_prices_usage_by_the_changed_file_without_a_restart(
    polling_sidecar: SidecarProcess, pricing_path: Path
) -> None:
    async with grpc.aio.insecure_channel(polling_sidecar.target) as channel:
        meter = await _meter(channel)
        assert await meter.cost() == 1000
        _write(pricing_path, "2.5")
        assert await meter.cost_becomes(2500)


async def test_a_running_sidecar_keeps_the_old_table_when_the_file_breaks(
    polling_sidecar: SidecarProcess, pricing_path: Path
) -> None:
    log = pricing_path.with_suffix(".log")
    async with grpc.aio.insecure_channel(polling_sidecar.target) as channel:
        meter = await _meter(channel)
        pricing_path.write_text("models: [unclosed\n")
        deadline = time.monotonic() + 15
        while "rejected" not in log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "rejected" in log.read_text()
        assert await meter.cost() == 1000


async def test_sighup_reloads_the_pricing_file_at_once(
    sighup_sidecar: SidecarProcess, pricing_path: Path
) -> None:
    assert sighup_sidecar.process is not None
    async with grpc.aio.insecure_channel(sighup_sidecar.target) as channel:
        meter = await _meter(channel)
        _write(pricing_path, "3")
        sighup_sidecar.process.send_signal(signal.SIGHUP)
        assert await meter.cost_becomes(3000)
