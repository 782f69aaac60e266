"""pytest fixtures for tests that need a Taskcluster deployment: import them in a conftest.py.

Lives here: ``queue_emulator`` (a started :class:`~tcworker.testing.queue.QueueEmulator` with a
short long-poll and schema validation on when ``../shared`` is found), ``make_task`` (its task
factory), and :func:`require_shared` (skip without ``../shared``, fail under ``CI=true``).

Usage in ``conftest.py``::

    from tcworker.testing.fixtures import queue_emulator, make_task  # noqa: F401

Does not live here: the emulator itself.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from .queue import QueueEmulator, find_shared_dir


def require_shared() -> pathlib.Path:
    """The shared folder; ``pytest.skip`` when absent (``find_shared_dir`` raises under CI)."""
    shared = find_shared_dir()
    if shared is None:
        pytest.skip("../shared not found (set TCWORKER_SHARED)")
    return shared


@pytest_asyncio.fixture
async def queue_emulator() -> AsyncIterator[QueueEmulator]:
    """A running emulator: long-poll 0.5 s, schema validation on when the schemas exist.
    On teardown it fails the test if a response broke its schema or a handler crashed."""
    async with QueueEmulator(long_poll_s=0.5, validate_schemas=None) as emu:
        yield emu


@pytest.fixture
def make_task(queue_emulator: QueueEmulator) -> Callable[..., dict]:
    """``make_task(**overrides) -> dict``: a valid task definition for ``queue_emulator``."""
    return queue_emulator.make_task
