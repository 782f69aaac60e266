"""Loader for the real-task case files (``../shared/cases/real-tasks/*.yml``) and their placeholders.

:func:`load_case` reads one file into a :class:`Case`; :func:`render` substitutes the README's
placeholders (``{{now+1h}}``, ``{{taskId}}``, ``{{taskId:<label>}}``, ``{{taskGroupId}}``,
``{{schedulerId}}``, ``{{fileserver}}``, ``{{docker_image}}``) in any nested structure, keys
included; :func:`render_case` renders a whole case with fresh ids; :func:`case_paths` lists the
cases of the shared folder.

What does not live here: running the cases (the end-to-end tests do), finding the shared folder
(:mod:`tcworker.testing.shared`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

import slugid

PLACEHOLDER = re.compile(r"\{\{(now(?:[+-]\d+[smhdy])*|taskId(?::[A-Za-z0-9_.-]+)?|taskGroupId"
                         r"|schedulerId|fileserver|docker_image)\}\}")
"""The README's placeholders. Anything else in ``{{...}}`` (e.g. in ``source.notes``) is left alone."""
_TERM = re.compile(r"([+-])(\d+)([smhdy])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
KNOWN_KEYS = {"source", "needs", "worker_config", "fixtures", "prereqs", "task", "expect"}

DEFAULT_SCHEDULER_ID = "tcworker-tests"
DEFAULT_FILESERVER = "http://127.0.0.1:8080"
DEFAULT_DOCKER_IMAGE = "tcworker-test/bash-busybox:1"


@dataclass(frozen=True)
class Case:
    """One case file.

    Attributes:
        id: the file name without ``.yml`` (e.g. ``gw-purge-caches``).
        needs: the ``needs`` list (``native``, ``docker``, ``queue``, ...).
        worker_config: worker settings the expectation assumes (generic-worker keys).
        fixtures: ``files``, ``runner_files``, ``index``, as in the file.
        prereqs: list of ``{label, task, expect}`` created first, in order.
        task: the main task definition.
        expect: the expected result.
        source: where the task came from (repo, path, commit, url, notes).
        path: the file read, or None when built from a mapping.
    """

    id: str
    needs: tuple[str, ...]
    worker_config: dict[str, Any]
    fixtures: dict[str, Any]
    prereqs: list[dict[str, Any]]
    task: dict[str, Any]
    expect: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def load_case(path: str | Path) -> Case:
    """Read a case file (YAML; timestamps stay strings).

    Raises:
        OSError: unreadable file. ValueError: not a case (unknown keys, no ``task``).
    """
    from tcworker.payloads.validate_file import load_document

    path = Path(path)
    case = case_from_mapping(load_document(path), case_id=path.stem)
    return replace(case, path=path)


def case_from_mapping(doc: Any, *, case_id: str) -> Case:
    """Build a :class:`Case` from a parsed case file.

    Raises:
        ValueError: ``doc`` is not a mapping, lacks ``task``, or has unknown top-level keys.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("task"), Mapping):
        raise ValueError(f"case {case_id}: a case file is a mapping with a `task` mapping")
    unknown = set(doc) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"case {case_id}: unknown keys {sorted(unknown)}")
    return Case(
        id=case_id,
        needs=tuple(doc.get("needs") or ()),
        worker_config=dict(doc.get("worker_config") or {}),
        fixtures=dict(doc.get("fixtures") or {}),
        prereqs=list(doc.get("prereqs") or []),
        task=dict(doc["task"]),
        expect=dict(doc.get("expect") or {}),
        source=dict(doc.get("source") or {}),
    )


def case_paths(shared: Path) -> list[Path]:
    """The case files under ``<shared>/cases/real-tasks``, sorted by name."""
    return sorted((shared / "cases" / "real-tasks").glob("*.yml"))


def format_time(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), the placeholders' time format."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def render(
    obj: Any,
    *,
    now: datetime,
    task_ids: Mapping[str, str],
    task_id: str,
    task_group_id: str,
    scheduler_id: str = DEFAULT_SCHEDULER_ID,
    fileserver: str = DEFAULT_FILESERVER,
    docker_image: str = DEFAULT_DOCKER_IMAGE,
) -> Any:
    """Return a copy of ``obj`` with every placeholder substituted, in keys and values.

    Args:
        obj: any nesting of dicts, lists and scalars (a case's ``task``, ``prereqs``, ``expect``).
        now: the case's base time; ``{{now+1y+1s}}`` adds 365 days and one second.
        task_ids: prereq label → taskId, for ``{{taskId:<label>}}``.
        task_id: the main task's id, for ``{{taskId}}``.
        task_group_id, scheduler_id, fileserver (no trailing slash), docker_image: as named.

    Raises:
        ValueError: ``{{taskId:<label>}}`` names a label not in ``task_ids``.
    """
    values = {"taskId": task_id, "taskGroupId": task_group_id, "schedulerId": scheduler_id,
              "fileserver": fileserver.rstrip("/"), "docker_image": docker_image}

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("now"):
            seconds = sum((1 if sign == "+" else -1) * int(n) * _UNITS[unit]
                          for sign, n, unit in _TERM.findall(name[3:]))
            return format_time(now + timedelta(seconds=seconds))
        if name.startswith("taskId:"):
            label = name.split(":", 1)[1]
            if label not in task_ids:
                raise ValueError(f"placeholder {match.group(0)} names an unknown prereq label")
            return task_ids[label]
        return values[name]

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return PLACEHOLDER.sub(one, value)
        if isinstance(value, Mapping):
            return {walk(k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(obj)


def render_case(case: Case, *, now: datetime | None = None, task_id: str | None = None,
                **kwargs: Any) -> Case:
    """Render ``task``, ``prereqs``, ``expect`` and ``fixtures`` of a case with fresh ids.

    Args:
        case: as loaded.
        now: base time (default: now, UTC).
        task_id: the main task's id (default: a new slugid); prereqs get new slugids.
        **kwargs: ``task_group_id``, ``scheduler_id``, ``fileserver``, ``docker_image``,
            ``task_ids`` for :func:`render`.
    """
    task_ids = dict(kwargs.pop("task_ids", {}))
    for prereq in case.prereqs:
        task_ids.setdefault(str(prereq.get("label")), slugid.nice())
    options: dict[str, Any] = {"now": now or datetime.now(timezone.utc), "task_ids": task_ids,
                               "task_id": task_id or slugid.nice(),
                               "task_group_id": kwargs.pop("task_group_id", None) or slugid.nice()}
    options.update(kwargs)
    return replace(
        case,
        task=render(case.task, **options),
        prereqs=render(case.prereqs, **options),
        expect=render(case.expect, **options),
        fixtures=render(case.fixtures, **options),
    )
