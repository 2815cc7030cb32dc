"""An admin token sent to a sidecar that has none configured: still served, never silently.

The call runs as anonymous (no token configured means an open, loopback-only
admin plane), but the reply says the token was ignored (gRPC trailing metadata,
HTTP response header ``aigw-admin-auth: none``), the sidecar logs it once, and the
audit trail records that a token was presented.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.api.v1 import keys_pb2_grpc
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.server.admin_auth import AUTH_NOTICE, TOKEN_IGNORED
from aigw_sidecar.settings import Settings

TOKEN = (("authorization", "Bearer a-token-nobody-configured-0123"),)


@pytest.fixture
async def open_sidecar(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Sidecar]:
    """No admin token configured, gRPC and HTTP on loopback."""
    settings = Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=0.5, admin_http_listen="127.0.0.1:0",
    )
    sidecar = await start(settings)
    yield sidecar
    await sidecar.stop()


@pytest.fixture
async def keys(open_sidecar: Sidecar) -> AsyncIterator[keys_pb2_grpc.KeyManagementStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{open_sidecar.port}") as channel:
        yield keys_pb2_grpc.KeyManagementStub(channel)


async def test_a_call_with_a_token_is_answered_with_the_notice(
    keys: keys_pb2_grpc.KeyManagementStub,
) -> None:
    call = keys.CreateKey(kpb.CreateKeyRequest(name="with-token"), metadata=TOKEN)
    await call
    assert AUTH_NOTICE in tuple(await call.trailing_metadata())


async def test_a_call_without_a_token_carries_no_notice(
    keys: keys_pb2_grpc.KeyManagementStub,
) -> None:
    call = keys.CreateKey(kpb.CreateKeyRequest(name="without-token"))
    await call
    assert AUTH_NOTICE not in tuple(await call.trailing_metadata() or ())


async def test_a_failed_call_with_a_token_still_carries_the_notice(
    keys: keys_pb2_grpc.KeyManagementStub,
) -> None:
    call = keys.GetKey(kpb.GetKeyRequest(key_id="key_" + "0" * 20), metadata=TOKEN)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert AUTH_NOTICE in tuple(failed.value.trailing_metadata())


async def test_the_audit_entry_says_a_token_was_presented_but_none_is_configured(
    keys: keys_pb2_grpc.KeyManagementStub,
) -> None:
    with_token = await keys.CreateKey(kpb.CreateKeyRequest(name="audited"), metadata=TOKEN)
    without = await keys.CreateKey(kpb.CreateKeyRequest(name="audited-2"))
    trail = await keys.ListAuditEntries(kpb.ListAuditEntriesRequest())
    principal = {e.key_id: e.principal for e in trail.entries}
    assert principal[with_token.key.key_id] == TOKEN_IGNORED
    assert principal[without.key.key_id] == "anonymous"


async def test_the_sidecar_logs_the_first_ignored_token_once(
    keys: keys_pb2_grpc.KeyManagementStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aigw_sidecar.server.admin_auth")
    for _ in range(3):
        await keys.ListKeys(kpb.ListKeysRequest(), metadata=TOKEN)
    warnings = [r for r in caplog.records if r.name == "aigw_sidecar.server.admin_auth"
                and "has none configured" in r.getMessage()]
    assert len(warnings) == 1
    assert "a-token-nobody-configured" not in caplog.text


async def test_the_http_api_answers_a_token_with_the_notice_header(open_sidecar: Sidecar) -> None:
    assert open_sidecar.admin_http is not None
    url = f"http://127.0.0.1:{open_sidecar.admin_http.port}/v1/keys"
    name, value = AUTH_NOTICE
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": "Bearer nobody-0123456789"}) as r:
            assert r.status == 200 and r.headers.get(name) == value
        async with session.get(url + "/key_" + "0" * 20,
                               headers={"Authorization": "Bearer nobody-0123456789"}) as r:
            assert r.status == 404 and r.headers.get(name) == value
        async with session.get(url) as r:
            assert r.status == 200 and name not in r.headers
