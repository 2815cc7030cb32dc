"""No raw secret in logs, gRPC errors, Redis key names or Redis values.

One scripted session runs against ``aigw-sidecar serve`` at DEBUG level with
every kind of call: creates, allowed and denied requests of every reason,
usage reports, legacy keys, and bad input that quotes the secret back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from tests.servers import SidecarProcess
from tests.snapshots import every_stored_text

LEGACY_SECRET = "legacy-Hygiene-0123456789abcdef"


class Session:
    """Calls that remember every reply text and error message they saw."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.keys = keys_pb2_grpc.KeyManagementStub(channel)
        self.admission = admission_pb2_grpc.AdmissionStub(channel)
        self.secrets: list[str] = []
        self.seen: list[str] = []

    async def ok(self, call: Awaitable[Any]) -> Any:
        reply = await call
        self.seen.append(str(reply))
        return reply

    async def fails(self, call: Awaitable[Any]) -> None:
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            self.seen.extend([err.details() or "", err.debug_error_string() or ""])
            self.seen.extend(str(v) for _k, v in (err.trailing_metadata() or ()))
            return
        raise AssertionError(f"expected an error, got {reply}")

    async def create(self, name: str, **fields: Any) -> kpb.CreateKeyResponse:
        reply: kpb.CreateKeyResponse = await self.keys.CreateKey(
            kpb.CreateKeyRequest(name=name, **fields), timeout=10
        )
        self.secrets.append(reply.secret)
        # The create reply is the one place the secret may be; keep only its key.
        self.seen.append(str(reply.key))
        return reply

    async def authorize(self, secret: str) -> adm.AuthorizeResponse:
        reply: adm.AuthorizeResponse = await self.ok(
            self.admission.Authorize(adm.AuthorizeRequest(secret=secret), timeout=10)
        )
        return reply


async def _scripted_session(s: Session) -> None:
    limited = await s.create("limited", limits=kpb.Limits(requests_per_minute=1))
    assert (await s.authorize(limited.secret)).allowed
    assert not (await s.authorize(limited.secret)).allowed  # requests per minute

    tokens = await s.create("tokens", limits=kpb.Limits(token_limit=5))
    await s.ok(s.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=tokens.key.key_id, request_id="r1", prompt_tokens=5), timeout=10))
    await s.ok(s.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=tokens.key.key_id, request_id="r1", prompt_tokens=5), timeout=10))
    assert not (await s.authorize(tokens.secret)).allowed  # token limit

    cost = await s.create("cost", limits=kpb.Limits(cost_limit_usd="0.01",
                                                     reset_period=kpb.RESET_PERIOD_DAILY))
    await s.ok(s.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=cost.key.key_id, request_id="r1", cost_usd="0.01"), timeout=10))
    assert not (await s.authorize(cost.secret)).allowed  # cost limit

    disabled = await s.create("disabled")
    await s.ok(s.keys.DisableKey(kpb.DisableKeyRequest(key_id=disabled.key.key_id), timeout=10))
    assert not (await s.authorize(disabled.secret)).allowed

    # Two seconds ahead of now (not of the session's start): a loaded machine may
    # have spent a while on the calls above.
    expires_s = int(await asyncio.to_thread(_now)) + 2
    expiring = await s.create("expiring", expires_at=Timestamp(seconds=expires_s))
    await asyncio.sleep(max(0.0, expires_s - await asyncio.to_thread(_now) + 0.2))
    assert not (await s.authorize(expiring.secret)).allowed

    deleted = await s.create("deleted")
    await s.ok(s.keys.DeleteKey(kpb.DeleteKeyRequest(key_id=deleted.key.key_id), timeout=10))
    assert not (await s.authorize(deleted.secret)).allowed  # unknown

    typo = limited.secret[:-1] + ("A" if limited.secret[-1] != "A" else "B")
    s.secrets.append(typo)
    assert not (await s.authorize(typo)).allowed  # malformed
    assert not (await s.authorize("")).allowed  # missing

    await s.ok(s.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret=LEGACY_SECRET, name="legacy"), timeout=10))
    s.secrets.append(LEGACY_SECRET)
    assert (await s.authorize(LEGACY_SECRET)).allowed
    assert not (await s.authorize(LEGACY_SECRET + "x")).allowed
    s.secrets.append(LEGACY_SECRET + "x")

    # Bad input that carries a secret where it does not belong.
    await s.fails(s.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret=LEGACY_SECRET, name="again"), timeout=10))
    await s.fails(s.keys.ImportLegacyKey(
        kpb.ImportLegacyKeyRequest(secret=limited.secret, name="ours"), timeout=10))
    await s.fails(s.keys.GetKey(kpb.GetKeyRequest(key_id=limited.secret), timeout=10))
    await s.fails(s.keys.CreateKey(kpb.CreateKeyRequest(name=limited.secret + "\x01x"),
                                   timeout=10))
    await s.fails(s.keys.CreateKey(
        kpb.CreateKeyRequest(name="n", workspace=limited.secret), timeout=10))
    await s.fails(s.keys.CreateKey(
        kpb.CreateKeyRequest(name="n", labels={limited.secret: "v"}), timeout=10))
    await s.fails(s.keys.CreateKey(
        kpb.CreateKeyRequest(name="n", limits=kpb.Limits(cost_limit_usd=limited.secret)),
        timeout=10))
    await s.fails(s.keys.UpdateKey(kpb.UpdateKeyRequest(
        key_id=limited.key.key_id, update_mask=FieldMask(paths=[limited.secret])), timeout=10))
    await s.fails(s.keys.ListKeys(kpb.ListKeysRequest(page_token=limited.secret), timeout=10))
    await s.fails(s.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=limited.secret, request_id="r"), timeout=10))
    await s.fails(s.admission.RecordUsage(adm.RecordUsageRequest(
        key_id=limited.key.key_id, request_id="r", cost_usd=limited.secret), timeout=10))
    await s.ok(s.keys.ListKeys(kpb.ListKeysRequest(), timeout=10))
    await s.ok(s.keys.GetKeyOverview(
        kpb.GetKeyOverviewRequest(key_id=limited.key.key_id), timeout=10))


def _now() -> float:
    import time

    return time.time()


def _leaks(secrets: list[str], texts: list[str]) -> list[tuple[str, str]]:
    return [(secret[-6:], text[:120]) for secret in secrets for text in texts if secret in text]


async def test_no_secret_reaches_a_log_an_error_a_key_name_or_a_stored_value(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "sidecar.log"
    sidecar = SidecarProcess(
        valkey_url, key_prefix, extra_args=["--log-level", "DEBUG"], log_path=log_path
    ).start()
    try:
        async with grpc.aio.insecure_channel(sidecar.target) as channel:
            session = Session(channel)
            await _scripted_session(session)
    finally:
        assert sidecar.stop() == 0

    assert len(session.secrets) >= 8
    log_lines = log_path.read_text(errors="replace").splitlines()
    assert log_lines, "the DEBUG session wrote no log at all"
    assert _leaks(session.secrets, log_lines) == []
    assert _leaks(session.secrets, session.seen) == []
    client = Redis.from_url(valkey_url, decode_responses=True)
    try:
        stored = await every_stored_text(client, key_prefix)
    finally:
        await client.aclose()
    assert len(stored) > 20
    assert _leaks(session.secrets, stored) == []
