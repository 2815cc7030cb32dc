"""Reading OpenAI-style request and response bodies for accounting (pure code)."""

from __future__ import annotations

import json

import pytest

from aigw_sidecar.admission.usage_stream import (
    MAX_JSON_BYTES,
    Settlement,
    Usage,
    UsageReader,
    read_request,
    settlement,
    usage_of,
    with_usage_requested,
)


def body(**fields: object) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", **fields}).encode()


def sse(*events: object) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += f"data: {data}\n\n".encode()
    return out


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
    assert facts is not None
    assert facts.prompt_tokens == 4 + 2 * 4  # ceil(16 / 4) + 4 per message


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    facts = read_request(body(messages=[], max_tokens=10, max_completion_tokens=30))
    assert facts is not None and facts.max_output_tokens == 30
    facts = read_request(body(messages=[], max_tokens=10))
    assert facts is not None and facts.max_output_tokens == 10


def test_a_request_without_a_bound_reserves_only_its_prompt() -> None:
    facts = read_request(body(messages=[{"role": "user", "content": "abcd"}]))
    assert facts is not None
    assert facts.estimate().tokens == facts.prompt_tokens == 1 + 4


def test_a_legacy_completions_prompt_is_estimated() -> None:
    facts = read_request(body(prompt="z" * 9, max_tokens=2))
    assert facts is not None and (facts.prompt_tokens, facts.max_output_tokens) == (3, 2)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_a_body_that_is_not_a_json_object_gives_no_estimate(raw: bytes) -> None:
    assert read_request(raw) is None


@pytest.mark.parametrize("model", [
    "has space", "é", "x" * 129, 42,
    "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456",  # a secret
])
def test_a_model_name_the_domain_would_refuse_is_dropped(model: object) -> None:
    facts = read_request(body(model=model, messages=[]))
    assert facts is not None and facts.model == ""


def test_a_secret_as_the_model_of_a_truncated_body_is_dropped() -> None:
    head = b'{"model": "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabc'
    facts = read_request(head + b'def123456", "messages": [', truncated=True,
                         content_length=100_000)
    assert facts is not None and facts.model == ""


def test_nonsense_token_bounds_are_ignored() -> None:
    for bad in (-5, "100", True, 1.5):
        facts = read_request(body(messages=[], max_tokens=bad))
        assert facts is not None and facts.max_output_tokens == 0


def test_a_truncated_body_is_estimated_from_its_length_and_the_part_that_arrived() -> None:
    whole = json.dumps({
        "model": "gpt-4o", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "q" * 5000}],
    }).encode()
    facts = read_request(whole[:1000], truncated=True, content_length=len(whole))
    assert facts is not None
    assert (facts.model, facts.max_output_tokens, facts.stream) == ("gpt-4o", 64, True)
    assert facts.prompt_tokens == -(-len(whole) // 4)


def test_a_truncated_body_missing_model_and_bound_still_reserves_its_size() -> None:
    whole = json.dumps({"messages": [{"role": "user", "content": "q" * 5000}],
                        "model": "m", "max_tokens": 9}).encode()
    facts = read_request(whole[:100], truncated=True, content_length=len(whole))
    assert facts is not None
    assert (facts.model, facts.max_output_tokens) == ("", 0)
    assert facts.prompt_tokens > 1250


def test_stream_and_include_usage_are_read() -> None:
    facts = read_request(body(messages=[], stream=True, stream_options={"include_usage": True}))
    assert facts is not None and (facts.stream, facts.include_usage) == (True, True)


def test_a_streaming_request_is_asked_for_its_usage() -> None:
    new = with_usage_requested(body(messages=[], stream=True, stream_options={"x": 1}))
    assert new is not None
    assert json.loads(new)["stream_options"] == {"x": 1, "include_usage": True}


def test_include_usage_false_is_turned_on() -> None:
    new = with_usage_requested(body(stream=True, stream_options={"include_usage": False}))
    assert new is not None and json.loads(new)["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("raw", [
    body(messages=[]),
    body(stream=False),
    body(stream=True, stream_options={"include_usage": True}),
    b"not json",
])
def test_a_body_that_needs_no_usage_request_is_left_alone(raw: bytes) -> None:
    assert with_usage_requested(raw) is None


