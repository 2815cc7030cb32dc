"""Secret format, hashing and masking.

A secret looks like ``sk-aigw-<key id body>_<random><checksum>``:

* ``sk-aigw-`` is a recognisable prefix (secret scanners can match it);
* the 20-character key id body (lower-case base32, 100 bits) names the API key,
  so the store finds the key's record without any index;
* 32 base62 characters (about 190 bits) of randomness from ``secrets``;
* 6 base62 characters of CRC-32 over everything before them, so a mistyped or
  truncated secret is refused without a store round trip.

Only ``key_hash`` (SHA-256, hex) of a secret is ever stored. Secrets are long
and random, so a fast hash is enough; legacy secrets are hashed the same way.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "sk-aigw-"
KEY_ID_PREFIX = "key_"
_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_LEN = 20
_RANDOM_LEN = 32
_CHECK_LEN = 6
_SECRET_RE = re.compile(
    rf"^{re.escape(PREFIX)}([{_BASE32}]{{{_ID_LEN}}})_([0-9A-Za-z]{{{_RANDOM_LEN}}})"
    rf"([0-9A-Za-z]{{{_CHECK_LEN}}})\Z"
)
_KEY_ID_RE = re.compile(rf"^{KEY_ID_PREFIX}[{_BASE32}]{{{_ID_LEN}}}\Z")
_LEGACY_MIN, _LEGACY_MAX = 8, 512


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A freshly minted secret and what is stored about it."""

    key_id: str
    secret: str
    key_hash: str
    masked: str


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def hash_secret(secret: str) -> str:
    """The key hash stored for a secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def mask_secret(secret: str) -> str:
    """Prefix and last four characters; safe for lists and logs.

    A legacy secret (no known prefix, maybe short) shows its last four
    characters only when it is long enough for them to give little away.
    """
    if secret.startswith(PREFIX):
        return f"{PREFIX}…{secret[-4:]}"
    if len(secret) >= 24:
        return f"…{secret[-4:]}"
    return "…"


def new_secret(key_id: str | None = None) -> NewSecret:
    """Mint a key id and its secret, or a new secret for ``key_id`` (rotation)."""
    if key_id is None:
        body = "".join(secrets.choice(_BASE32) for _ in range(_ID_LEN))
    elif is_valid_key_id(key_id):
        body = key_id.removeprefix(KEY_ID_PREFIX)
    else:
        raise ValueError("not a key id")
    random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LEN))
    unchecked = f"{PREFIX}{body}_{random_part}"
    secret = unchecked + _checksum(unchecked)
    return NewSecret(
        key_id=KEY_ID_PREFIX + body,
        secret=secret,
        key_hash=hash_secret(secret),
        masked=mask_secret(secret),
    )


def new_key_id() -> str:
    """A key id for a legacy key (its secret does not carry one)."""
    return KEY_ID_PREFIX + "".join(secrets.choice(_BASE32) for _ in range(_ID_LEN))


def parse_key_id(secret: str) -> str | None:
    """The key id carried by a well-formed secret, or None when it is malformed."""
    match = _SECRET_RE.match(secret)
    if match is None:
        return None
    if _checksum(secret[: -_CHECK_LEN]) != match.group(3):
        return None
    return KEY_ID_PREFIX + match.group(1)


def looks_like_ours(secret: str) -> bool:
    """True when the value uses our prefix (and so is never a legacy secret)."""
    return secret.startswith(PREFIX)


def is_valid_key_id(key_id: str) -> bool:
    return _KEY_ID_RE.match(key_id) is not None


def is_plausible_legacy_secret(secret: str) -> bool:
    """Printable ASCII without spaces or commas, 8 to 512 characters."""
    if not _LEGACY_MIN <= len(secret) <= _LEGACY_MAX:
        return False
    return all(33 <= ord(ch) <= 126 and ch != "," for ch in secret)
