"""Pure mapping of the Envoy path: secret lookup in headers, HTTP status, body and headers."""

from __future__ import annotations

import json

import pytest

from aigw_sidecar.admission.decision import Decision, DenyReason, LimitState
from aigw_sidecar.server.ext_authz import (
    DEFAULT_KEY_HEADERS,
    MAX_KEY_HEADER_BYTES,
    ExtAuthzOptions,
    allowed_response,
    denied_response,
    fail_open_response,
    find_secret,
)
from aigw_sidecar.server.status import (
    HTTP_STATUS_OF,
    http_denial,
    rate_limit_headers,
    reset_duration,
    store_unavailable_denial,
)
from aigw_sidecar.settings import parse_settings

SECRET = "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"
OTHER = "sk-aigw-zzzzzzzzzzzzzzzzzzzz_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"


def limited(reason: DenyReason, retry_after_ms: int | None = 1500) -> Decision:
    return Decision(
        allowed=False,
        deny_reason=reason,
        key_id="key_0123456789abcdefghjk",
        limits={
            "requests_per_minute": LimitState(limit=10, remaining=0, reset_ms=1500),
            "token_limit": LimitState(limit=1000, remaining=0, reset_ms=None),
        },
        retry_after_ms=retry_after_ms,
    )


# --- finding the secret ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {SECRET}"},
        {"authorization": f"bearer   {SECRET}"},
        {"x-api-key": SECRET},
        {"api-key": SECRET},
        {"authorization": f"Bearer {SECRET}", "x-api-key": SECRET},
    ],
)
def test_the_secret_is_found_in_any_configured_header(headers: dict[str, str]) -> None:
    assert find_secret(headers, DEFAULT_KEY_HEADERS) == SECRET


def test_no_key_header_means_an_empty_secret() -> None:
    assert find_secret({"content-type": "application/json"}, DEFAULT_KEY_HEADERS) == ""


def test_two_different_secrets_are_malformed() -> None:
    headers = {"authorization": f"Bearer {SECRET}", "api-key": OTHER}
    assert find_secret(headers, DEFAULT_KEY_HEADERS) is DenyReason.KEY_MALFORMED


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": f"{SECRET},{OTHER}"},  # Envoy joined two copies of the header
        {"x-api-key": f"{SECRET},{SECRET}"},
        {"authorization": f"Basic {SECRET}"},
        {"authorization": SECRET},
        {"authorization": "Bearer"},
        {"authorization": f"Bearer {SECRET} extra"},
    ],
)
def test_a_value_that_is_not_one_secret_is_malformed(headers: dict[str, str]) -> None:
    assert find_secret(headers, DEFAULT_KEY_HEADERS) is DenyReason.KEY_MALFORMED


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "a" * (MAX_KEY_HEADER_BYTES + 1)},
        {"authorization": "Bearer " + "a" * MAX_KEY_HEADER_BYTES},
        {"api-key": "é" * (MAX_KEY_HEADER_BYTES // 2 + 1)},  # over the cap in bytes only
        {"x-api-key": SECRET + "\x00"},
        {"authorization": f"Bearer {SECRET}\r\nx-evil: 1"},
        {"api-key": f"\x1b[31m{SECRET}"},
        {"x-api-key": f"{SECRET}\x7f"},
        {"authorization": f"Bearer\t{SECRET}"},
    ],
)
def test_an_oversized_or_control_character_value_is_malformed(headers: dict[str, str]) -> None:
    assert find_secret(headers, DEFAULT_KEY_HEADERS) is DenyReason.KEY_MALFORMED


def test_a_value_at_the_cap_is_still_read() -> None:
    legacy = "l" * MAX_KEY_HEADER_BYTES
    assert find_secret({"x-api-key": legacy}, DEFAULT_KEY_HEADERS) == legacy


def test_headers_outside_the_configured_list_are_ignored() -> None:
    assert find_secret({"x-api-key": SECRET}, ("api-key",)) == ""


def test_key_header_list_is_lower_cased_and_deduplicated() -> None:
    parsed = ExtAuthzOptions.parse_key_headers(" Authorization, X-Api-Key ,x-api-key,")
    assert parsed == ("authorization", "x-api-key")


# --- statuses and bodies -------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (DenyReason.KEY_MISSING, 401),
        (DenyReason.KEY_MALFORMED, 401),
        (DenyReason.KEY_UNKNOWN, 401),
        (DenyReason.KEY_DISABLED, 403),
        (DenyReason.KEY_EXPIRED, 403),
        (DenyReason.REQUESTS_PER_MINUTE, 429),
        (DenyReason.TOKEN_LIMIT, 429),
        (DenyReason.COST_LIMIT, 429),
    ],
)
def test_each_deny_reason_has_the_http_status_a_client_can_act_on(
    reason: DenyReason, status: int
) -> None:
    assert HTTP_STATUS_OF[reason] == status
    assert http_denial(Decision.deny(reason)).status == status


def test_every_deny_reason_has_an_http_status() -> None:
    assert set(HTTP_STATUS_OF) == set(DenyReason)


