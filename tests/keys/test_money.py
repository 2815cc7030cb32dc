"""Money as admins write it: plain decimals only, everywhere it is parsed."""

from __future__ import annotations

import argparse

import pytest

from aigw_sidecar.admin.commands import parse_usd as cli_usd
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.money import parse_usd

NOT_PLAIN = ["1e3", "$25", "+5", "-1", "1,000", "0x10", "Infinity", "NaN", "25 USD", ".5", "5."]


@pytest.mark.parametrize(("text", "micro"), [("25", 25_000_000), ("0.50", 500_000),
                                             (" 12.345678 ", 12_345_678), ("0", 0)])
def test_a_plain_decimal_is_exact_micro_usd(text: str, micro: int) -> None:
    assert parse_usd("cost", text) == micro


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_is_refused_naming_the_form_expected(text: str) -> None:
    expected = r"plain decimal USD amount such as 25 or 0\.50"
    with pytest.raises(InvalidArgument, match=expected) as err:
        parse_usd("limits.cost_limit_usd", text)
    assert text.strip() not in str(err.value) or text.strip() in "25 or 0.50"


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_the_cli_refuses_them_too(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="plain decimal"):
        cli_usd(text)


def test_price_files_may_still_use_any_finite_decimal() -> None:
    assert parse_usd("p.yaml", "2.5e-1", plain=False) == 250_000
