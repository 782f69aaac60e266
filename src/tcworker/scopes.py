"""Scope checks of a task's payload against ``task.scopes`` (``peer-workers.md`` 1.8).

:func:`satisfies` is Taskcluster's rule (exact match, or a held scope ending in ``*`` that is a
prefix of the required one). :func:`require_scopes` raises ``MalformedPayload`` listing the
required and the given scopes, as generic-worker does. :func:`os_group_scopes` names the scopes
``osGroups`` needs: ``generic-worker:os-group:<workerPoolId>/<group>``.

Known limit: ``assume:<role>`` scopes in ``task.scopes`` are not expanded (generic-worker asks the
Auth service to expand them); a task must hold the scopes themselves, or a ``*`` prefix of them.

What does not live here: the features that need scopes (they call these), payload shape checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tcworker.errors import MalformedPayload


def satisfies(held: Iterable[str], required: str) -> bool:
    """True when one of ``held`` grants ``required`` (equal, or a ``*``-ended prefix of it)."""
    return any(s == required or (s.endswith("*") and required.startswith(s[:-1])) for s in held)


def require_scopes(required: Sequence[str], task: dict, what: str) -> None:
    """Check that ``task["scopes"]`` grant every scope in ``required``.

    Args:
        required: scopes the payload needs.
        task: the task definition (its ``scopes``, a list of strings, may be missing).
        what: the payload part asking for them, for the message (``payload.osGroups``).

    Raises:
        MalformedPayload: some scope is missing → exception / malformed-payload; the message
            lists the required scopes and the task's scopes.
    """
    given = [s for s in task.get("scopes") or [] if isinstance(s, str)]
    missing = [s for s in required if not satisfies(given, s)]
    if not missing:
        return
    lines = [f"{what}: task.scopes do not satisfy the scopes it requires", "Required scopes:"]
    lines += [f"  {s}" for s in required]
    lines.append("Given scopes (task.scopes):")
    lines += [f"  {s}" for s in given] or ["  (none)"]
    lines.append("Missing: " + ", ".join(missing))
    raise MalformedPayload("\n".join(lines))


def os_group_scopes(groups: Iterable[str], worker_pool_id: str) -> list[str]:
    """``generic-worker:os-group:<workerPoolId>/<group>`` for each group, in order."""
    return [f"generic-worker:os-group:{worker_pool_id}/{group}" for group in groups]
