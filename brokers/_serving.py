"""Serving an ASGI app on a socket we bind, inside the caller's event loop."""

from __future__ import annotations

import socket
from typing import Any, Final

import uvicorn

from agentfn._asgi import ASGIApp

__all__ = ["serve_in_loop"]

#: How every events endpoint of the broker side is served (the ingress, the dead-letter sink):
#: no Date/Server headers to write per answer, keep-alive outliving a broker's idle gaps, and
#: no proxy headers honoured (nothing here sits behind a proxy that sets them).
_EVENT_SERVER: Final[dict[str, Any]] = {
    "lifespan": "off",
    "log_level": "warning",
    "access_log": False,
    "http": "httptools",
    "date_header": False,
    "server_header": False,
    "timeout_keep_alive": 30,
    "proxy_headers": False,
}


async def serve_in_loop(
    app: ASGIApp, host: str, port: int, **options: Any
) -> tuple[uvicorn.Server, int]:
    """Start uvicorn on ``host:port`` (0: any free port); the server and the bound port.

    Driven step by step (``startup``/``shutdown``, not ``serve()``) so the caller's loop and
    signal handlers stay its own; stop with ``server.should_exit = True`` and
    ``await server.shutdown()``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for
    # such sockets, and without it every answer waits out Nagle + delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(options.pop("backlog", 2048))
    sock.setblocking(False)
    config = uvicorn.Config(app, **{**_EVENT_SERVER, **options})
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    return server, int(sock.getsockname()[1])
