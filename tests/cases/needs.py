"""The one place that says which case ``needs`` the pipeline implements: :data:`IMPLEMENTED_NEEDS`.

Each feature issue adds its need here when its feature lands (``mounts``, ``caches``, ``docker``,
``proxy``, ``chain-of-trust``, ...). A case needing anything else is reported as skipped, naming
the missing needs.

What does not live here: running cases (:mod:`caserun`), checking results (:mod:`expect`).
"""

from __future__ import annotations

from typing import Iterable

IMPLEMENTED_NEEDS: frozenset[str] = frozenset({"native", "queue", "fileserver", "mounts", "caches", "docker",
                                            "proxy", "chain-of-trust"})
"""Needs the runner can satisfy today (``native``: native engine; ``queue``: ``tcworker run``
against the emulator; ``fileserver``: ``{{fileserver}}`` on a loopback port)."""


NATIVE_ONLY_NEEDS: frozenset[str] = frozenset({"proxy"})
"""Implemented for the native engine only so far: a ``docker`` case needing one is skipped."""


def missing_needs(needs: Iterable[str]) -> list[str]:
    """The needs of a case not in :data:`IMPLEMENTED_NEEDS`, in the case's order."""
    needs = list(needs)
    docker = "docker" in needs
    return [need for need in needs if need not in IMPLEMENTED_NEEDS or (docker and need in NATIVE_ONLY_NEEDS)]
