"""A reverse proxy written the usual way with aiohttp: its web server in front, one shared
``ClientSession`` behind, with a keep-alive connector to the upstream.

The ``aiohttp-proxy`` row of ``bench/proxy.py``; aiohttp is a benchmark-only dependency,
installed into the benchmark's virtualenv. Like Bastion, it runs on uvloop.

Usage: ``python -m bench.apps.aiohttp_proxy --bind 127.0.0.1:PORT --upstream http://HOST:PORT``.
"""

import argparse

import aiohttp
import uvloop
from aiohttp import web

# What the proxy must not pass on from the upstream's response (RFC 9110 section 7.6.1),
# and the framing aiohttp writes itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def build(upstream: str) -> web.Application:
    app = web.Application()
    base = upstream.rstrip("/")

    async def start(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        body = await request.read() if request.can_read_body else None
        async with session.request(
            request.method, base + request.rel_url.raw_path_qs, headers=headers, data=body
        ) as response:
            payload = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=response.status, headers=out, body=payload)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    web.run_app(
        build(args.upstream),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
