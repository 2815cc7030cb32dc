"""Secret format, key ids, masking and USD amounts: pure code, no store."""

from __future__ import annotations

import math

import pytest

from aigw_sidecar.admission.decision import DenyReason
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.money import MAX_MICRO_USD, format_usd, parse_usd

_SECRET_ALPHABET = sorted(set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"))


def test_a_minted_secret_carries_its_key_id() -> None:
    minted = secrets.new_secret()
    assert secrets.parse_key_id(minted.secret) == minted.key_id
    assert secrets.is_valid_key_id(minted.key_id)


def test_a_minted_secret_starts_with_the_recognisable_prefix() -> None:
    assert secrets.new_secret().secret.startswith("sk-aigw-")


def test_the_stored_hash_is_the_sha256_of_the_secret_and_not_the_secret() -> None:
    minted = secrets.new_secret()
    assert minted.key_hash == secrets.hash_secret(minted.secret)
    assert len(minted.key_hash) == 64
    assert minted.secret not in minted.key_hash


def test_every_single_character_typo_is_caught_by_the_checksum() -> None:
    secret = secrets.new_secret().secret
    for pos in range(len(secret)):
        for ch in _SECRET_ALPHABET:
            if ch == secret[pos]:
                continue
            typo = secret[:pos] + ch + secret[pos + 1 :]
            assert secrets.parse_key_id(typo) is None, (pos, ch)


def test_a_truncated_or_extended_secret_is_malformed() -> None:
    secret = secrets.new_secret().secret
    assert secrets.parse_key_id(secret[:-1]) is None
    assert secrets.parse_key_id(secret + "0") is None
    assert secrets.parse_key_id(" " + secret) is None


def test_swapping_two_adjacent_characters_is_caught() -> None:
    secret = secrets.new_secret().secret
    for pos in range(len(secret) - 1):
        if secret[pos] == secret[pos + 1]:
            continue
        swapped = secret[:pos] + secret[pos + 1] + secret[pos] + secret[pos + 2 :]
        assert secrets.parse_key_id(swapped) is None, pos


class _NoStore:
    """A store that fails the test when it is called at all."""

    async def authorize(self, key_id: str, key_hash: str) -> None:
        raise AssertionError("a malformed secret must not reach the store")

    async def resolve_legacy(self, key_hash: str) -> None:
        raise AssertionError("a malformed secret must not reach the store")

    async def record_usage(self, report: object) -> None:
        raise AssertionError("not called")


@pytest.mark.parametrize(
    "value",
    [
        "sk-aigw-",
        "sk-aigw-not-a-secret",
        "short",
        "has a space in it",
        "comma,separated,value",
        "x" * 513,
    ],
)
async def test_a_malformed_secret_is_refused_without_a_store_call(value: str) -> None:
    decision = await AdmissionService(_NoStore()).authorize(value)  # type: ignore[arg-type]
    assert decision.deny_reason is DenyReason.KEY_MALFORMED


async def test_a_secret_with_a_typo_is_refused_without_a_store_call() -> None:
    secret = secrets.new_secret().secret
    typo = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    decision = await AdmissionService(_NoStore()).authorize(typo)  # type: ignore[arg-type]
    assert decision.deny_reason is DenyReason.KEY_MALFORMED


def test_the_random_part_holds_at_least_128_bits() -> None:
    secret = secrets.new_secret().secret
    random_part = secret.split("_", 1)[1][:-6]
    assert len(random_part) * math.log2(62) >= 128


def test_secrets_do_not_repeat_and_use_the_whole_alphabet_in_every_position() -> None:
    minted = [secrets.new_secret().secret for _ in range(3000)]
    assert len(set(minted)) == len(minted)
    random_parts = [s.split("_", 1)[1][:-6] for s in minted]
    for pos in range(len(random_parts[0])):
        # 3000 draws of 62 symbols miss one with probability ~ 62 * e^-48: never.
        assert len({part[pos] for part in random_parts}) == 62, pos


def test_key_ids_do_not_repeat() -> None:
    ids = [secrets.new_secret().key_id for _ in range(3000)] + [
        secrets.new_key_id() for _ in range(3000)
    ]
    assert len(set(ids)) == len(ids)


def test_a_mask_shows_the_prefix_and_the_last_four_characters_only() -> None:
    secret = secrets.new_secret().secret
    masked = secrets.mask_secret(secret)
    assert masked == f"sk-aigw-…{secret[-4:]}"
    assert secret[8:-4] not in masked


def test_a_mask_of_a_legacy_secret_hides_its_middle() -> None:
    assert secrets.mask_secret("legacy-0123456789-abcdef") == "…cdef"


def test_a_mask_of_a_short_legacy_secret_shows_nothing() -> None:
    assert secrets.mask_secret("short-secret") == "…"


def test_a_key_id_is_key_underscore_and_twenty_base32_characters() -> None:
    assert secrets.is_valid_key_id("key_" + "0" * 20)
    assert not secrets.is_valid_key_id("key_" + "0" * 19)
    assert not secrets.is_valid_key_id("key_" + "I" * 20)
    assert not secrets.is_valid_key_id("kex_" + "0" * 20)


# --- money -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("25", 25_000_000),
        ("0.50", 500_000),
        ("12.345678", 12_345_678),
        ("0.000001", 1),
        (" 7 ", 7_000_000),
        ("0", 0),
        ("1000000000", MAX_MICRO_USD),
    ],
)
def test_a_decimal_usd_string_becomes_exact_micro_usd(text: str, micro: int) -> None:
    assert parse_usd("cost", text) == micro


@pytest.mark.parametrize(
    "text", ["", "abc", "1.0000001", "-1", "NaN", "inf", "1e400", "1000000000.000001", "1,5"]
)
def test_a_usd_string_that_is_not_an_exact_amount_is_refused_naming_the_field(
    text: str,
) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_usd("limits.cost_limit_usd", text)
    assert err.value.field == "limits.cost_limit_usd"


@pytest.mark.parametrize("micro", [0, 1, 500_000, 12_345_600, 25_000_000, MAX_MICRO_USD])
def test_formatting_micro_usd_round_trips_through_parsing(micro: int) -> None:
    assert parse_usd("x", format_usd(micro)) == micro


def test_whole_dollars_are_formatted_without_decimals() -> None:
    assert format_usd(25_000_000) == "25"
    assert format_usd(12_345_600) == "12.3456"


def test_a_trailing_newline_makes_a_secret_and_a_key_id_malformed() -> None:
    # Python's "$" matches before a final "\n"; every format check anchors with "\Z".
    issued = secrets.new_secret()
    assert secrets.parse_key_id(issued.secret + "\n") is None
    assert not secrets.is_valid_key_id(issued.key_id + "\n")
