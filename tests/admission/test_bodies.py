"""Reading OpenAI-style request bodies and reported usage for accounting (pure code)."""

from __future__ import annotations

import json

import pytest

from aigw_sidecar.admission.bodies import (
    INCLUDE_USAGE,
    BodyRefused,
    Endpoint,
    Settlement,
    Usage,
    captured_usage,
    read_request,
    settlement,
    usage_of,
    usd_to_micro,
    with_usage_requested,
)


def body(**fields: object) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", **fields}).encode()


USAGE = {
    "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
}


# --- requests -------------------------------------------------------------------

def test_the_prompt_estimate_is_a_quarter_of_the_characters_plus_four_per_message() -> None:
    facts = read_request(body(messages=[
        {"role": "system", "content": "x" * 10},
        {"role": "user", "content": [{"type": "text", "text": "y" * 6},
                                     {"type": "image_url", "image_url": {"url": "u"}}]},
    ]))
    assert facts.prompt_tokens == 4 + 2 * 4  # ceil(16 / 4) + 4 per message


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    facts = read_request(body(messages=[], max_tokens=10, max_completion_tokens=30))
    assert facts.max_output_tokens == 30
    assert read_request(body(messages=[], max_tokens=10)).max_output_tokens == 10


def test_a_request_without_a_bound_is_reserved_the_default_output_bound() -> None:
    facts = read_request(body(messages=[{"role": "user", "content": "abcd"}]))
    assert facts.max_output_tokens is None
    assert facts.estimate(600).tokens == 1 + 4 + 600


def test_n_choices_multiply_the_output_bound() -> None:
    assert read_request(body(messages=[], max_tokens=10, n=3)).max_output_tokens == 30
    assert read_request(body(messages=[], n=2)).estimate(100).max_output_tokens == 200


def test_a_legacy_completions_prompt_is_estimated() -> None:
    facts = read_request(body(prompt="z" * 9, max_tokens=2), Endpoint.COMPLETIONS)
    assert (facts.prompt_tokens, facts.max_output_tokens) == (3, 2)


def test_embeddings_have_no_output() -> None:
    facts = read_request(body(input=["a" * 8, "b" * 4]), Endpoint.EMBEDDINGS)
    assert (facts.prompt_tokens, facts.estimate(4096).max_output_tokens) == (3, 0)


def test_a_responses_request_is_bounded_by_max_output_tokens() -> None:
    facts = read_request(body(input="q" * 8, instructions="i" * 4, max_output_tokens=7),
                         Endpoint.RESPONSES)
    assert (facts.prompt_tokens, facts.max_output_tokens) == (3, 7)
    assert facts.rewrite is None  # its stream always ends with the usage


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[1, 2]", b"\xff\xfe", b'"text"', b'{"a": 1} {"b": 2}',
    b'{"model": "m", "messages": [], "x": "\xff"}',  # not UTF-8
    b'{"model": "m", "n": ' + b"9" * 5000 + b"}",  # a 5,000-digit integer
    b'{"model": "m", "t": 1e999}', b'{"model": "m", "t": NaN}',
    b"[" * 5000 + b"]" * 5000,
])
def test_a_body_that_is_not_one_strict_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(BodyRefused):
        read_request(raw)


def test_a_key_given_twice_is_refused_and_named() -> None:
    raw = b'{"model": "gpt-4o-mini", "messages": [], "model": "gpt-4o"}'
    with pytest.raises(BodyRefused, match="'model' twice"):
        read_request(raw)
    with pytest.raises(BodyRefused, match="twice"):
        read_request(b'{"model": "m", "metadata": {"a": 1, "a": 2}}')


def test_a_duplicate_key_that_is_not_a_plain_name_is_not_echoed() -> None:
    secret = "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"
    with pytest.raises(BodyRefused) as refused:
        read_request(f'{{"{secret}": 1, "{secret}": 2}}'.encode())
    assert secret not in str(refused.value)


def test_a_nested_model_is_not_the_model() -> None:
    facts = read_request(body(model="gpt-4o", metadata={"model": "gpt-4o-mini"}, messages=[]))
    assert facts.model == "gpt-4o"


@pytest.mark.parametrize(("field", "value"), [
    ("model", "has space"), ("model", "é"), ("model", "x" * 129), ("model", 42),
    ("model", "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"),
    ("stream", "true"), ("stream", 1), ("stream_options", "yes"),
    ("max_tokens", -5), ("max_tokens", "100"), ("max_tokens", True), ("max_tokens", 1.5),
    ("max_completion_tokens", "9"), ("n", 0), ("n", 500), ("n", "2"),
])
def test_an_accounting_field_of_the_wrong_type_is_refused_and_named(
    field: str, value: object
) -> None:
    with pytest.raises(BodyRefused, match=f"'{field}'") as refused:
        read_request(body(messages=[], **{field: value}))
    assert "sk-aigw" not in str(refused.value)


def test_include_usage_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(BodyRefused, match="include_usage"):
        read_request(body(stream=True, stream_options={"include_usage": "yes"}))


