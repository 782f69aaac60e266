"""``tcworker.testing``: tools for plugin and engine authors (see ``docs/testing.md``).

Lives here: re-exports only. The queue emulator is :mod:`tcworker.testing.queue`; pytest fixtures
are in :mod:`tcworker.testing.fixtures`; the chaos task mix and its invariants in
:mod:`tcworker.testing.chaos`.
"""

from .queue import QueueEmulator

__all__ = ["QueueEmulator"]
