"""Admin security: bearer tokens on KeyManagement, separate listeners, TLS, mTLS, audit."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.bootstrap import Sidecar, admin_authenticator, start
from aigw_sidecar.server.admin_auth import (
    UNAUTHENTICATED_MESSAGE,
    AdminAuthenticator,
    load_admin_tokens,
    parse_token_file,
)
from aigw_sidecar.server.listeners import is_local_address
from aigw_sidecar.settings import Settings, parse_settings
from aigw_sidecar.store.keyspace import Keyspace
from tests.certs import Certs, make_certs

TOKEN = "adm-0123456789abcdef-token"
OPS_TOKEN = "ops-fedcba9876543210-token"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _settings(valkey_url: str, key_prefix: str, tmp_path: Path, **kw: object) -> Settings:
    base = Settings(listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix,
                    data_dir=tmp_path, shutdown_grace_s=0.5)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _tls_settings(
    valkey_url: str, key_prefix: str, tmp_path: Path, certs: Certs, **kw: object
) -> Settings:
    """An admin token, and every listener on TLS with the server certificate of ``certs``."""
    return _settings(valkey_url, key_prefix, tmp_path, admin_token=TOKEN,
                     tls_cert_file=str(certs.server_cert), tls_key_file=str(certs.server_key),
                     **kw)


@pytest.fixture
async def secured(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Sidecar]:
    token_file = tmp_path / "admin-tokens"
    token_file.write_text(f"# admins\nalice {TOKEN}\nops-bot {OPS_TOKEN}\n")
    sidecar = await start(_settings(valkey_url, key_prefix, tmp_path,
                                    admin_token_file=str(token_file)))
    yield sidecar
    await sidecar.stop()


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_admin_call_without_token_is_unauthenticated(secured: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys_pb2_grpc.KeyManagementStub(channel).ListKeys(keys_pb.ListKeysRequest())
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == UNAUTHENTICATED_MESSAGE


async def test_admin_call_with_wrong_token_leaks_nothing_about_the_key(
    secured: Sidecar,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = keys_pb2_grpc.KeyManagementStub(channel)
        created = await stub.CreateKey(keys_pb.CreateKeyRequest(name="svc"),
                                       metadata=_auth(TOKEN))
        for wrong in (TOKEN[:-1], TOKEN + "x", "Basic " + TOKEN, ""):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetKey(keys_pb.GetKeyRequest(key_id=created.key.key_id),
                                  metadata=(("authorization", f"Bearer {wrong}"),))
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert err.value.details() == UNAUTHENTICATED_MESSAGE


async def test_data_plane_needs_no_admin_token(secured: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            keys_pb.CreateKeyRequest(name="proxy"), metadata=_auth(TOKEN))
        reply = await admission_pb2_grpc.AdmissionStub(channel).Authorize(
            adm_pb.AuthorizeRequest(secret=created.secret))
    assert reply.allowed


async def test_audit_trail_names_the_principal_and_never_the_secret(
    secured: Sidecar, valkey_url: str, key_prefix: str
) -> None:
    legacy_secret = "legacy-abcdefghijklmnop-1234"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = keys_pb2_grpc.KeyManagementStub(channel)
        created = await stub.CreateKey(keys_pb.CreateKeyRequest(name="audited"),
                                       metadata=_auth(TOKEN))
        key_id = created.key.key_id
        await stub.UpdateKey(
            keys_pb.UpdateKeyRequest(key_id=key_id, name="audited-2",
                                     update_mask={"paths": ["name"]}),
            metadata=_auth(OPS_TOKEN))
        await stub.DisableKey(keys_pb.DisableKeyRequest(key_id=key_id), metadata=_auth(TOKEN))
        await stub.EnableKey(keys_pb.EnableKeyRequest(key_id=key_id), metadata=_auth(TOKEN))
        await stub.DeleteKey(keys_pb.DeleteKeyRequest(key_id=key_id), metadata=_auth(TOKEN))
        await stub.ImportLegacyKey(
            keys_pb.ImportLegacyKeyRequest(secret=legacy_secret, name="old"),
            metadata=_auth(OPS_TOKEN))
        page = await stub.ListAuditEntries(keys_pb.ListAuditEntriesRequest(),
                                           metadata=_auth(TOKEN))
    actions = [(e.principal, e.action) for e in page.entries]
    assert actions == [
        ("ops-bot", "import_legacy_key"),
        ("alice", "delete_key"),
        ("alice", "enable_key"),
        ("alice", "disable_key"),
        ("ops-bot", "update_key"),
        ("alice", "create_key"),
    ]
    assert page.entries[4].detail == "name"
    redis = Redis.from_url(valkey_url, decode_responses=True)
    raw = await redis.xrange(Keyspace(key_prefix).audit)
    await redis.aclose()
    dump = repr(raw) + str(page)
    for secret in (created.secret, legacy_secret):
        assert secret not in dump
        assert secret[-12:] not in dump


async def test_audit_entries_filter_by_key_and_page(secured: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = keys_pb2_grpc.KeyManagementStub(channel)
        ids = []
        for name in ("a", "b", "c"):
            reply = await stub.CreateKey(keys_pb.CreateKeyRequest(name=name),
                                         metadata=_auth(TOKEN))
            ids.append(reply.key.key_id)
        only_b = await stub.ListAuditEntries(
            keys_pb.ListAuditEntriesRequest(key_id=ids[1]), metadata=_auth(TOKEN))
        first = await stub.ListAuditEntries(
            keys_pb.ListAuditEntriesRequest(page_size=2), metadata=_auth(TOKEN))
        rest = await stub.ListAuditEntries(
            keys_pb.ListAuditEntriesRequest(page_size=2, page_token=first.next_page_token),
            metadata=_auth(TOKEN))
    assert [e.key_id for e in only_b.entries] == [ids[1]]
    assert [e.key_id for e in first.entries] == [ids[2], ids[1]]
    assert [e.key_id for e in rest.entries] == [ids[0]]
    assert rest.next_page_token == ""


def test_token_file_lines_name_their_principal() -> None:
    tokens = parse_token_file(f"# c\n\n{TOKEN}\nbob {OPS_TOKEN}\n", "admin")
    auth = AdminAuthenticator(tokens)
    assert auth.principal_of([("authorization", f"Bearer {TOKEN}")]) == "admin"
    assert auth.principal_of([("authorization", f"bearer {OPS_TOKEN}")]) == "bob"
    assert auth.principal_of([("authorization", "Bearer nope")]) is None
    assert "fedcba" not in repr(tokens)


def test_short_admin_token_is_refused_at_startup() -> None:
    with pytest.raises(RuntimeError, match="at least 16"):
        load_admin_tokens("short", "", "admin")


def test_admin_token_comes_from_the_environment_and_is_not_in_repr() -> None:
    settings = parse_settings([], env={"AIGW_ADMIN_TOKEN": TOKEN})
    assert settings.admin_token == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize("address", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"])
def test_no_token_on_a_non_loopback_admin_address_refuses_to_start(address: str) -> None:
    with pytest.raises(RuntimeError, match="refusing to serve KeyManagement"):
        admin_authenticator(Settings(listen=address))


def test_no_token_on_an_abstract_unix_socket_refuses_to_start() -> None:
    # No file, so no permissions: any local user could call KeyManagement.
    with pytest.raises(RuntimeError, match="abstract socket"):
        admin_authenticator(Settings(listen="127.0.0.1:0", admin_listen="unix-abstract:aigw"))
    with pytest.raises(RuntimeError, match="refusing to serve KeyManagement"):
        admin_authenticator(Settings(listen="unix-abstract:aigw"))
    assert admin_authenticator(
        Settings(listen="127.0.0.1:0", admin_listen="unix-abstract:aigw", admin_token=TOKEN)
    ).enabled


def test_no_token_with_admin_plane_on_loopback_or_unix_socket_starts() -> None:
    assert not admin_authenticator(Settings(listen="0.0.0.0:1", admin_listen="unix:/x")).enabled
    assert is_local_address("127.0.0.1:50051")
    assert is_local_address("[::1]:50051")
    assert is_local_address("localhost:1")
    assert not is_local_address("0.0.0.0:50051")


async def test_admin_plane_on_its_own_unix_socket_is_not_served_on_the_data_port(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    socket_path = tmp_path / "admin.sock"
    sidecar = await start(_settings(valkey_url, key_prefix, tmp_path,
                                    admin_listen=f"unix:{socket_path}", admin_token=TOKEN))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as data:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await keys_pb2_grpc.KeyManagementStub(data).ListKeys(
                    keys_pb.ListKeysRequest(), metadata=_auth(TOKEN))
            assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as admin:
            reply = await keys_pb2_grpc.KeyManagementStub(admin).ListKeys(
                keys_pb.ListKeysRequest(), metadata=_auth(TOKEN))
        assert list(reply.keys) == []
    finally:
        await sidecar.stop()


async def _listed_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for reply in call:
        return {s.name for s in reply.list_services_response.service}
    raise AssertionError("no reflection reply")


async def test_each_listener_lists_only_the_services_it_serves(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    socket_path = tmp_path / "admin.sock"
    sidecar = await start(_settings(valkey_url, key_prefix, tmp_path,
                                    admin_listen=f"unix:{socket_path}", admin_token=TOKEN))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as data:
            listed = await _listed_services(data)
        assert "aigw.v1.Admission" in listed
        assert "aigw.v1.KeyManagement" not in listed
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as admin:
            assert "aigw.v1.KeyManagement" in await _listed_services(admin)
    finally:
        await sidecar.stop()


async def test_reflection_lists_and_describes_envoys_services_too(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """grpcurl can list and call Check with no .proto file: reflection describes it."""
    sidecar = await start(_settings(valkey_url, key_prefix, tmp_path, admin_token=TOKEN))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            listed = await _listed_services(channel)
            assert {"envoy.service.auth.v3.Authorization",
                    "envoy.service.accesslog.v3.AccessLogService"} <= listed
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="envoy.service.auth.v3.Authorization")]))
            files = []
            async for reply in call:
                files = list(reply.file_descriptor_response.file_descriptor_proto)
                break
        assert files, "no file declares envoy.service.auth.v3.Authorization"
        declared = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in files]
        methods = {(svc.name, m.name, m.input_type) for f in declared for svc in f.service
                   for m in svc.method}
        assert ("Authorization", "Check", ".aigw.envoy.v3.CheckRequest") in methods
        assert any(f.name.endswith("ext_authz.proto") for f in declared)  # its messages too
    finally:
        await sidecar.stop()


async def test_tls_listeners_accept_a_client_that_trusts_the_ca(
    valkey_url: str, key_prefix: str, tmp_path: Path, certs: Certs
) -> None:
    sidecar = await start(_tls_settings(valkey_url, key_prefix, tmp_path, certs))
    try:
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{sidecar.port}", creds) as channel:
            reply = await keys_pb2_grpc.KeyManagementStub(channel).ListKeys(
                keys_pb.ListKeysRequest(), metadata=_auth(TOKEN))
        assert list(reply.keys) == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await admission_pb2_grpc.AdmissionStub(plain).Authorize(
                    adm_pb.AuthorizeRequest(secret="x"), timeout=3)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await sidecar.stop()


async def test_mtls_data_plane_requires_a_client_certificate(
    valkey_url: str, key_prefix: str, tmp_path: Path, certs: Certs
) -> None:
    sidecar = await start(_tls_settings(valkey_url, key_prefix, tmp_path, certs,
                                        tls_client_ca_file=str(certs.ca)))
    target = f"localhost:{sidecar.port}"
    try:
        with_cert = grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes())
        async with grpc.aio.secure_channel(target, with_cert) as channel:
            reply = await admission_pb2_grpc.AdmissionStub(channel).Authorize(
                adm_pb.AuthorizeRequest(secret=""))
        assert not reply.allowed
        without_cert = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        async with grpc.aio.secure_channel(target, without_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await admission_pb2_grpc.AdmissionStub(channel).Authorize(
                    adm_pb.AuthorizeRequest(secret=""), timeout=3)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await sidecar.stop()
