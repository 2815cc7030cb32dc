"""USD amounts: exact decimal strings in, integer micro-USD everywhere else."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from aigw_sidecar.errors import InvalidArgument

MICRO_PER_USD = 1_000_000
# Lua numbers are doubles: every amount must stay exact below 2**53.
MAX_MICRO_USD = 10**15  # one billion USD


# What an admin writes for money: digits, optionally a point and more digits.
PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
PLAIN_DECIMAL_HINT = (
    "must be a plain decimal USD amount such as 25 or 0.50 (no '$', sign or exponent)"
)


def parse_usd(field: str, text: str, *, plain: bool = True) -> int:
    """``"12.345678"`` -> 12_345_678 micro-USD; at most six decimals, no rounding.

    Args:
        plain: only ``25`` or ``0.50``: an exponent (``1e3``), a sign or a ``$`` is
            refused rather than read (False: any finite decimal, for price files).
    """
    if plain and not PLAIN_DECIMAL.fullmatch(text.strip()):
        # The input is not echoed: it may be a secret pasted into the wrong field.
        raise InvalidArgument(field, PLAIN_DECIMAL_HINT)
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        # The input is not echoed: a secret pasted into the wrong field must not
        # come back in an error message (or a log of it).
        raise InvalidArgument(field, "is not a decimal USD amount") from None
    if not amount.is_finite():
        raise InvalidArgument(field, "must be a finite decimal USD amount")
    micro = amount * MICRO_PER_USD
    if micro != micro.to_integral_value():
        raise InvalidArgument(field, "has more than 6 decimals (micro-USD is the smallest unit)")
    value = int(micro)
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > MAX_MICRO_USD:
        raise InvalidArgument(field, f"must be at most {MAX_MICRO_USD // MICRO_PER_USD} USD")
    return value


def format_usd(micro_usd: int) -> str:
    """12_345_600 -> ``"12.3456"``; whole amounts without decimals."""
    whole, frac = divmod(micro_usd, MICRO_PER_USD)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:06d}".rstrip("0")
