"""The simulated schema registry in a process of its own, as at a site.

``python -m bench.registry`` prints ``ready URL`` once it serves and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio

from bench.harness import until_stopped
from sim.http import serve_app
from sim.registry import create_registry_app

__all__ = ["serve"]


async def serve() -> None:
    async with serve_app(create_registry_app(), name="bench-registry") as url:
        print(f"ready {url}", flush=True)
        await until_stopped()


if __name__ == "__main__":
    asyncio.run(serve())
