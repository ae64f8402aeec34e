"""Serve a simulated service's ASGI app on 127.0.0.1 inside the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_app"]


@contextlib.asynccontextmanager
async def serve_app(app: ASGIApp, *, port: int = 0, name: str = "sim") -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port unless ``port`` is given); yield its base URL.

    The socket is bound before the server starts, so the URL is usable as soon as it is yielded.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it every small response waits ~40 ms on delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        app, log_level=logging.WARNING, access_log=False, lifespan="off", loop="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}-http")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
