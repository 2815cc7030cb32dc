"""The client reads the AIGW_ADMIN_* variables aigw-admin reads; explicit arguments win."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aigw_client import AigwClient, AuthenticationError
from aigw_client._transport import DEFAULT_TARGET, Connection

from tests.servers import SidecarProcess

TOKEN = "client-env-token-0123456789abcdef"


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("client-env")
    (folder / "tokens").write_text(f"env-tests {TOKEN}\n")
    proc = SidecarProcess(valkey_url, "client-env", extra_args=[
        "--admin-token-file", str(folder / "tokens"),
    ], log_path=folder / "sidecar.log").start()
    yield proc.target
    proc.stop()


def test_target_and_token_come_from_the_environment(
    sidecar: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGW_ADMIN_TARGET", sidecar)
    monkeypatch.setenv("AIGW_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("AIGW_ADMIN_TOKEN_FILE", raising=False)
    with AigwClient() as client:
        assert client.create_key("from-env").key.name == "from-env"


def test_a_token_file_is_read_like_aigw_admin_reads_it(
    sidecar: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(f"# the CI token\nci {TOKEN}\n")
    monkeypatch.setenv("AIGW_ADMIN_TARGET", sidecar)
    monkeypatch.setenv("AIGW_ADMIN_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("AIGW_ADMIN_TOKEN", "a-wrong-token-that-the-file-overrides")
    with AigwClient() as client:
        assert client.list_keys().keys is not None


def test_explicit_arguments_win(sidecar: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGW_ADMIN_TARGET", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("AIGW_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("AIGW_ADMIN_TOKEN_FILE", raising=False)
    with AigwClient(sidecar, admin_token="not-the-token-0123456789") as client:
        with pytest.raises(AuthenticationError):
            client.list_keys()


def test_without_variables_the_defaults_hold() -> None:
    conn = Connection.resolve(None, None, None, env={})
    assert (conn.target, conn.admin_token, conn.credentials) == (DEFAULT_TARGET, None, None)


def test_tls_comes_from_the_environment_too(tmp_path: Path) -> None:
    conn = Connection.resolve(None, None, None, env={"AIGW_ADMIN_TLS": "true"})
    assert isinstance(conn.credentials, grpc.ChannelCredentials)
