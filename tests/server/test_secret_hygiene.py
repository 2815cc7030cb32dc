"""No raw secret in logs, gRPC errors, Redis key names or Redis values.

First one scripted session runs against ``aigw-sidecar serve`` at DEBUG level
with every kind of call: creates, allowed and denied requests of every reason,
usage reports, legacy keys, and bad input that quotes the secret back.

Then the leak test: every rejection and error path, then a search for the raw
secret everywhere. Two ``aigw-sidecar serve`` processes (JSON logs and text logs,
DEBUG, metrics on) share one store of the test's own. Against each: every deny
reason through Authorize and through Envoy's Check, bad input carrying a secret
on every admin RPC and on RecordUsage and ReleaseReservation, rotation with a
grace period, legacy import, and a paused store (UNAVAILABLE, 503). Then
``aigw-admin`` runs as a subprocess (tables, JSON, usage errors, failed calls).
Searched for every raw secret: both logs, every gRPC reply, error message and
trailer, every Check body, header and metadata, both metrics scrapes, the CLI's
stdout and stderr, the audit and events streams, and every Redis key name and
value; key names are also searched for each secret's hash. The number of hits
must be 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys.secrets import hash_secret
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from tests.servers import SidecarProcess, StoreProcess, free_port, store_binaries
from tests.snapshots import every_stored_text, key_names

LEGACY_SECRET = "legacy-Hygiene-0123456789abcdef"


class ScriptedSession:
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


async def _scripted_session(s: ScriptedSession) -> None:
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
            session = ScriptedSession(channel)
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


# --- The leak test: every rejection and error path, two processes, the CLI, then a search.

# Legacy secrets are not shaped like ours, so the log redaction's pattern cannot catch them.
LEGACY = "legacy-LeakTest-0123456789abcdef"


class Session:
    """Calls against one sidecar that keep every text the caller got back."""

    def __init__(self, channel: grpc.aio.Channel, tag: str) -> None:
        self.tag = tag
        self.keys = keys_pb2_grpc.KeyManagementStub(channel)
        self.admission = admission_pb2_grpc.AdmissionStub(channel)
        self.check_call = channel.unary_unary(
            CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
            response_deserializer=authz.CheckResponse.FromString,
        )
        self.secrets: list[str] = []
        self.seen: list[str] = []
        self.denials: set[int] = set()
        self.http: set[int] = set()
        self.errors: set[str] = set()

    async def call(self, call: Awaitable[Any]) -> Any:
        """A reply or an error; both are kept."""
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            self.errors.add(err.code().name)
            self.seen.extend([err.details() or "", err.debug_error_string() or ""])
            self.seen.extend(str(v) for _k, v in (err.initial_metadata() or ()))
            self.seen.extend(str(v) for _k, v in (err.trailing_metadata() or ()))
            return None
        self.seen.append(str(reply))
        return reply

    async def fails(self, call: Awaitable[Any]) -> None:
        assert await self.call(call) is None, "expected an error"

    async def create(self, name: str, **fields: Any) -> kpb.CreateKeyResponse:
        reply: kpb.CreateKeyResponse = await self.keys.CreateKey(
            kpb.CreateKeyRequest(name=f"{self.tag}-{name}", **fields), timeout=10
        )
        self.secrets.append(reply.secret)
        self.seen.append(str(reply.key))  # the reply itself is where the secret belongs
        return reply

    async def deny_both_ways(self, secret: str, model: str = "", body: bytes = b"") -> None:
        """Authorize and Check with ``secret`` (a denial expected from both)."""
        reply = await self.call(self.admission.Authorize(
            adm.AuthorizeRequest(secret=secret, model=model), timeout=10))
        if reply is not None:
            assert not reply.allowed
            self.denials.add(reply.deny_reason)
        for header, value in (("authorization", f"Bearer {secret}"), ("x-api-key", secret)):
            request = authz.CheckRequest()
            http = request.attributes.request.http
            http.method, http.path = "POST", "/v1/chat/completions"
            if secret:
                http.headers[header] = value
            if body:
                http.raw_body = body
                http.headers["content-length"] = str(len(body))
            check = await self.call(self.check_call(request, timeout=10))
            assert check is not None and check.HasField("denied_response"), check
            self.http.add(check.denied_response.status.code)


def _chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


async def _deny_reasons(s: Session) -> kpb.RotateKeySecretResponse:
    """Every deny reason, through Authorize and Check; returns a rotated key for later."""
    usage = s.admission.RecordUsage
    rpm = await s.create("rpm", limits=kpb.Limits(requests_per_minute=1))
    assert (await s.call(s.admission.Authorize(adm.AuthorizeRequest(secret=rpm.secret)))).allowed
    await s.deny_both_ways(rpm.secret)

    # Budget alerts at 50 % and 100 % fill the events stream.
    tokens = await s.create("tokens", limits=kpb.Limits(token_limit=5),
                            alert_thresholds_percent=[50, 100])
    await s.call(usage(adm.RecordUsageRequest(key_id=tokens.key.key_id, request_id="r1",
                                              prompt_tokens=5), timeout=10))
    await s.deny_both_ways(tokens.secret)

    cost = await s.create("cost", limits=kpb.Limits(cost_limit_usd="0.01",
                                                     reset_period=kpb.RESET_PERIOD_DAILY),
                          alert_thresholds_percent=[100])
    await s.call(usage(adm.RecordUsageRequest(key_id=cost.key.key_id, request_id="r1",
                                              cost_usd="0.01"), timeout=10))
    await s.deny_both_ways(cost.secret)

    tpm = await s.create("tpm", limits=kpb.Limits(tokens_per_minute=5))
    await s.call(usage(adm.RecordUsageRequest(key_id=tpm.key.key_id, request_id="r1",
                                              prompt_tokens=10), timeout=10))
    await s.deny_both_ways(tpm.secret)

    per_day = await s.create("per-day", limits=kpb.Limits(requests_per_day=1))
    assert (await s.call(s.admission.Authorize(
        adm.AuthorizeRequest(secret=per_day.secret)))).allowed
    await s.deny_both_ways(per_day.secret)

    parallel = await s.create("parallel", limits=kpb.Limits(max_parallel_requests=1))
    held = await s.call(s.admission.Authorize(adm.AuthorizeRequest(secret=parallel.secret)))
    assert held.allowed
    await s.deny_both_ways(parallel.secret)

    models = await s.create("models", limits=kpb.Limits(allowed_models=["gpt-4o-mini"]))
    await s.deny_both_ways(models.secret, model="o1-pro", body=_chat("o1-pro"))
    priced = await s.create("priced", limits=kpb.Limits(cost_limit_micro_usd=1_000_000))
    await s.deny_both_ways(priced.secret, model="no-such-model", body=_chat("no-such-model"))
    # One of our secrets sent as the model: refused, and never echoed as "the model".
    # (A legacy secret in a model field cannot be told from a model name: not tried.)
    await s.deny_both_ways(models.secret, model=models.secret, body=_chat(models.secret))

    disabled = await s.create("disabled")
    await s.call(s.keys.DisableKey(kpb.DisableKeyRequest(key_id=disabled.key.key_id)))
    await s.deny_both_ways(disabled.secret)

    # Two seconds ahead: far enough that a loaded machine still creates it in time.
    expiring = await s.create("expiring", expires_at=Timestamp(seconds=int(time.time()) + 2))
    deleted = await s.create("deleted")
    await s.call(s.keys.DeleteKey(kpb.DeleteKeyRequest(key_id=deleted.key.key_id)))
    await s.deny_both_ways(deleted.secret)

    # Rotation: the old secret works during the grace period; rotating again ends it.
    rotated = await s.create("rotated")
    first = await s.keys.RotateKeySecret(
        kpb.RotateKeySecretRequest(key_id=rotated.key.key_id, grace_period_s=60), timeout=10)
    s.secrets.append(first.secret)
    s.seen.append(str(first.key))
    assert (await s.call(s.admission.Authorize(
        adm.AuthorizeRequest(secret=rotated.secret)))).allowed
    second = await s.keys.RotateKeySecret(
        kpb.RotateKeySecretRequest(key_id=rotated.key.key_id), timeout=10)
    s.secrets.append(second.secret)
    s.seen.append(str(second.key))
    await s.deny_both_ways(rotated.secret)  # the oldest: unknown now
    await s.deny_both_ways(first.secret)  # ended at once by the second rotation

    typo = rpm.secret[:-1] + ("A" if rpm.secret[-1] != "A" else "B")
    s.secrets.append(typo)
    await s.deny_both_ways(typo)  # malformed
    await s.deny_both_ways("")  # missing
    await s.deny_both_ways(rpm.secret + "\x00")  # control character
    await s.deny_both_ways(LEGACY + "x")  # unknown legacy
    s.secrets.append(LEGACY + "x")

    await asyncio.sleep(max(0.0, expiring.key.expires_at.seconds - time.time() + 0.2))
    await s.deny_both_ways(expiring.secret)
    return second


async def _bad_input(s: Session, key: kpb.RotateKeySecretResponse, secret: str) -> None:
    """A secret where it does not belong, on every RPC."""
    k, a, kid = s.keys, s.admission, key.key.key_id
    await s.fails(k.CreateKey(kpb.CreateKeyRequest(name=secret + "\x01")))
    await s.fails(k.CreateKey(kpb.CreateKeyRequest(name="n", workspace=secret + " x")))
    await s.fails(k.CreateKey(kpb.CreateKeyRequest(name="n", labels={secret + "\x02": "v"})))
    await s.fails(k.CreateKey(kpb.CreateKeyRequest(
        name="n", limits=kpb.Limits(cost_limit_usd=secret))))
    await s.fails(k.CreateKey(kpb.CreateKeyRequest(name="n", limits=kpb.Limits(token_limit=-1),
                                                   project=secret + "\x03")))
    await s.fails(k.ImportLegacyKey(kpb.ImportLegacyKeyRequest(secret=secret, name="ours")))
    await s.fails(k.ImportLegacyKey(kpb.ImportLegacyKeyRequest(secret=LEGACY, name="again")))
    await s.fails(k.ImportLegacyKey(kpb.ImportLegacyKeyRequest(secret=LEGACY + " ,", name="x")))
    await s.fails(k.GetKey(kpb.GetKeyRequest(key_id=secret)))
    await s.fails(k.GetKey(kpb.GetKeyRequest(key_id="key_" + "a" * 20)))  # NOT_FOUND
    await s.fails(k.ListKeys(kpb.ListKeysRequest(page_token=secret)))
    await s.fails(k.ListKeys(kpb.ListKeysRequest(page_size=-1, workspace=secret + "\x04")))
    await s.fails(k.UpdateKey(kpb.UpdateKeyRequest(key_id=secret)))
    await s.fails(k.UpdateKey(kpb.UpdateKeyRequest(
        key_id=kid, update_mask=FieldMask(paths=[secret]))))
    await s.fails(k.UpdateKey(kpb.UpdateKeyRequest(
        key_id=kid, name=secret + "\x05", update_mask=FieldMask(paths=["name"]))))
    await s.fails(k.RotateKeySecret(kpb.RotateKeySecretRequest(key_id=secret)))
    await s.fails(k.RotateKeySecret(kpb.RotateKeySecretRequest(key_id=kid, grace_period_s=-1)))
    await s.fails(k.EnableKey(kpb.EnableKeyRequest(key_id=secret)))
    await s.fails(k.DisableKey(kpb.DisableKeyRequest(key_id=secret)))
    await s.fails(k.DeleteKey(kpb.DeleteKeyRequest(key_id=secret)))
    await s.fails(k.GetKeyOverview(kpb.GetKeyOverviewRequest(key_id=secret)))
    await s.fails(k.ListAuditEntries(kpb.ListAuditEntriesRequest(key_id=secret)))
    await s.fails(k.ListAuditEntries(kpb.ListAuditEntriesRequest(page_token=secret)))
    await s.fails(k.ListEvents(kpb.ListEventsRequest(key_id=secret)))
    await s.fails(k.ListEvents(kpb.ListEventsRequest(after=secret)))
    # RecordUsage and ReleaseReservation with odd input.
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=secret, request_id="r")))
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=kid, request_id="r",
                                                       cost_usd=secret)))
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=kid, request_id=secret + "\n")))
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=kid, request_id=secret * 5)))
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=kid, request_id="r2",
                                                       prompt_tokens=-5)))
    await s.fails(a.RecordUsage(adm.RecordUsageRequest(key_id=kid, request_id="r3",
                                                       model=key.secret)))
    await s.fails(a.ReleaseReservation(adm.ReleaseReservationRequest(key_id=secret,
                                                                     request_id="r")))
    await s.fails(a.ReleaseReservation(adm.ReleaseReservationRequest(
        key_id=kid, request_id=secret + "\x00")))
    await s.fails(a.Authorize(adm.AuthorizeRequest(secret=secret, request_id=secret + "\n")))
    await s.fails(a.Authorize(adm.AuthorizeRequest(
        secret=secret, request_id="e1",
        estimate=adm.Estimate(model=key.secret, prompt_tokens=-1))))


async def _store_unavailable(s: Session, store: StoreProcess, secrets: list[str]) -> None:
    """Every path while the store does not answer: UNAVAILABLE, Check 503."""
    # Stopped (SIGSTOP) until every call has failed, however slow the machine: no
    # call can outlast the stall and succeed by accident.
    assert store.process is not None
    store.process.send_signal(signal.SIGSTOP)
    try:
        for secret in secrets:
            await s.fails(s.admission.Authorize(adm.AuthorizeRequest(secret=secret), timeout=10))
            await s.deny_both_ways(secret)
        await s.fails(s.keys.CreateKey(kpb.CreateKeyRequest(name="during-pause"), timeout=10))
        await s.fails(s.keys.GetKey(kpb.GetKeyRequest(key_id="key_" + "a" * 20), timeout=10))
        await s.fails(s.admission.RecordUsage(adm.RecordUsageRequest(
            key_id="key_" + "a" * 20, request_id="p"), timeout=10))
    finally:
        store.process.send_signal(signal.SIGCONT)


async def _streams(s: Session) -> None:
    """The audit and events streams as an admin reads them."""
    audit = await s.call(s.keys.ListAuditEntries(kpb.ListAuditEntriesRequest(page_size=500)))
    events = await s.call(s.keys.ListEvents(kpb.ListEventsRequest(after="0", page_size=500)))
    assert audit.entries and events.events
    await s.call(s.keys.ListKeys(kpb.ListKeysRequest(page_size=500)))


def _admin(target: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.admin.cli", "--target", target, *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIGW_")},
    )
    return result.stdout + result.stderr


def _cli_outputs(target: str, key_id: str, secret: str) -> list[str]:
    """aigw-admin: tables, JSON, usage errors and failed calls, a secret in the wrong place."""
    runs = [
        ("keys", "list"), ("-o", "json", "keys", "list"), ("keys", "overview", key_id),
        ("keys", "get", key_id), ("audit", "list"), ("-o", "json", "events", "list"),
        ("keys", "get", secret), ("keys", "overview", LEGACY),
        ("keys", "create", "--name", "n", "--cost-limit-usd", secret),
        ("keys", "create", "--name", "n", "--reset-period", LEGACY),
        ("keys", "create", "--name", "n", LEGACY),
        ("keys", "import-legacy", "--secret", LEGACY, "--name", "dup"),
        ("keys", "delete", secret),
    ]
    return [_admin(target, *args) for args in runs]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def _hits(needles: list[str], texts: list[str]) -> list[tuple[str, str]]:
    return [(n[-6:], t[:160]) for n in needles for t in texts if n and n in t]


async def test_no_rejection_or_error_path_leaks_a_secret_anywhere(tmp_path: Path) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "store").start()
    prefix = "leak"
    metrics_ports = [free_port(), free_port()]
    sidecars = [
        SidecarProcess(
            store.url, prefix, log_path=tmp_path / f"sidecar-{fmt}.log",
            extra_args=["--log-level", "DEBUG", "--log-format", fmt,
                        "--metrics-listen", f"127.0.0.1:{port}"],
        )
        for fmt, port in zip(("json", "text"), metrics_ports, strict=True)
    ]
    redis = Redis.from_url(store.url, decode_responses=True)
    sessions: list[Session] = []
    cli: list[str] = []
    scrapes: list[str] = []
    try:
        for sidecar in sidecars:
            sidecar.start()
        await _imported_legacy(sidecars[0].target)
        for sidecar in sidecars:
            async with grpc.aio.insecure_channel(sidecar.target) as channel:
                s = Session(channel, sidecar.extra_args[3])
                sessions.append(s)
                plain = await _deny_reasons(s)
                await _bad_input(s, plain, plain.secret)
                await _bad_input(s, plain, LEGACY)
                assert (await s.call(s.admission.Authorize(
                    adm.AuthorizeRequest(secret=LEGACY)))).allowed
                await _store_unavailable(s, store, [plain.secret, LEGACY])
                await _streams(s)
                scrapes.append(await asyncio.to_thread(_scrape, metrics_ports[len(scrapes)]))
        cli = await asyncio.to_thread(
            _cli_outputs, sidecars[0].target, plain.key.key_id, plain.secret)
        names = await key_names(redis, prefix)
        stored = await every_stored_text(redis, prefix)
    finally:
        await redis.aclose()
        codes = [sidecar.stop() for sidecar in sidecars]
        store.stop()
    assert codes == [0, 0]

    secrets = [LEGACY, *(secret for s in sessions for secret in s.secrets)]
    hashes = [hash_secret(secret) for secret in secrets]
    logs = [(tmp_path / f"sidecar-{fmt}.log").read_text(errors="replace").splitlines()
            for fmt in ("json", "text")]
    replies = [text for s in sessions for text in s.seen]
    surfaces = {
        "log (JSON)": logs[0], "log (text)": logs[1], "gRPC replies, errors, Check": replies,
        "metrics": scrapes, "aigw-admin": cli, "Redis key names": names,
        "Redis values (keys, counters, audit, events)": stored,
    }
    hits = {where: _hits(secrets, texts) for where, texts in surfaces.items()}
    hits["Redis key names (hashes)"] = _hits(hashes, names)
    print("\nleak search: " + ", ".join(
        f"{where}: {len(texts)} texts, {len(hits[where])} hits" for where, texts in surfaces.items()
    ) + f"; {len(secrets)} secrets, {len(hits['Redis key names (hashes)'])} hash hits in names")

    found = {where: found for where, found in hits.items() if found}
    assert found == {}, json.dumps(found, indent=1)
    # Each path really ran: every deny reason and HTTP status, the error statuses.
    reasons = set(adm.DenyReason.values()) - {adm.DENY_REASON_UNSPECIFIED}
    assert all(s.denials >= reasons for s in sessions), [reasons - s.denials for s in sessions]
    assert all(s.http >= {401, 403, 429, 503} for s in sessions)
    statuses = {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "UNAVAILABLE"}
    assert all(s.errors >= statuses for s in sessions), [s.errors for s in sessions]
    assert all(len(lines) > 50 for lines in logs) and len(stored) > 50
    assert "aigw_decisions_total" in scrapes[0]


async def _imported_legacy(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await keys_pb2_grpc.KeyManagementStub(channel).ImportLegacyKey(
            kpb.ImportLegacyKeyRequest(secret=LEGACY, name="legacy"), timeout=10)
