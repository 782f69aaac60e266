"""Scope checks of a task's payload against ``task.scopes`` (``peer-workers.md`` 1.4, 1.8).

:func:`satisfies` is Taskcluster's rule (exact match, or a held scope ending in ``*`` that is a
prefix of the required one). :func:`require_scopes` raises ``MalformedPayload`` listing the
required and the given scopes, as generic-worker does. :func:`os_group_scopes` names the scopes
``osGroups`` needs: ``generic-worker:os-group:<workerPoolId>/<group>``.

:func:`held_scopes` is what every check of a run holds against: ``task.scopes`` with their
``assume:<role>`` scopes expanded once per run through the Auth service (``auth.expandScopes``,
the worker's credentials), cached on ``run.expanded_scopes``. No call is made when the task holds
no ``assume:`` scope, nor under ``tcworker exec`` without a rootURL (the literal scopes count
then). A failed expansion (after the client's retries) is ``ResourceUnavailable``.

What does not live here: the features that need scopes (they call these), payload shape checks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from tcworker.errors import MalformedPayload, ResourceUnavailable

log = logging.getLogger(__name__)
ASSUME = "assume:"


def satisfies(held: Iterable[str], required: str) -> bool:
    """True when one of ``held`` grants ``required`` (equal, or a ``*``-ended prefix of it)."""
    return any(s == required or (s.endswith("*") and required.startswith(s[:-1])) for s in held)


def task_scopes(task: Any) -> list[str]:
    """The string entries of ``task["scopes"]`` (missing → ``[]``)."""
    return [s for s in task.get("scopes") or [] if isinstance(s, str)]


def given_lines(task: Any, held: Sequence[str] | None = None) -> list[str]:
    """Message lines listing ``task.scopes`` and, when they differ, their expansion ``held``."""
    given = task_scopes(task)
    lines = ["Given scopes (task.scopes):"]
    lines += [f"  {s}" for s in given] or ["  (none)"]
    if held is not None and sorted(held) != sorted(given):
        lines.append("Given scopes, assume: roles expanded by the Auth service:")
        lines += [f"  {s}" for s in held] or ["  (none)"]
    return lines


def require_scopes(required: Sequence[str], task: dict, what: str,
                   held: Sequence[str] | None = None) -> None:
    """Check that ``task["scopes"]`` (or their expansion ``held``) grant every scope in ``required``.

    Args:
        required: scopes the payload needs.
        task: the task definition (its ``scopes``, a list of strings, may be missing).
        what: the payload part asking for them, for the message (``payload.osGroups``).
        held: the expanded scopes (:func:`held_scopes`); None → the literal ``task.scopes``.

    Raises:
        MalformedPayload: some scope is missing → exception / malformed-payload; the message
            lists the required scopes and the task's scopes (and their expansion).
    """
    granted = task_scopes(task) if held is None else list(held)
    missing = [s for s in required if not satisfies(granted, s)]
    if not missing:
        return
    lines = [f"{what}: task.scopes do not satisfy the scopes it requires", "Required scopes:"]
    lines += [f"  {s}" for s in required]
    lines += given_lines(task, held)
    lines.append("Missing: " + ", ".join(missing))
    raise MalformedPayload("\n".join(lines))


async def held_scopes(run: Any) -> list[str]:
    """The run's ``task.scopes`` with ``assume:`` expanded, computed once (``run.expanded_scopes``).

    Call it only when a check needs scopes. ``run`` is a ``TaskRun`` (uses ``task``, ``config``,
    ``queue``: under ``tcworker run`` the worker's credentials and clients; under ``tcworker exec``
    the config's rootURL and credentials, if any).

    Returns:
        list of str: the literal scopes when none starts with ``assume:`` or no rootURL is known;
        else the Auth service's ``expandScopes`` answer.

    Raises:
        ResourceUnavailable: the expansion failed after the client's retries (any status).
    """
    cached = getattr(run, "expanded_scopes", None)
    if cached is not None:
        return list(cached)
    given = task_scopes(run.task)
    held = given
    if any(s.startswith(ASSUME) for s in given):
        held = await _expand(run, given)
    run.expanded_scopes = list(held)
    return list(held)


async def _expand(run: Any, scopes: list[str]) -> list[str]:
    from tcworker.queue.client import ClientFactory, QueueCallError

    queue = getattr(run, "queue", None)
    try:
        if queue is not None:
            return await _call_expand(queue.clients, queue.worker.credentials, scopes)
        config = run.config
        if not config.root_url:
            return scopes  # tcworker exec without a deployment: the literal scopes count
        async with ClientFactory.open(config.root_url) as clients:
            return await _call_expand(clients, config.credentials if config.client_id else None, scopes)
    except QueueCallError as err:
        raise ResourceUnavailable(
            f"task.scopes: expanding the assume: scopes through the Auth service failed: {err}") from err


async def _call_expand(clients: Any, credentials: dict | None, scopes: list[str]) -> list[str]:
    from tcworker.queue.client import QueueCallError

    auth = clients.auth(credentials)
    answer = await clients.call(auth.expandScopes, {"scopes": scopes})
    expanded = answer.get("scopes") if isinstance(answer, dict) else None
    if not isinstance(expanded, list) or not all(isinstance(s, str) for s in expanded):
        raise QueueCallError("expandScopes", f"unexpected answer {answer!r}", status=None, transient=False)
    log.debug("expanded %d task scope(s) to %d", len(scopes), len(expanded))
    return expanded


def os_group_scopes(groups: Iterable[str], worker_pool_id: str) -> list[str]:
    """``generic-worker:os-group:<workerPoolId>/<group>`` for each group, in order."""
    return [f"generic-worker:os-group:{worker_pool_id}/{group}" for group in groups]