def test_the_rewritten_body_keeps_non_ascii_text() -> None:
    new = with_usage_requested(body(stream=True, messages=[{"role": "user", "content": "héllo"}]))
    assert new is not None and "héllo".encode() in new


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


def test_a_json_body_fed_in_pieces_gives_its_usage() -> None:
    raw = json.dumps({"model": "m", "choices": [], "usage": USAGE}).encode()
    reader = UsageReader("application/json; charset=utf-8")
    for i in range(0, len(raw), 7):
        reader.feed(raw[i:i + 7])
    assert reader.finish() == Usage(11, 7, 3, "m")


def test_a_huge_json_body_still_gives_the_usage_at_its_end() -> None:
    filler = "a" * (MAX_JSON_BYTES + 10)
    raw = json.dumps({"model": "m", "choices": [{"text": filler}], "usage": USAGE}).encode()
    reader = UsageReader("application/json")
    for i in range(0, len(raw), 65536):
        reader.feed(raw[i:i + 65536])
    found = reader.finish()
    assert found is not None and (found.prompt_tokens, found.completion_tokens) == (11, 7)


def test_a_cut_json_body_has_no_usage() -> None:
    raw = json.dumps({"model": "m", "choices": [], "usage": USAGE}).encode()
    reader = UsageReader("application/json")
    reader.feed(raw[: len(raw) // 2])
    assert reader.finish() is None


def test_the_final_sse_usage_chunk_is_found_across_chunk_boundaries() -> None:
    stream = sse(
        {"model": "m", "choices": [{"delta": {"content": "hi"}}], "usage": None},
        {"model": "m", "choices": [], "usage": USAGE},
        "[DONE]",
    )
    for size in (1, 2, 5, 13, len(stream)):
        reader = UsageReader("text/event-stream")
        for i in range(0, len(stream), size):
            reader.feed(stream[i:i + size])
        assert reader.finish() == Usage(11, 7, 3, "m"), size


def test_sse_events_split_by_crlf_and_multi_line_data_are_read() -> None:
    payload = json.dumps({"model": "m", "usage": USAGE}, indent=1).splitlines()
    event = "\r\n".join(f"data: {line}" for line in payload) + "\r\n\r\n"
    reader = UsageReader("text/event-stream")
    reader.feed(b": comment\r\n\r\nevent: x\r\n" + event.encode() + b"data: [DONE]\r\n\r\n")
    assert reader.finish() == Usage(11, 7, 3, "m")


def test_a_stream_that_ends_without_a_usage_chunk_has_none() -> None:
    reader = UsageReader("text/event-stream")
    reader.feed(sse({"choices": [{"delta": {"content": "hi"}}]}, "[DONE]"))
    assert reader.finish() is None


def test_a_last_sse_event_without_a_blank_line_is_read() -> None:
    reader = UsageReader("text/event-stream")
    reader.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')
    assert reader.finish() == Usage(1, 2)


def test_a_giant_sse_event_is_skipped_and_the_stream_goes_on() -> None:
    reader = UsageReader("text/event-stream")
    reader.feed(b"data: " + b"x" * (2 * 1024 * 1024))
    reader.feed(b"\n\n" + sse({"usage": {"prompt_tokens": 4, "completion_tokens": 5}}))
    assert reader.finish() == Usage(4, 5)


def test_garbage_events_are_ignored() -> None:
    reader = UsageReader("text/event-stream")
    reader.feed(b"data: {not json\n\ndata: \xff\n\n" + sse({"usage": "nope"}))
    assert reader.finish() is None


# --- settlement -----------------------------------------------------------------

def test_reported_usage_is_charged_whatever_the_status() -> None:
    assert settlement(200, Usage(1, 1)) is Settlement.CHARGE_USAGE
    assert settlement(None, Usage(1, 1)) is Settlement.CHARGE_USAGE


@pytest.mark.parametrize("status", [200, 201, 299])
def test_a_success_without_usage_is_charged_its_estimate(status: int) -> None:
    assert settlement(status, None) is Settlement.CHARGE_ESTIMATE


@pytest.mark.parametrize("status", [None, 400, 429, 500, 503, 101, 302])
def test_a_failure_or_no_response_releases_the_reservation(status: int | None) -> None:
    assert settlement(status, None) is Settlement.RELEASE