def test_a_streaming_request_without_stream_options_gets_them_inserted() -> None:
    raw = b'  {"model":"m","stream":true,"messages":[]}'
    facts = read_request(raw)
    assert facts.rewrite is not None and facts.rewrite.offset == 2
    new = with_usage_requested(raw, facts.rewrite)
    assert new == b'  {' + INCLUDE_USAGE + b'"model":"m","stream":true,"messages":[]}'
    assert json.loads(new)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("options", [{"x": 1}, {"include_usage": False}, None])
def test_stream_options_without_include_usage_are_replaced_whole(options: object) -> None:
    raw = body(messages=[], stream=True, stream_options=options)
    facts = read_request(raw)
    assert facts.rewrite is not None and facts.rewrite.offset is None
    new = json.loads(with_usage_requested(raw, facts.rewrite))
    assert new["stream_options"] == {**(options or {}), "include_usage": True}
    assert new["model"] == "gpt-4o-mini"


def test_a_lone_surrogate_survives_the_rewrite_as_an_escape() -> None:
    raw = b'{"model":"m","stream":true,"stream_options":{},"messages":[{"content":"\\ud800"}]}'
    facts = read_request(raw)
    assert facts.rewrite is not None
    new = with_usage_requested(raw, facts.rewrite)
    assert b"\\ud800" in new and json.loads(new)["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("raw", [
    body(messages=[]),
    body(stream=False),
    body(stream=True, stream_options={"include_usage": True}),
])
def test_a_body_that_needs_no_usage_request_is_left_alone(raw: bytes) -> None:
    assert read_request(raw).rewrite is None


# --- responses ------------------------------------------------------------------

def test_usage_of_a_chat_completion() -> None:
    assert usage_of({"model": "gpt-4o-2024", "usage": USAGE}) == Usage(11, 7, 3, "gpt-4o-2024")


def test_usage_of_the_responses_api() -> None:
    event = {"type": "response.completed", "response": {"model": "o3", "usage": {
        "input_tokens": 20, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 8},
    }}}
    assert usage_of(event) == Usage(20, 5, 8, "o3")


def test_cached_tokens_never_exceed_prompt_tokens() -> None:
    found = usage_of({"usage": {"prompt_tokens": 2, "completion_tokens": 1,
                                "prompt_tokens_details": {"cached_tokens": 9}}})
    assert found is not None and found.cached_prompt_tokens == 2


@pytest.mark.parametrize("message", [{}, {"usage": None}, {"usage": {"total_tokens": 4}}, []])
def test_no_usage_is_none(message: object) -> None:
    assert usage_of(message) is None


def test_usage_captured_by_the_proxy_is_read() -> None:
    assert captured_usage(json.dumps(USAGE), "m") == Usage(11, 7, 3, "m")
    assert captured_usage('{"input_tokens": 4, "output_tokens": 2}') == Usage(4, 2)
    assert captured_usage('{"prompt_tokens": 452, "total_tokens": 452}') == Usage(452, 0)


@pytest.mark.parametrize("text", ["{", "[]", '{"total_tokens": 3}', "x" * 10, "[" * 3000])
def test_a_capture_that_is_not_usage_is_none(text: str) -> None:
    assert captured_usage(text) is None


# --- settlement -----------------------------------------------------------------

def test_reported_usage_is_charged_whatever_the_status() -> None:
    assert settlement(200, Usage(1, 1), True) is Settlement.CHARGE_USAGE
    assert settlement(None, Usage(1, 1), True) is Settlement.CHARGE_USAGE
    assert settlement(500, Usage(1, 1), True) is Settlement.CHARGE_USAGE


@pytest.mark.parametrize("status", [200, 201, 299])
def test_a_success_without_usage_is_charged_its_estimate(status: int) -> None:
    assert settlement(status, None, True) is Settlement.CHARGE_ESTIMATE


def test_a_client_that_left_while_the_upstream_ran_is_charged_its_estimate() -> None:
    assert settlement(None, None, upstream_started=True) is Settlement.CHARGE_ESTIMATE


@pytest.mark.parametrize("status", [400, 429, 500, 503, 101, 302])
def test_a_failure_releases_the_reservation(status: int) -> None:
    assert settlement(status, None, True) is Settlement.RELEASE


def test_a_request_the_upstream_never_got_releases_the_reservation() -> None:
    assert settlement(None, None, upstream_started=False) is Settlement.RELEASE


@pytest.mark.parametrize(("value", "micro"), [
    (0.00123, 1230), ("0.0000004", 1), (0, 0), ("2.5e-06", 3), (1, 1_000_000),
    (-1, None), ("abc", None), (True, None), (None, None), (float("nan"), None),
    ("1e30", None),
])
def test_an_upstream_cost_in_usd_becomes_micro_usd_rounded_up(
    value: object, micro: int | None
) -> None:
    assert usd_to_micro(value) == micro


def test_a_reported_cost_is_read_from_the_usage_or_else_the_header() -> None:
    own = captured_usage('{"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.002}', "m",
                         cost_header="0.5")
    assert own is not None and own.reported_cost_micro_usd == 2000
    header = captured_usage('{"prompt_tokens": 1, "completion_tokens": 1}', "m", "0.000123")
    assert header is not None and header.reported_cost_micro_usd == 123
    none = captured_usage('{"prompt_tokens": 1, "completion_tokens": 1}')
    assert none is not None and none.reported_cost_micro_usd is None
