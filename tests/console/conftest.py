"""The console in a real headless Chromium, against a real sidecar process.

A sidecar subprocess (``aigw-sidecar serve``) per module on the session's Valkey
with ``--admin-http-listen`` on a free port, with and without an admin token;
one Chromium (Debian's ``chromium`` and ``chromium-driver``) for the session,
driven by Selenium. Tests authorize over gRPC with the secrets the pages show.
Every page a test visits is saved to ``tests/console/screenshots/`` (ignored by
git) for people to look at.
"""

from __future__ import annotations

import http.client
import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from aigw_sidecar.api.v1 import admission_pb2, admission_pb2_grpc, keys_pb2, keys_pb2_grpc
from tests.servers import SidecarProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TOKEN = "console-admin-token-0123456789"
DESKTOP = (1280, 900)
_prefixes = itertools.count()


@dataclass
class Sidecar:
    """A sidecar process with its console's address and gRPC stubs."""

    process: SidecarProcess
    http_port: int
    channel: grpc.Channel
    token: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admission(self) -> admission_pb2_grpc.AdmissionStub:
        return admission_pb2_grpc.AdmissionStub(self.channel)

    @property
    def keys(self) -> keys_pb2_grpc.KeyManagementStub:
        return keys_pb2_grpc.KeyManagementStub(self.channel)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def create_key(self, name: str = "", **limits: Any) -> keys_pb2.CreateKeyResponse:
        extra = {k: limits.pop(k) for k in ("project", "environment") if k in limits}
        reply: keys_pb2.CreateKeyResponse = self.keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                name=name or unique("key"), limits=keys_pb2.Limits(**limits), **extra
            ),
            metadata=self.metadata,
        )
        return reply

    def import_legacy(self, name: str, **fields: Any) -> tuple[keys_pb2.ApiKey, str]:
        secret = f"sk-legacy-{uuid.uuid4().hex}"
        reply = self.keys.ImportLegacyKey(
            keys_pb2.ImportLegacyKeyRequest(secret=secret, name=name, **fields),
            metadata=self.metadata,
        )
        return reply.key, secret

    def authorize(self, secret: str) -> admission_pb2.AuthorizeResponse:
        reply: admission_pb2.AuthorizeResponse = self.admission.Authorize(
            admission_pb2.AuthorizeRequest(secret=secret, request_id=uuid.uuid4().hex)
        )
        return reply

    def use(self, secret: str, *, tokens: int, cost_micro_usd: int, model: str) -> None:
        """One admitted request and its usage report."""
        request_id = uuid.uuid4().hex
        decision = self.admission.Authorize(
            admission_pb2.AuthorizeRequest(secret=secret, request_id=request_id)
        )
        assert decision.allowed, decision
        self.admission.RecordUsage(admission_pb2.RecordUsageRequest(
            key_id=decision.key_id, request_id=request_id, prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2, cost_micro_usd=cost_micro_usd, model=model,
        ))


def deny_reason(reply: admission_pb2.AuthorizeResponse) -> str:
    return str(admission_pb2.DenyReason.Name(reply.deny_reason))


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def start_sidecar(valkey_url: str, workdir: Path, token: str = "") -> Sidecar:
    http_port = free_port()
    process = SidecarProcess(
        valkey_url, f"console{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        extra_args=["--admin-http-listen", f"127.0.0.1:{http_port}", "--data-dir",
                    str(workdir)],
        log_path=workdir / "sidecar.log",
        env={"AIGW_ADMIN_TOKEN": token} if token else {},
    ).start()
    return Sidecar(process, http_port, grpc.insecure_channel(process.target), token)


def stop_sidecar(sidecar: Sidecar) -> None:
    sidecar.channel.close()
    sidecar.process.stop()


@pytest.fixture(scope="module")
def open_sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """No admin token: the console serves loopback clients with no login."""
    sidecar = start_sidecar(valkey_url, tmp_path_factory.mktemp("console-open"))
    yield sidecar
    stop_sidecar(sidecar)


