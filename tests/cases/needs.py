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


CASE_GAPS: dict[str, str] = {}
"""Cases whose needs are all implemented but that need something their ``needs`` do not name;
reported as skipped with the reason (remove an entry when its gap is closed)."""


def missing_needs(needs: Iterable[str]) -> list[str]:
    """The needs of a case not in :data:`IMPLEMENTED_NEEDS`, in the case's order."""
    return [need for need in needs if need not in IMPLEMENTED_NEEDS]
