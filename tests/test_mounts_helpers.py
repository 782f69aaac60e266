"""Helpers of the mounts, downloads and caches tests: a loopback HTTP file server with scripted
answers (``ScriptedServer``), archive builders, a worker config on ``tmp_path``.

Holds no tests (its name keeps it among the mounts tests); imported by ``tests/test_mounts*.py`` and
``tests/test_downloads.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import threading
from collections import Counter
from pathlib import Path

from aiohttp import web

from tcworker.config import WorkerConfig


class ScriptedServer:
    """HTTP server on 127.0.0.1:0. ``files`` maps a path to bytes; ``script`` maps a path to a
    list of statuses answered first (``"hang"`` waits until the client gives up); ``hits`` counts
    requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.script: dict[str, list] = {}
        self.hits: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        steps = self.script.get(path)
        if steps:
            step = steps.pop(0)
            if step == "hang":
                await asyncio.sleep(3600)
            return web.Response(status=step, text=f"scripted {step}")
        if path not in self.files:
            return web.Response(status=404, text="no such file")
        return web.Response(body=self.files[path], content_type="application/octet-stream")

    async def start(self) -> "ScriptedServer":
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class ThreadedServer:
    """A :class:`ScriptedServer` on its own event loop in a thread (for sync ``tcworker exec`` tests)."""

    def __init__(self) -> None:
        self.server = ScriptedServer()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar.gz of ``{name: (data, mode)}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mounts_config(tmp_path: Path, **keys) -> WorkerConfig:
    """A worker config whose tasks, caches and downloads live under ``tmp_path``."""
    raw = {"tasksDir": str(tmp_path / "tasks"), "cachesDir": str(tmp_path / "caches"),
           "downloadsDir": str(tmp_path / "downloads"), "engines": ["native"],
           "requiredDiskSpaceMegabytes": 0, **keys}
    return WorkerConfig.from_mapping(raw, environ={})
