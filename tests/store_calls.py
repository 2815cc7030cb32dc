"""Counting what a client sends to the store: round trips and commands."""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import Connection


class CountingConnection(Connection):
    """A real redis-py connection that counts its writes (round trips: one per command
    or pipeline of commands) and its commands, on the class, across every connection."""

    writes = 0
    commands = 0

    def pack_command(self, *args: Any) -> Any:
        type(self).commands += 1
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        await super().send_packed_command(command, check_health)
