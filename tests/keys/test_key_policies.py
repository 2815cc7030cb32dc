"""Key policies: tokens per minute, parallel-request slots, model allow-lists and
secret rotation with a grace period.

First against a real store (store-level, both server kinds, the store clock
pinned); then through the transports: gRPC (Authorize, RotateKeySecret, overview,
audit), Envoy ext_authz (403 for a model, 429 for tokens per minute and parallel
requests), the HTTP mapping, and exact caps across two sidecar processes."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import Decision, DenyReason, Estimate, LimitState, UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as pb
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.errors import FailedPrecondition, InvalidArgument, NotFound
from aigw_sidecar.keys.model import KeySpec, KeyUpdate, Limits, model_allowed
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.server.status import http_denial, rate_limit_headers, shown_in_family
from aigw_sidecar.store.redis_store import DEFAULT_LEASE_MS
from tests.conftest import Clock, Stubs
from tests.server.test_ext_authz_servicer import check_stub
from tests.servers import SidecarProcess, replicas
from tests.snapshots import snapshot

T0_MS = 1_900_000_000_000  # a fixed store time, so every wait is exact


def _at(clock: Clock, ms: int) -> None:
    clock.now_us = ms * 1000


async def _key(keys: KeyService, clock: Clock, **limits: object) -> tuple[str, str]:
    _at(clock, T0_MS)
    key, secret = await keys.create(KeySpec(name="p", limits=Limits(**limits)))  # type: ignore[arg-type]
    return key.key_id, secret


def _usage(key_id: str, request_id: str, tokens: int) -> UsageReport:
    return UsageReport(key_id, request_id, tokens, 0, 0)


def _est(tokens: int, model: str = "") -> Estimate:
    return Estimate(model=model, prompt_tokens=tokens)


def _denied(decision: Decision, reason: DenyReason) -> bool:
    return not decision.allowed and decision.deny_reason is reason


# --- tokens per minute ----------------------------------------------------------


async def test_reported_tokens_fill_the_minute_and_leave_it_exactly_60_s_later(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, tokens_per_minute=100)
    assert (await admission.authorize(secret)).allowed
    await admission.record_usage(_usage(key_id, "r1", 100))
    _at(clock, T0_MS + 59_999)
    decision = await admission.authorize(secret)
    assert _denied(decision, DenyReason.TOKENS_PER_MINUTE)
    assert decision.retry_after_ms == 1
    assert decision.tokens_per_minute is not None
    assert (decision.tokens_per_minute.limit, decision.tokens_per_minute.remaining) == (100, 0)
    _at(clock, T0_MS + 60_000)
    decision = await admission.authorize(secret)
    assert decision.allowed
    assert decision.tokens_per_minute is not None
    assert decision.tokens_per_minute.remaining == 100


async def test_retry_after_is_when_enough_tokens_have_left_the_window(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, tokens_per_minute=100)
    await admission.record_usage(_usage(key_id, "r1", 60))
    _at(clock, T0_MS + 10_000)
    await admission.record_usage(_usage(key_id, "r2", 40))
    _at(clock, T0_MS + 20_000)
    # 50 tokens fit once the 60 reported at T0 leave; the 40 may stay.
    decision = await admission.authorize(secret, "r3", _est(50))
    assert _denied(decision, DenyReason.TOKENS_PER_MINUTE)
    assert decision.retry_after_ms == 40_000
    assert "Retry in 40 s" in decision.message


async def test_an_estimate_in_flight_counts_until_the_actual_usage_replaces_it(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, tokens_per_minute=100)
    first = await admission.authorize(secret, "r1", _est(80))
    assert first.allowed and first.reservation is not None and first.request_id == "r1"
    assert first.tokens_per_minute is not None and first.tokens_per_minute.remaining == 20
    assert _denied(await admission.authorize(secret, "r2", _est(30)), DenyReason.TOKENS_PER_MINUTE)
    settled = await admission.record_usage(_usage(key_id, "r1", 10))
    assert settled.settled_reservation
    second = await admission.authorize(secret, "r2", _est(30))
    assert second.allowed
    assert second.tokens_per_minute is not None and second.tokens_per_minute.remaining == 60


async def test_an_estimate_larger_than_the_whole_limit_is_refused_with_no_retry_after(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, tokens_per_minute=100)
    decision = await admission.authorize(secret, "r1", _est(101))
    assert _denied(decision, DenyReason.TOKENS_PER_MINUTE)
    assert decision.retry_after_ms is None
    assert "estimate alone exceeds" in decision.message


async def test_the_overview_shows_tokens_of_the_last_minute_with_estimates_in_flight(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, tokens_per_minute=1000, max_parallel_requests=3)
    await admission.record_usage(_usage(key_id, "r1", 70))
    await admission.authorize(secret, "r2", _est(30))
    overview = await keys.overview(key_id)
    assert (overview.used["tokens_per_minute"], overview.used["max_parallel_requests"]) == (100, 1)
    _at(clock, T0_MS + 60_000)
    assert (await keys.overview(key_id)).used["tokens_per_minute"] == 30


# --- parallel requests ----------------------------------------------------------


async def test_parallel_slots_admit_the_cap_and_free_on_release_or_usage(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, max_parallel_requests=2)
    first, second = await admission.authorize(secret), await admission.authorize(secret, "mine")
    assert first.allowed and first.request_id.startswith("req_")
    assert second.allowed and second.request_id == "mine"
    assert second.parallel_requests is not None and second.parallel_requests.remaining == 0
    third = await admission.authorize(secret)
    assert _denied(third, DenyReason.PARALLEL_REQUESTS)
    assert third.retry_after_ms == 1000 and third.request_id == ""
    assert await admission.release_reservation(key_id, first.request_id)
    assert not await admission.release_reservation(key_id, first.request_id)
    assert (await admission.authorize(secret)).allowed
    assert _denied(await admission.authorize(secret), DenyReason.PARALLEL_REQUESTS)
    await admission.record_usage(_usage(key_id, "mine", 5))
    assert (await admission.authorize(secret)).allowed


async def test_a_slot_that_is_never_freed_expires_with_its_lease(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, max_parallel_requests=1)
    assert (await admission.authorize(secret)).allowed
    _at(clock, T0_MS + DEFAULT_LEASE_MS - 1)
    late = await admission.authorize(secret)
    assert _denied(late, DenyReason.PARALLEL_REQUESTS) and late.retry_after_ms == 1
    _at(clock, T0_MS + DEFAULT_LEASE_MS)
    assert (await admission.authorize(secret)).allowed


async def test_the_same_request_id_asking_again_keeps_its_one_slot(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, max_parallel_requests=1)
    assert (await admission.authorize(secret, "r1")).allowed
    assert (await admission.authorize(secret, "r1")).allowed
    assert _denied(await admission.authorize(secret, "r2"), DenyReason.PARALLEL_REQUESTS)


async def test_a_key_without_policies_holds_nothing_under_a_made_up_request_id(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock)
    decision = await admission.authorize(secret)
    assert decision.allowed and decision.request_id == ""
    assert decision.tokens_per_minute is None and decision.parallel_requests is None


# --- model allow-list -------------------------------------------------------------

PATTERNS = ("gpt-4o", "claude-*", "*-mini", "llama-*-instruct", "a.b%d*")


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("gpt-4o", True),
        ("gpt-4o-2024-08-06", False),  # exact names are exact
        ("GPT-4o", False),  # case-sensitive
        ("claude-3-opus", True),
        ("claude-", True),  # '*' also matches nothing
        ("claude", False),
        ("o4-mini", True),
        ("llama-3.1-70b-instruct", True),
        ("llama-instruct", False),
        ("a.b%d", True),  # '.' and '%' are plain characters, not Lua pattern items
        ("axb%d", False),
        ("a.b5", False),
        ("", False),  # a key with a list refuses a request that names no model
    ],
)
async def test_the_allow_list_admits_exact_names_and_star_patterns_only(
    keys: KeyService, admission: AdmissionService, clock: Clock, model: str, allowed: bool
) -> None:
    _key_id, secret = await _key(keys, clock, allowed_models=PATTERNS)
    decision = await admission.authorize(secret, model=model)
    assert decision.allowed is allowed
    assert model_allowed(model, PATTERNS) is allowed  # the documented rule agrees
    if not allowed:
        assert decision.deny_reason is DenyReason.MODEL_NOT_ALLOWED


async def test_the_model_of_the_estimate_is_checked_when_none_is_given(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, allowed_models=("gpt-4o-mini",))
    assert (await admission.authorize(secret, "r1", _est(5, "gpt-4o-mini"))).allowed
    denied = await admission.authorize(secret, "r2", _est(5, "gpt-4o"))
    assert _denied(denied, DenyReason.MODEL_NOT_ALLOWED)
    assert denied.message == "The model 'gpt-4o' is not allowed for this API key."


async def test_the_denial_names_a_long_model_truncated_and_names_none_when_absent(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, allowed_models=("gpt-4o",))
    long = await admission.authorize(secret, model="m" * 128)
    assert f"'{'m' * 64}…'" in long.message and "m" * 65 not in long.message
    none = await admission.authorize(secret)
    assert "names none" in none.message


async def test_a_key_without_a_list_may_use_any_model(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, token_limit=10)
    assert (await admission.authorize(secret, model="anything-at-all")).allowed


# --- a rejected request changes nothing --------------------------------------------


async def test_tpm_parallel_and_model_denials_leave_every_counter_untouched(
    keys: KeyService,
    admission: AdmissionService,
    clock: Clock,
    redis_client: Redis,
    key_prefix: str,
) -> None:
    key_id, secret = await _key(
        keys, clock, tokens_per_minute=100, max_parallel_requests=1,
        allowed_models=("gpt-4o",), token_limit=10_000,
    )
    assert (await admission.authorize(secret, "r1", _est(90, "gpt-4o"))).allowed
    await admission.record_usage(_usage(key_id, "r0", 5))
    _at(clock, T0_MS + 1_000)
    before = await snapshot(redis_client, key_prefix)
    assert _denied(await admission.authorize(secret, "r2", _est(5, "gpt-3.5")),
                   DenyReason.MODEL_NOT_ALLOWED)
    assert _denied(await admission.authorize(secret, "r2", _est(20, "gpt-4o")),
                   DenyReason.TOKENS_PER_MINUTE)
    assert _denied(await admission.authorize(secret, "r2", _est(1, "gpt-4o")),
                   DenyReason.PARALLEL_REQUESTS)
    assert await snapshot(redis_client, key_prefix) == before


# --- validation and legacy keys -------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(tokens_per_minute=0), "limits.tokens_per_minute"),
        (Limits(tokens_per_minute=-5), "limits.tokens_per_minute"),
        (Limits(max_parallel_requests=0), "limits.max_parallel_requests"),
        (Limits(max_parallel_requests=10**6), "limits.max_parallel_requests"),
        (Limits(allowed_models=("gpt 4o",)), "limits.allowed_models[0]"),
        (Limits(allowed_models=("ok", "gpt-?")), "limits.allowed_models[1]"),
        (Limits(allowed_models=("[ab]",)), "limits.allowed_models[0]"),
        (Limits(allowed_models=("",)), "limits.allowed_models[0]"),
        (Limits(allowed_models=("m" * 129,)), "limits.allowed_models[0]"),
        (Limits(allowed_models=tuple(f"m{i}" for i in range(65))), "limits.allowed_models"),
    ],
)
async def test_bad_policies_are_refused_naming_the_field_on_create_and_update(
    keys: KeyService, clock: Clock, limits: Limits, field: str
) -> None:
    with pytest.raises(InvalidArgument) as created:
        await keys.create(KeySpec(name="bad", limits=limits))
    assert created.value.field == field
    key_id, _secret = await _key(keys, clock)
    with pytest.raises(InvalidArgument) as updated:
        await keys.update(key_id, KeyUpdate(fields=KeyUpdate.LIMIT_FIELDS, limits=limits))
    assert updated.value.field == field


async def test_a_secret_in_the_allow_list_is_refused_and_never_echoed(keys: KeyService) -> None:
    secret = "sk-aigw-" + "a" * 40
    with pytest.raises(InvalidArgument) as refused:
        await keys.create(KeySpec(name="bad", limits=Limits(allowed_models=(secret,))))
    assert secret not in str(refused.value)


async def test_policies_are_stored_cleared_and_duplicates_dropped(
    keys: KeyService, clock: Clock
) -> None:
    key_id, _secret = await _key(
        keys, clock, tokens_per_minute=5000, max_parallel_requests=4,
        allowed_models=("gpt-4o", "gpt-4o", "o3-*"),
    )
    key = await keys.get(key_id)
    assert key.limits.tokens_per_minute == 5000
    assert key.limits.max_parallel_requests == 4
    assert key.limits.allowed_models == ("gpt-4o", "o3-*")
    cleared = await keys.update(key_id, KeyUpdate(
        fields=frozenset({"tokens_per_minute", "max_parallel_requests", "allowed_models"})
    ))
    assert cleared.limits == Limits()


@pytest.mark.parametrize(
    "limits",
    [Limits(tokens_per_minute=1), Limits(max_parallel_requests=1),
     Limits(allowed_models=("gpt-4o",))],
    ids=["tpm", "parallel", "models"],
)
async def test_legacy_keys_refuse_every_new_policy(keys: KeyService, limits: Limits) -> None:
    with pytest.raises(FailedPrecondition):
        await keys.import_legacy("legacy-secret-0001", KeySpec(name="l1", limits=limits))
    legacy = await keys.import_legacy("legacy-secret-0002", KeySpec(name="l2"))
    with pytest.raises(FailedPrecondition):
        await keys.update(legacy.key_id, KeyUpdate(fields=KeyUpdate.LIMIT_FIELDS, limits=limits))


# --- rotation -------------------------------------------------------------------


async def test_the_old_secret_works_until_the_grace_period_ends_then_stops(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, old = await _key(keys, clock, requests_per_minute=1000)
    assert (await admission.authorize(old)).allowed
    rotated, new = await keys.rotate_secret(key_id, grace_period_s=60)
    assert rotated.key_id == key_id and new != old and new.endswith(rotated.masked_secret[-4:])
    assert rotated.limits.requests_per_minute == 1000
    assert rotated.previous_secret_expires_at_ms == T0_MS + 60_000
    _at(clock, T0_MS + 59_999)
    assert (await admission.authorize(old)).allowed
    assert (await admission.authorize(new)).allowed
    _at(clock, T0_MS + 60_000)
    assert _denied(await admission.authorize(old), DenyReason.KEY_UNKNOWN)
    assert (await admission.authorize(new)).allowed
    after = await keys.get(key_id)
    assert after.previous_secret_expires_at_ms is None
    assert (await keys.overview(key_id)).lifetime_requests == 4  # usage kept


async def test_rotation_without_grace_stops_the_old_secret_at_once(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, old = await _key(keys, clock)
    _rotated, new = await keys.rotate_secret(key_id)
    assert _denied(await admission.authorize(old), DenyReason.KEY_UNKNOWN)
    assert (await admission.authorize(new)).allowed


async def test_rotating_again_during_a_grace_period_ends_the_oldest_secret(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, first = await _key(keys, clock)
    _key1, second = await keys.rotate_secret(key_id, grace_period_s=3600)
    _key2, third = await keys.rotate_secret(key_id, grace_period_s=3600)
    assert _denied(await admission.authorize(first), DenyReason.KEY_UNKNOWN)
    assert (await admission.authorize(second)).allowed
    assert (await admission.authorize(third)).allowed


@pytest.mark.parametrize("grace", [-1, 30 * 24 * 3600 + 1])
async def test_a_bad_grace_period_is_refused_naming_the_field(
    keys: KeyService, clock: Clock, grace: int
) -> None:
    key_id, _secret = await _key(keys, clock)
    with pytest.raises(InvalidArgument) as refused:
        await keys.rotate_secret(key_id, grace)
    assert refused.value.field == "grace_period_s"


async def test_legacy_and_unknown_keys_cannot_be_rotated(keys: KeyService) -> None:
    legacy = await keys.import_legacy("legacy-secret-0003", KeySpec(name="l3"))
    with pytest.raises(FailedPrecondition, match="carries no key id"):
        await keys.rotate_secret(legacy.key_id, 60)
    with pytest.raises(NotFound):
        await keys.rotate_secret("key_" + "0" * 20)


async def test_a_star_allow_list_still_refuses_a_request_that_names_no_model(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    _key_id, secret = await _key(keys, clock, allowed_models=("*",))
    assert (await admission.authorize(secret, model="any-model")).allowed
    refused = await admission.authorize(secret, model="")
    assert refused.deny_reason is DenyReason.MODEL_NOT_ALLOWED
    assert model_allowed("", ("*",)) is False


# --- Through the transports: gRPC, Envoy ext_authz, the HTTP mapping, two processes.

async def _create(stubs: Stubs, name: str, **limits: object) -> tuple[str, str]:
    reply = await stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name=name, limits=kpb.Limits(**limits))  # type: ignore[arg-type]
    )
    return reply.key.key_id, reply.secret


def _chat_check(secret: str, body: dict[str, object] | None = None) -> pb.CheckRequest:
    req = pb.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path = "POST", "/v1/chat/completions"
    http.headers.update({"authorization": f"Bearer {secret}", "x-request-id": uuid.uuid4().hex})
    if body is not None:
        http.body = json.dumps(body)
    return req


def _body(model: str, max_tokens: int = 10) -> dict[str, object]:
    return {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}


def _denied_headers(response: pb.CheckResponse) -> dict[str, str]:
    return {h.header.key: h.header.value for h in response.denied_response.headers}


# --- gRPC ---------------------------------------------------------------------


async def test_authorize_checks_the_model_field_and_returns_the_slot_request_id(
    grpc_stubs: Stubs,
) -> None:
    _key_id, secret = await _create(
        grpc_stubs, "grpc-models", allowed_models=["gpt-4o*"], max_parallel_requests=2
    )
    allowed = await grpc_stubs.admission.Authorize(
        adm.AuthorizeRequest(secret=secret, model="gpt-4o-mini")
    )
    assert allowed.allowed and allowed.request_id.startswith("req_")
    assert (allowed.parallel_requests.limit, allowed.parallel_requests.remaining) == (2, 1)
    denied = await grpc_stubs.admission.Authorize(
        adm.AuthorizeRequest(secret=secret, model="o3")
    )
    assert denied.deny_reason == adm.DENY_REASON_MODEL_NOT_ALLOWED
    assert denied.message == "The model 'o3' is not allowed for this API key."
    assert denied.request_id == ""


async def test_policies_round_trip_through_create_update_get_and_overview(
    grpc_stubs: Stubs,
) -> None:
    key_id, secret = await _create(
        grpc_stubs, "grpc-roundtrip", tokens_per_minute=1000, max_parallel_requests=3
    )
    await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(
        secret=secret, request_id="r1", estimate=adm.Estimate(prompt_tokens=40)
    ))
    updated = await grpc_stubs.keys.UpdateKey(kpb.UpdateKeyRequest(
        key_id=key_id, limits=kpb.Limits(allowed_models=["a", "b-*"]),
        update_mask={"paths": ["limits.allowed_models", "limits.max_parallel_requests"]},
    ))
    assert list(updated.key.limits.allowed_models) == ["a", "b-*"]
    assert not updated.key.limits.HasField("max_parallel_requests")
    assert updated.key.limits.tokens_per_minute == 1000
    overview = (await grpc_stubs.keys.GetKeyOverview(
        kpb.GetKeyOverviewRequest(key_id=key_id)
    )).overview
    assert (overview.tokens_per_minute.limited, overview.tokens_per_minute.used) == (True, 40)
    # The cap is gone; the request admitted under it is still in flight.
    assert (overview.parallel_requests.limited, overview.parallel_requests.used) == (False, 1)


async def test_a_bad_policy_is_invalid_argument_naming_the_field(grpc_stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(grpc_stubs, "bad", tokens_per_minute=0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.tokens_per_minute" in (refused.value.details() or "")


async def test_rotation_over_grpc_shows_the_secret_once_and_is_audited(
    grpc_stubs: Stubs,
) -> None:
    key_id, old = await _create(grpc_stubs, "grpc-rotate")
    rotated = await grpc_stubs.keys.RotateKeySecret(
        kpb.RotateKeySecretRequest(key_id=key_id, grace_period_s=3600)
    )
    assert rotated.key.key_id == key_id and rotated.secret not in ("", old)
    assert rotated.key.HasField("previous_secret_expires_at")
    for secret in (old, rotated.secret):
        reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=secret))
        assert reply.allowed and reply.key_id == key_id
    got = await grpc_stubs.keys.GetKey(kpb.GetKeyRequest(key_id=key_id))
    assert rotated.secret not in str(got) and got.key.masked_secret.endswith(rotated.secret[-4:])
    trail = await grpc_stubs.keys.ListAuditEntries(kpb.ListAuditEntriesRequest(key_id=key_id))
    assert trail.entries[0].action == "rotate_key_secret"
    assert trail.entries[0].detail == "grace_period_s=3600"


async def test_rotating_a_legacy_key_is_failed_precondition(grpc_stubs: Stubs) -> None:
    legacy = await grpc_stubs.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret="legacy-rotate-0001", name="legacy-rotate")
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await grpc_stubs.keys.RotateKeySecret(
            kpb.RotateKeySecretRequest(key_id=legacy.key.key_id)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- Envoy ext_authz --------------------------------------------------------------


async def test_ext_authz_refuses_a_model_off_the_list_with_403_naming_it(
    grpc_stubs: Stubs,
) -> None:
    _key_id, secret = await _create(grpc_stubs, "envoy-models", allowed_models=["gpt-4o-mini"])
    check = check_stub(grpc_stubs.channel)
    assert (await check(_chat_check(secret, _body("gpt-4o-mini")))).status.code == 0
    denied = await check(_chat_check(secret, _body("gpt-4o")))
    assert denied.denied_response.status.code == 403
    error = json.loads(denied.denied_response.body)["error"]
    assert error["code"] == "model_not_allowed" and "'gpt-4o'" in error["message"]
    assert "retry-after" not in _denied_headers(denied)
    no_body = await check(_chat_check(secret))
    assert no_body.denied_response.status.code == 403


async def test_ext_authz_tokens_per_minute_is_429_with_retry_after_and_token_headers(
    grpc_stubs: Stubs,
) -> None:
    _key_id, secret = await _create(
        grpc_stubs, "envoy-tpm", tokens_per_minute=100, token_limit=10_000
    )
    check = check_stub(grpc_stubs.channel)
    admitted = await check(_chat_check(secret, _body("m", max_tokens=80)))
    client = {h.header.key: h.header.value
              for h in admitted.ok_response.response_headers_to_add}
    # The tighter of the two token limits: tokens per minute.
    assert (client["x-ratelimit-limit-tokens"], client["x-ratelimit-remaining-tokens"]) == (
        "100", str(100 - int(admitted.dynamic_metadata["reserved_tokens"])))
    denied = await check(_chat_check(secret, _body("m", max_tokens=80)))
    assert denied.denied_response.status.code == 429
    headers = _denied_headers(denied)
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert json.loads(denied.denied_response.body)["error"]["code"] == "tokens_per_minute"


async def test_ext_authz_parallel_requests_is_429_with_retry_after(grpc_stubs: Stubs) -> None:
    _key_id, secret = await _create(grpc_stubs, "envoy-parallel", max_parallel_requests=1)
    check = check_stub(grpc_stubs.channel)
    assert (await check(_chat_check(secret))).status.code == 0
    denied = await check(_chat_check(secret))
    assert denied.denied_response.status.code == 429
    assert _denied_headers(denied)["retry-after"] == "1"
    assert json.loads(denied.denied_response.body)["error"]["code"] == "parallel_requests"


# --- the HTTP mapping (pure) ------------------------------------------------------

TPM = LimitState(limit=1000, remaining=300, reset_ms=20_000)
BUDGET = LimitState(limit=50_000, remaining=700, reset_ms=3_600_000)


@pytest.mark.parametrize(
    ("reason", "tpm", "budget", "shown"),
    [
        (None, TPM, BUDGET, TPM),  # tighter: fewer remaining
        (None, LimitState(1000, 900, 1), BUDGET, BUDGET),
        (DenyReason.TOKEN_LIMIT, TPM, BUDGET, BUDGET),  # the limit that refused
        (DenyReason.TOKENS_PER_MINUTE, LimitState(1000, 900, 1), BUDGET,
         LimitState(1000, 900, 1)),
        (None, None, BUDGET, BUDGET),
        (None, TPM, None, TPM),
    ],
)
def test_token_headers_show_the_refusing_or_else_the_tighter_token_limit(
    reason: DenyReason | None, tpm: LimitState | None, budget: LimitState | None,
    shown: LimitState,
) -> None:
    states = {"token_limit": budget, "tokens_per_minute": tpm}
    decision = Decision(allowed=reason is None, deny_reason=reason,
                        limits={k: v for k, v in states.items() if v is not None})
    assert shown_in_family(decision, "tokens") == shown
    headers = dict(rate_limit_headers(decision))
    assert headers["x-ratelimit-remaining-tokens"] == str(shown.remaining)


@pytest.mark.parametrize(
    ("reason", "status"),
    [(DenyReason.MODEL_NOT_ALLOWED, 403), (DenyReason.TOKENS_PER_MINUTE, 429),
     (DenyReason.PARALLEL_REQUESTS, 429)],
)
def test_new_deny_reasons_map_to_their_http_status(reason: DenyReason, status: int) -> None:
    denial = http_denial(Decision(allowed=False, deny_reason=reason, retry_after_ms=1500,
                                  model="sk-aigw-secret-looking"))
    assert denial.status == status
    headers = dict(denial.headers)
    assert ("retry-after" in headers) is (status == 429)
    assert "sk-aigw" not in denial.body


# --- two processes -----------------------------------------------------------------


async def test_max_parallel_5_admits_exactly_5_of_40_across_two_processes_until_released(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        created = await one.keys.CreateKey(
            kpb.CreateKeyRequest(name="parallel", limits=kpb.Limits(max_parallel_requests=5)),
            timeout=10,
        )
        stubs = [one.admission, two.admission]
        request = adm.AuthorizeRequest(secret=created.secret)

        async def burst(n: int) -> list[adm.AuthorizeResponse]:
            return list(await asyncio.gather(
                *(stubs[i % 2].Authorize(request, timeout=30) for i in range(n))
            ))

        replies = await burst(40)
        admitted = [r for r in replies if r.allowed]
        assert len(admitted) == 5 and len({r.request_id for r in admitted}) == 5
        assert {r.deny_reason for r in replies if not r.allowed} == {
            adm.DENY_REASON_PARALLEL_REQUESTS
        }
        assert sum(r.allowed for r in await burst(20)) == 0
        released = await stubs[1].ReleaseReservation(adm.ReleaseReservationRequest(
            key_id=created.key.key_id, request_id=admitted[0].request_id), timeout=10)
        assert released.released
        assert sum(r.allowed for r in await burst(20)) == 1


async def test_tokens_per_minute_admits_exactly_what_fits_across_two_processes(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        created = await one.keys.CreateKey(
            kpb.CreateKeyRequest(name="tpm", limits=kpb.Limits(tokens_per_minute=1000)),
            timeout=10,
        )
        stubs = [one.admission, two.admission]
        replies = await asyncio.gather(*(
            stubs[i % 2].Authorize(adm.AuthorizeRequest(
                secret=created.secret, request_id=f"r{i}",
                estimate=adm.Estimate(prompt_tokens=100)), timeout=30)
            for i in range(40)
        ))
    assert sum(r.allowed for r in replies) == 10
    assert {r.deny_reason for r in replies if not r.allowed} == {
        adm.DENY_REASON_TOKENS_PER_MINUTE
    }


# --- aigw-admin ------------------------------------------------------------------


def test_keys_rotate_builds_the_request_and_prints_the_new_secret_once() -> None:
    from io import StringIO

    from aigw_sidecar.admin import render
    from aigw_sidecar.admin.cli import build_parser

    ns = build_parser({}).parse_args(
        ["keys", "rotate", "key_" + "a" * 20, "--grace-period-s", "60"]
    )
    request = ns.rpc.build_request(ns)
    assert (request.key_id, request.grace_period_s) == ("key_" + "a" * 20, 60)
    secret = "sk-aigw-" + "b" * 20 + "_" + "c" * 38
    reply = kpb.RotateKeySecretResponse(key=kpb.ApiKey(
        key_id="key_" + "a" * 20, name="k", masked_secret="sk-aigw-…cccc",
        limits=kpb.Limits(tokens_per_minute=5000, max_parallel_requests=4,
                          allowed_models=["gpt-4o", "o3-*"]),
    ), secret=secret)
    out, err = StringIO(), StringIO()
    render.human(reply, out, err)
    assert out.getvalue().count(secret) == 1 and "shown only this once" in err.getvalue()
    assert "5k tpm · 4 parallel · 2 models" in out.getvalue()
    assert "gpt-4o, o3-*" in out.getvalue()
