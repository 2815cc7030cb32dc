"""Requests lost or wrongly admitted while the store restarts under load (loopback, bounded).

A sidecar subprocess on its own Valkey (append-only file, fsync every second).
16 closed-loop clients call Authorize for ``--seconds`` on an enabled key and a
disabled one; after a third of the run the store is killed (SIGKILL, or SIGTERM
with ``--graceful``) and started again on the same port and files. Printed:
calls, UNAVAILABLE answers (lost: the proxy gets 503 and may retry), other
errors, admissions of the disabled key (wrongly admitted: must be 0), and the
recovery time from the store answering PING to the first allowed request.

    .venv/bin/python -m tests.bench.store_restart [--seconds 8] [--graceful]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from tests.servers import SidecarProcess, StoreProcess, store_binaries

CLIENTS = 16


async def run(seconds: float, graceful: bool, folder: Path) -> dict[str, object]:
    store = StoreProcess("valkey", store_binaries()["valkey"], folder / "store",
                         appendonly=True).start()
    sidecar = SidecarProcess(store.url, f"b{uuid.uuid4().hex[:6]}",
                             log_path=folder / "sidecar.log").start()
    counts = {"calls": 0, "allowed": 0, "unavailable": 0, "other_errors": 0,
              "disabled_key_admitted": 0}
    other: dict[str, int] = {}
    restarted_at: list[float] = []
    first_ok_after: list[float] = []
    try:
        async with grpc.aio.insecure_channel(sidecar.target) as channel:
            keys = keys_pb2_grpc.KeyManagementStub(channel)
            enabled = await keys.CreateKey(kpb.CreateKeyRequest(name="on"), timeout=10)
            disabled = await keys.CreateKey(kpb.CreateKeyRequest(name="off"), timeout=10)
            await keys.DisableKey(kpb.DisableKeyRequest(key_id=disabled.key.key_id), timeout=10)
            stub = admission_pb2_grpc.AdmissionStub(channel)
            deadline = time.monotonic() + seconds

            async def client(i: int) -> None:
                secret = enabled.secret if i % 4 else disabled.secret
                while time.monotonic() < deadline:
                    counts["calls"] += 1
                    try:
                        reply = await stub.Authorize(adm.AuthorizeRequest(secret=secret),
                                                     timeout=5)
                    except grpc.aio.AioRpcError as err:
                        if err.code() == grpc.StatusCode.UNAVAILABLE:
                            counts["unavailable"] += 1
                        else:
                            counts["other_errors"] += 1
                            other[f"{err.code().name}: {err.details()}"[:120]] = 1
                        await asyncio.sleep(0.01)
                        continue
                    if reply.allowed:
                        counts["allowed"] += 1
                        if secret == disabled.secret:
                            counts["disabled_key_admitted"] += 1
                        if restarted_at and not first_ok_after:
                            first_ok_after.append(time.monotonic())

            async def restart() -> None:
                await asyncio.sleep(seconds / 3)
                await asyncio.to_thread(store.stop, kill=not graceful)
                again = await asyncio.to_thread(StoreProcess(
                    "valkey", store.binary, store.data_dir, appendonly=True, port=store.port
                ).start)
                restarted_at.append(time.monotonic())
                store.process = again.process

            await asyncio.gather(restart(), *(client(i) for i in range(CLIENTS)))
    finally:
        sidecar.stop()
        store.stop()
    recovery = (first_ok_after[0] - restarted_at[0]) if first_ok_after and restarted_at else None
    return {**counts, "recovery_s": None if recovery is None else round(recovery, 3),
            "mode": "SIGTERM" if graceful else "SIGKILL", "other_error_kinds": sorted(other)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--graceful", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(asyncio.run(run(min(args.seconds, 60), args.graceful, Path(folder)))))


if __name__ == "__main__":
    main()
