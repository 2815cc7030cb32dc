"""The overview table of aigw-admin: one number format, one header per column, plurals."""

from __future__ import annotations

from aigw_sidecar.admin import render
from aigw_sidecar.api.v1 import keys_pb2 as kpb


def _overview(**fields: object) -> kpb.KeyOverview:
    key = kpb.ApiKey(key_id="key_" + "a" * 20, name="ci", masked_secret="sk-aigw-…abcd",
                     limits=kpb.Limits(token_limit=1_000_000, cost_limit_micro_usd=5_000_000))
    return kpb.KeyOverview(
        key=key,
        tokens=kpb.LimitUsage(limited=True, limit=1_000_000, used=1_500, remaining=998_500),
        cost_micro_usd=kpb.LimitUsage(limited=True, limit=5_000_000, used=250_000,
                                      remaining=4_750_000),
        **fields,  # type: ignore[arg-type]
    )


def _row(text: str, label: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.startswith(label + " "))


def test_the_header_names_each_column_once() -> None:
    text = render.overview(_overview())
    header = next(line for line in text.splitlines() if "REMAINING" in line)
    assert header.split() == ["KIND", "USED", "LIMIT", "REMAINING", "USED", "%"]


def test_tokens_are_written_as_in_the_keys_list() -> None:
    text = render.overview(_overview())
    assert _row(text, "tokens") == ["tokens", "1.5k", "1M", "998.5k", "0%"]
    assert render.limits_text(_overview().key) == "$5.00 · 1M tok"
    assert _row(text, "cost") == ["cost", "$0.25", "$5.00", "$4.75", "5%"]


def test_one_request_is_singular_and_more_are_plural() -> None:
    one = render.overview(_overview(period_requests=1, lifetime_requests=1,
                                    period_completion_tokens=1, lifetime_completion_tokens=1))
    assert "this period    1 request, 0 prompt + 1 completion token" in one
    assert "lifetime       1 request, 1 token, $0" in one
    many = render.overview(_overview(period_requests=2, lifetime_requests=1_200,
                                     period_prompt_tokens=2_000, lifetime_prompt_tokens=2_000))
    assert "this period    2 requests, 2k prompt + 0 completion tokens" in many
    assert "lifetime       1.2k requests, 2k tokens" in many


def test_plural_counts_as_count_does() -> None:
    assert [render.plural(n, "day") for n in (0, 1, 2, 1_500)] == [
        "0 days", "1 day", "2 days", "1.5k days"]