@pytest.fixture(scope="module")
def token_sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """An admin token configured: the console needs a login."""
    sidecar = start_sidecar(valkey_url, tmp_path_factory.mktemp("console-token"), TOKEN)
    yield sidecar
    stop_sidecar(sidecar)


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@dataclass
class Ui:
    """The browser on one sidecar's console, for one test (its screenshots named after it)."""

    driver: WebDriver
    base: str  # http://127.0.0.1:<port>
    test_name: str
    shots: list[Path] = field(default_factory=list)

    def visit(self, path: str, shot: str = "") -> None:
        self.driver.get(self.base + path)
        self.shot(shot or path.strip("/").replace("/", "-") or "root")

    def shot(self, name: str, width: int = DESKTOP[0]) -> Path:
        """A full-page screenshot of what the browser shows now."""
        SCREENSHOTS.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]
        path = SCREENSHOTS / f"{self.test_name}-{len(self.shots) + 1:02d}-{safe}.png"
        self.driver.set_window_size(width, DESKTOP[1])
        # The window includes the browser's own bars: grow it by the page's hidden part.
        inner, height = self.driver.execute_script(
            "return [window.innerHeight, document.documentElement.scrollHeight]"
        )
        self.driver.set_window_size(width, min(DESKTOP[1] + max(int(height - inner), 0), 8000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*DESKTOP)
        self.shots.append(path)
        return path

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, text: str) -> None:
        box = self.find(css)
        box.clear()
        box.send_keys(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def click_link(self, text: str, within: str = "main") -> None:
        self.find(within).find_element(By.LINK_TEXT, text).click()

    def wait(self, condition: Any, timeout_s: float = 10) -> Any:
        return WebDriverWait(self.driver, timeout_s).until(condition)

    def wait_for(self, css: str) -> WebElement:
        element: WebElement = self.wait(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )
        return element

    @property
    def path(self) -> str:
        return str(self.driver.current_url).removeprefix(self.base)

    @property
    def text(self) -> str:
        return str(self.find("body").text)


def new_ui(browser: WebDriver, base: str, test_name: str) -> Ui:
    """The browser on the console at ``base``, with no cookies."""
    browser.set_window_size(*DESKTOP)
    browser.get(f"{base}/console/static/console.css")
    browser.delete_all_cookies()
    return Ui(browser, base, test_name)


@pytest.fixture
def ui(browser: WebDriver, open_sidecar: Sidecar, request: pytest.FixtureRequest) -> Ui:
    """The console without an admin token (no login), in a browser with no cookies."""
    return new_ui(browser, open_sidecar.base, request.node.name)


@pytest.fixture
def token_ui(browser: WebDriver, token_sidecar: Sidecar, request: pytest.FixtureRequest) -> Ui:
    """The console with an admin token configured, not signed in."""
    return new_ui(browser, token_sidecar.base, request.node.name)


def secret_shown(ui: Ui) -> str:
    value = ui.wait_for("input#secret").get_attribute("value")
    assert value
    return str(value)


def create_in_page(ui: Ui, name: str, **fields: str) -> str:
    """From the keys list, fill the create form (toggling each limit given); the secret shown."""
    ui.visit("/console/keys", "keys")
    ui.click_link("Create API key")
    ui.wait_for("form.key-form")
    ui.fill("#f-name", name)
    for name_of_field, value in fields.items():
        if name_of_field.startswith("limits."):
            kind = name_of_field.removeprefix("limits.").replace("_", "-")
            box = ui.find(f"#f-limits-{kind}-on")
            if not box.is_displayed():
                ui.click("details.advanced > summary")
            box.click()
            ui.fill(f"#f-limits-{kind}", value)
        elif name_of_field == "reset_period":
            Select(ui.find("#f-limits-reset-period")).select_by_value(value)
        else:
            ui.fill(f"#f-{name_of_field.replace('_', '-')}", value)
    ui.shot("create-filled")
    ui.find("form.key-form button[type=submit]").click()
    secret = secret_shown(ui)
    ui.shot("secret-shown")
    return secret


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def csrf_token(self) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.body)
        assert found, self.body[:500]
        return found.group(1)


@dataclass
class Http:
    """A plain HTTP client with a cookie jar of its own (no redirects followed)."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            text = response.read().decode()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    cookie = value.split(";", 1)[0]
                    key, _, content = cookie.partition("=")
                    self.cookies[key] = content
            return Reply(response.status, dict(response.getheaders()), text)
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, form, **kwargs)

    def sign_in(self, token: str) -> Reply:
        page = self.get("/console/login")
        return self.post("/console/login", {"csrf_token": page.csrf_token(), "token": token,
                                            "next": "/console/keys"})
