"""Generate ``aigw_client/aio.py`` from ``aigw_client/client.py``, the template of both.

    python clients/python/gen_aio.py          # rewrite aio.py
    python clients/python/gen_aio.py --check  # exit 1 when aio.py is stale

The async client is the blocking one with every public call awaited: the same
methods, arguments, conversions and docstrings, so the two never drift.
``tests/clients/test_client.py`` fails when aio.py differs from what this writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "aigw_client"
_CLASS_DOC = re.compile(
    r'class AigwClient:\n    """Blocking client of one sidecar listener\..*?"""\n', re.S
)
# (pattern, replacement), applied in order.
_RULES: tuple[tuple[str, str], ...] = (
    (r'\A"""The blocking client: one method per RPC, typed values in and out\."""',
     '"""The asyncio client (grpc.aio): the same methods as ``AigwClient``, awaitable."""'),
    (r"# The template of the async client: aio.py is generated from this file by\n"
     r"# clients/python/gen_aio.py \(a test fails when it is stale\), so their methods"
     r" never drift\.\n",
     "# Generated from client.py by clients/python/gen_aio.py: edit that file, then run it.\n"),
    (r"\bgrpc\.Channel\b", "grpc.aio.Channel"),
    (r"\bgrpc\.(secure_channel|insecure_channel)\(", r"grpc.aio.\1("),
    (r"(?m)^    def __enter__\(self\) -> AigwClient:",
     "    async def __aenter__(self) -> AsyncAigwClient:"),
    (r"(?m)^    def __exit__\(", "    async def __aexit__("),
    (r"(?m)^    def (?!__init__)", "    async def "),
    (r"(?m)^(\s+)self\.close\(\)$", r"\1await self.close()"),
    (r"(?m)^(\s+)self\._channel\.close\(\)$", r"\1await self._channel.close()"),
    (r"return self\._stubs\[name\]\(", "return await self._stubs[name]("),
    (r"(?<!def )self\._call\(", "await self._call("),
)


def generate(template: str) -> str:
    text, count = _CLASS_DOC.subn(
        'class AsyncAigwClient:\n'
        '    """asyncio client of one sidecar listener (grpc.aio); arguments as'
        ' ``AigwClient``."""\n',
        template,
    )
    if count != 1:
        raise SystemExit("gen_aio: the AigwClient class docstring changed; update gen_aio.py")
    for pattern, replacement in _RULES:
        text = re.sub(pattern, replacement, text)
    return text


def main(argv: list[str]) -> int:
    wanted = generate((PACKAGE / "client.py").read_text())
    target = PACKAGE / "aio.py"
    if "--check" in argv:
        if target.read_text() != wanted:
            print("aigw_client/aio.py is stale: run python clients/python/gen_aio.py",
                  file=sys.stderr)
            return 1
        return 0
    target.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
