"""The console with the real gateway: a key made in the page, used through Envoy with the
official OpenAI SDK, and that usage on the key's overview page.

The sidecar runs in-process (tests/e2e's gateway, with the admin HTTP listener on),
so the browser's blocking calls run in a thread while the event loop serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from selenium.webdriver.remote.webdriver import WebDriver

from tests.console.conftest import Ui, create_in_page, new_ui, unique
from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.test_usage_envoy import settled
from tests.e2e.upstream import MockUpstream

MODEL = "gpt-4o-mini"


@pytest_asyncio.fixture
async def console_gateway(valkey_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    upstream = MockUpstream().start()
    gateway = await open_gateway(valkey_url, upstream, tmp_path, admin_http_listen="127.0.0.1:0")
    yield gateway
    await close_gateway(gateway)
    upstream.stop()


def _overview_text(ui: Ui, name: str) -> str:
    ui.visit(f"/console/keys?name={name}", "list")
    ui.click_link("Overview", within="table.keys")
    ui.wait_for("table.usage-table")
    ui.shot("overview")
    return ui.text


async def test_a_key_made_in_the_console_works_through_envoy_and_its_usage_shows(
    console_gateway: Gateway, browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    assert console_gateway.sidecar.admin_http is not None
    base = f"http://127.0.0.1:{console_gateway.sidecar.admin_http.port}"
    ui = await asyncio.to_thread(new_ui, browser, base, request.node.name)
    name = unique("envoy")
    secret = await asyncio.to_thread(
        create_in_page, ui, name, **{"limits.cost_limit_usd": "1", "limits.token_limit": "50000"}
    )
    key_id = await asyncio.to_thread(lambda: ui.find("dl.facts code").text)
    async with console_gateway.client(secret) as client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=300,
            extra_headers={"x-mock-completion-tokens": "299"},
        )
    assert reply.usage is not None and reply.usage.completion_tokens == 299
    await settled(console_gateway, key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    text = await asyncio.to_thread(_overview_text, ui, name)
    # 11 prompt + 299 completion tokens, priced by the built-in table: 182 micro-USD.
    assert "310 tokens" in text and "50,000 tokens" in text
    assert "1 request, 11 prompt + 299 completion tokens" in text
    assert f"{MODEL} 1 310 $0.000182" in text
