"""Key policies through the transports: gRPC (Authorize, RotateKeySecret, overview,
audit), Envoy ext_authz (403 for a model, 429 for tokens per minute and parallel
requests), the HTTP mapping, and exact caps across two sidecar processes."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest

from aigw_sidecar.admission.decision import Decision, DenyReason, LimitState
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as pb
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.server.status import http_denial, rate_limit_headers, token_limit_shown
from tests.conftest import Stubs
from tests.server.test_ext_authz_servicer import check_stub
from tests.servers import SidecarProcess


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
    decision = Decision(allowed=reason is None, deny_reason=reason, tokens=budget,
                        tokens_per_minute=tpm)
    assert token_limit_shown(decision) == shown
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
    first, second = two_sidecars
    async with (
        grpc.aio.insecure_channel(first.target) as one,
        grpc.aio.insecure_channel(second.target) as two,
    ):
        created = await keys_pb2_grpc.KeyManagementStub(one).CreateKey(
            kpb.CreateKeyRequest(name="parallel", limits=kpb.Limits(max_parallel_requests=5)),
            timeout=10,
        )
        stubs = [admission_pb2_grpc.AdmissionStub(one), admission_pb2_grpc.AdmissionStub(two)]
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
    first, second = two_sidecars
    async with (
        grpc.aio.insecure_channel(first.target) as one,
        grpc.aio.insecure_channel(second.target) as two,
    ):
        created = await keys_pb2_grpc.KeyManagementStub(one).CreateKey(
            kpb.CreateKeyRequest(name="tpm", limits=kpb.Limits(tokens_per_minute=1000)),
            timeout=10,
        )
        stubs = [admission_pb2_grpc.AdmissionStub(one), admission_pb2_grpc.AdmissionStub(two)]
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
