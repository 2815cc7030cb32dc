"""Budget overshoot under a concurrent burst, with and without estimates, on loopback.

Not a test: run with ``make bench-overshoot`` (or ``python -m tests.bench.overshoot``).
Starts its own Valkey, an in-process sidecar, the mock OpenAI upstream and two
Envoys on clients/envoy/envoy.yaml as shipped: one as is (ext_authz sends the
request body, so every request reserves its estimate), one without
``with_request_body`` and without the routes' ``endpoint`` (the sidecar reads no
body: no estimate, admission only checks that usage + reservations are below the
limit, as before issue 5). Envoy's access log settles both; the client asks for
the usage itself (``stream_options.include_usage``), so both are charged it.

Each round creates a fresh key with a token limit and fires ``--requests``
concurrent streaming chat completions with ``max_tokens`` 300 that really use
291 tokens (11 prompt + 280 completion). It reports requests admitted against
what the budget can hold, and settled usage against the limit. Bounded by
``--rounds`` and ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import openai

from aigw_sidecar.api.v1 import keys_pb2, keys_pb2_grpc
from aigw_sidecar.bootstrap import start
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.embedded import find_server_binary
from tests.e2e.envoy_process import EnvoyProcess, render_shipped_config
from tests.e2e.upstream import PROMPT_TOKENS, MockUpstream
from tests.servers import StoreProcess

MAX_TOKENS = 300
COMPLETION_TOKENS = 280
USED_PER_REQUEST = PROMPT_TOKENS + COMPLETION_TOKENS
_BODY_BLOCK = (
    "              with_request_body:\n"
    "                max_request_bytes: 1048576\n"
    "                allow_partial_message: false\n"
    "                pack_as_bytes: true\n"
)
_ENDPOINT_RE = re.compile(r"context_extensions: \{endpoint: \w+\}")


def without_estimates(config: str) -> str:
    """The shipped config with ext_authz's with_request_body and the routes' endpoints removed."""
    if _BODY_BLOCK not in config or not _ENDPOINT_RE.search(config):
        raise ValueError("with_request_body block or endpoints not found in the shipped config")
    return _ENDPOINT_RE.sub("context_extensions: {}", config.replace(_BODY_BLOCK, ""))


async def burst(base_url: str, secret: str, requests: int) -> int:
    """Fire ``requests`` concurrent streams; the number admitted."""

    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            stream = await client.chat.completions.create(
                model="mock", messages=[{"role": "user", "content": "Say hello"}],
                stream=True, max_tokens=MAX_TOKENS, stream_options={"include_usage": True},
                extra_headers={"x-mock-completion-tokens": str(COMPLETION_TOKENS)},
            )
        except openai.RateLimitError:
            return False
        async for _ in stream:
            pass
        return True

    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=30
    ) as client:
        return sum(await asyncio.gather(*(one(client) for _ in range(requests))))


async def settled_usage(stub: keys_pb2_grpc.KeyManagementStub, key_id: str) -> int:
    """The key's usage once settlement is over: nothing reserved, and no change for
    0.5 s (the access log flushes every 100 ms; a key without estimates reserves
    nothing to wait for)."""
    deadline = time.monotonic() + 10
    last, stable_since = -1, time.monotonic()
    while True:
        reply = await stub.GetKeyOverview(keys_pb2.GetKeyOverviewRequest(key_id=key_id))
        ov = reply.overview
        if ov.tokens.used != last:
            last, stable_since = ov.tokens.used, time.monotonic()
        settled = ov.open_reservations == 0 and time.monotonic() - stable_since >= 0.5
        if settled or time.monotonic() > deadline:
            return int(ov.tokens.used)
        await asyncio.sleep(0.05)


async def run(rounds: int, requests: int, token_limit: int) -> dict[str, list[dict[str, int]]]:
    with tempfile.TemporaryDirectory(prefix="aigw-overshoot-") as tmp:
        work = Path(tmp)
        store = StoreProcess("valkey", find_server_binary(), work / "valkey").start()
        upstream = MockUpstream().start()
        sidecar = await start(Settings(
            listen="127.0.0.1:0", redis_url=store.url, key_prefix="overshoot",
            data_dir=work, shutdown_grace_s=0.5,
        ))
        shipped = render_shipped_config(sidecar.port, upstream.port)
        envoys = {
            "with estimates": EnvoyProcess(shipped, work / "with"),
            "without estimates": EnvoyProcess(without_estimates(shipped), work / "without"),
        }
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}")
        stub = keys_pb2_grpc.KeyManagementStub(channel)
        results: dict[str, list[dict[str, int]]] = {name: [] for name in envoys}
        try:
            for envoy in envoys.values():
                envoy.start()
            for _ in range(rounds):
                for name, envoy in envoys.items():
                    created = await stub.CreateKey(keys_pb2.CreateKeyRequest(
                        name=f"overshoot-{uuid.uuid4().hex[:10]}",
                        limits=keys_pb2.Limits(token_limit=token_limit),
                    ))
                    base_url = f"http://127.0.0.1:{envoy.ports['llm_gateway']}"
                    admitted = await burst(base_url, created.secret, requests)
                    used = await settled_usage(stub, created.key.key_id)
                    results[name].append({"admitted": admitted, "settled_tokens": used})
        finally:
            for envoy in envoys.values():
                envoy.stop()
            await channel.close()
            await sidecar.stop()
            upstream.stop()
            store.stop()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30, help="concurrent requests per burst")
    parser.add_argument("--token-limit", type=int, default=3000)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.requests, args.token_limit))
    fits = args.token_limit // USED_PER_REQUEST
    print(f"budget {args.token_limit} tokens; each request uses {USED_PER_REQUEST} "
          f"(max_tokens {MAX_TOKENS}), so {fits} fit; burst of {args.requests}")
    summary = {}
    for name, rounds in results.items():
        admitted = [r["admitted"] for r in rounds]
        used = [r["settled_tokens"] for r in rounds]
        worst = max(used)
        summary[name] = {"admitted": admitted, "settled_tokens": used,
                         "worst_overshoot_pct": round(100 * max(0, worst - args.token_limit)
                                                      / args.token_limit, 1)}
        print(f"{name:>18}: admitted {admitted} (budget holds {fits}); settled tokens {used} "
              f"vs limit {args.token_limit}; worst overshoot "
              f"{max(0, worst - args.token_limit)} tokens "
              f"({summary[name]['worst_overshoot_pct']}%)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
