"""Fixtures of the emulator tests: the shared ``queue_emulator`` fixture plus client helpers."""

from __future__ import annotations

import pytest_asyncio
import taskcluster.aio

from tcworker.testing.fixtures import make_task, queue_emulator  # noqa: F401

QUEUE_ID = "proj-test/python-worker"
WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


@pytest_asyncio.fixture
async def session():
    async with taskcluster.aio.createSession() as s:
        yield s


class Clients:
    """Official-client factories bound to one emulator and one aiohttp session."""

    def __init__(self, emu, session):
        self.emu, self.session = emu, session

    def queue(self, creds=None, **opts):
        return taskcluster.aio.Queue(self.emu.client_options(creds, **opts), session=self.session)

    def object(self, creds=None, **opts):
        return taskcluster.aio.Object(self.emu.client_options(creds, **opts), session=self.session)

    def purge_cache(self, creds=None, **opts):
        return taskcluster.aio.PurgeCache(self.emu.client_options(creds, **opts), session=self.session)

    def index(self, creds=None, **opts):
        return taskcluster.aio.Index(self.emu.client_options(creds, **opts), session=self.session)

    def worker_queue(self, **opts):
        return self.queue(self.emu.worker_credentials(), **opts)

    async def claim(self, **opts):
        """Claim one task as the test worker → the claim dict (asserts one was claimed)."""
        r = await self.worker_queue(**opts).claimWork(QUEUE_ID, WORKER)
        assert len(r["tasks"]) == 1, r
        return r["tasks"][0]


@pytest_asyncio.fixture
async def clients(queue_emulator, session):  # noqa: F811
    return Clients(queue_emulator, session)
