"""Loads the Lua scripts (package data) and registers each one once.

Each ``lua/<name>.lua`` holds one decision; ``lua/_prelude.lua`` (clock,
period bounds, usage helpers) is prepended to every script so the shared
arithmetic is written once. Scripts are called with EVALSHA; redis-py reloads
a script by itself when the server answers NOSCRIPT (after a restart or a
SCRIPT FLUSH).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from aigw_sidecar.store.client import StoreClient

_NAMES = (
    "authorize",
    "record_usage",
    "create_key",
    "claim",
    "release",
    "update_key",
    "delete_key",
    "read_key",
    "release_reservation",
    "rotate_key",
)


def script_source(name: str) -> str:
    """The full text of one script: the prelude, then the script itself."""
    folder = resources.files("aigw_sidecar.store") / "lua"
    prelude = (folder / "_prelude.lua").read_text(encoding="utf-8")
    return prelude + (folder / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Scripts:
    authorize: AsyncScript
    record_usage: AsyncScript
    create_key: AsyncScript
    claim: AsyncScript
    release: AsyncScript
    update_key: AsyncScript
    delete_key: AsyncScript
    read_key: AsyncScript
    release_reservation: AsyncScript
    rotate_key: AsyncScript

    @classmethod
    def register(cls, redis: StoreClient) -> Scripts:
        registered: dict[str, Any] = {
            name: redis.register_script(script_source(name)) for name in _NAMES
        }
        return cls(**registered)