def test_the_body_is_an_openai_style_json_error_naming_the_limit() -> None:
    denial = http_denial(limited(DenyReason.TOKEN_LIMIT))
    error = json.loads(denial.body)["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "Token limit" in error["message"]
    assert error["code"] == "token_limit"
    assert error["type"] == "rate_limit_error"
    assert error["param"] is None
    assert ("content-type", "application/json") in denial.headers


def test_an_authentication_denial_is_json_without_rate_limit_headers() -> None:
    denial = http_denial(Decision.deny(DenyReason.KEY_UNKNOWN))
    names = [name for name, _ in denial.headers]
    assert names == ["content-type"]
    assert json.loads(denial.body)["error"]["type"] == "authentication_error"


def test_a_429_carries_retry_after_in_whole_seconds_rounded_up() -> None:
    headers = dict(http_denial(limited(DenyReason.REQUESTS_PER_MINUTE, 1001)).headers)
    assert headers["retry-after"] == "2"


def test_a_429_whose_budget_never_resets_has_no_retry_after() -> None:
    headers = dict(http_denial(limited(DenyReason.COST_LIMIT, None)).headers)
    assert "retry-after" not in headers


def test_a_429_carries_rate_limit_headers_for_requests_and_tokens() -> None:
    headers = dict(http_denial(limited(DenyReason.REQUESTS_PER_MINUTE)).headers)
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "2s"
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-reset-tokens" not in headers  # never resets


def test_no_rate_limit_headers_for_limits_the_key_does_not_have() -> None:
    assert rate_limit_headers(Decision(allowed=True, key_id="key_x")) == []


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (250, "250ms"), (1000, "1s"), (59_001, "1m0s"), (3_600_000, "1h0m0s")],
)
def test_reset_durations_are_written_like_openai(ms: int, text: str) -> None:
    assert reset_duration(ms) == text


def test_the_message_never_contains_the_secret() -> None:
    for reason in DenyReason:
        assert SECRET not in http_denial(Decision.deny(reason)).body


def test_store_unavailable_is_a_503_json_error_with_retry_after() -> None:
    denial = store_unavailable_denial()
    assert denial.status == 503
    assert dict(denial.headers)["retry-after"] == "1"
    assert json.loads(denial.body)["error"]["code"] == "store_unavailable"


# --- CheckResponse shapes ---------------------------------------------------------


def test_an_allowed_check_overwrites_identity_and_removes_the_key_headers() -> None:
    decision = Decision(allowed=True, key_id="key_a", workspace="ws", project="")
    ok = allowed_response(decision, ExtAuthzOptions()).ok_response
    added = {h.header.key: (h.header.value, h.append_action) for h in ok.headers}
    assert added["x-aigw-key-id"] == ("key_a", 2)  # OVERWRITE_IF_EXISTS_OR_ADD
    assert added["x-aigw-workspace"] == ("ws", 2)
    assert "x-aigw-project" in ok.headers_to_remove  # no project: a forged one must go
    assert {"authorization", "x-api-key", "api-key"} <= set(ok.headers_to_remove)


def test_key_headers_stay_when_stripping_is_off() -> None:
    options = ExtAuthzOptions(strip_key_headers=False)
    ok = allowed_response(Decision(allowed=True, key_id="key_a"), options).ok_response
    assert "authorization" not in ok.headers_to_remove


def test_an_allowed_check_puts_the_key_id_in_dynamic_metadata() -> None:
    response = allowed_response(Decision(allowed=True, key_id="key_a"), ExtAuthzOptions())
    assert response.dynamic_metadata["key_id"] == "key_a"


def test_a_denied_check_has_a_non_ok_status_and_the_http_reply() -> None:
    decision = limited(DenyReason.REQUESTS_PER_MINUTE)
    response = denied_response(http_denial(decision), decision)
    assert response.status.code == 8  # RESOURCE_EXHAUSTED: Envoy denies on any non-OK code
    assert response.denied_response.status.code == 429
    assert response.dynamic_metadata["deny_reason"] == "requests_per_minute"


def test_fail_open_marks_the_request_and_drops_every_identity_header() -> None:
    ok = fail_open_response(ExtAuthzOptions()).ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [("x-aigw-fail-open", "true")]
    assert {"x-aigw-key-id", "x-aigw-workspace", "x-aigw-project"} <= set(ok.headers_to_remove)


# --- settings ---------------------------------------------------------------------


def test_the_envoy_defaults_fail_closed_and_strip_the_key_headers() -> None:
    settings = parse_settings([], env={})
    assert settings.envoy_failure_mode == "closed"
    assert settings.envoy_strip_key_headers is True
    assert ExtAuthzOptions.parse_key_headers(settings.envoy_key_headers) == DEFAULT_KEY_HEADERS


def test_the_envoy_settings_come_from_aigw_environment_variables() -> None:
    settings = parse_settings([], env={
        "AIGW_ENVOY_FAILURE_MODE": "open",
        "AIGW_ENVOY_STRIP_KEY_HEADERS": "false",
        "AIGW_ENVOY_KEY_HEADERS": "x-api-key",
    })
    assert settings.envoy_failure_mode == "open"
    assert settings.envoy_strip_key_headers is False
    assert settings.envoy_key_headers == "x-api-key"


def test_an_unknown_failure_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--envoy-failure-mode", "maybe"], env={})
