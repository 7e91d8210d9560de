"""A forwarding proxy in front of a node, for tests: a far master (media slowed down), or TLS
terminated in front of it, as nginx would."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
from aiohttp import web

from tests.test_cli import free_port

CHUNK, PAUSE = 64 * 1024, 0.05  # a slowed body's pace: about 1.3 MB/s


async def forwarding_proxy(target: str, *, slow_prefix: str | None = None,
                           tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Every request passed to `target` as it is; bodies of paths under `slow_prefix` at CHUNK
    per PAUSE. Returns the runner (clean it up after the nodes that use it stop) and the port."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.request(request.method, target + request.path_qs, headers=headers,
                                   data=await request.read()) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in ("transfer-encoding", "connection")})
            await response.prepare(request)
            slow = slow_prefix is not None and request.path.startswith(slow_prefix)
            while chunk := await upstream.content.read(CHUNK if slow else 1 << 20):
                await response.write(chunk)
                if slow:
                    await asyncio.sleep(PAUSE)  # the pace of a far link, not a wait for an event
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(lambda _: session.close())
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    return runner, port
