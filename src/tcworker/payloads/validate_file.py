"""``tcworker validate TASK_FILE``: read a file, decide what it holds, check it, say why.

A YAML/JSON mapping with a ``task`` key is a case file (``../shared/cases/real-tasks/``): its
placeholders are rendered, its ``worker_config`` applied (``needs: [multiuser]`` selects the
multiuser engine) and its prereqs checked too. A mapping with a ``payload`` key is a (partial)
task definition, completed with the Queue's defaults. Any other mapping is a payload alone.

What does not live here: the command-line parsing (``tcworker.cli``), the checks themselves
(:mod:`tcworker.payloads.parse`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tcworker.config import WorkerConfig
from tcworker.errors import ConfigError
from tcworker.payloads.common import Problem
from tcworker.payloads.parse import validate_task
from tcworker.payloads.taskdef import complete_task_definition

EXIT_VALID = 0
EXIT_INVALID = 2


def load_document(path: str | Path) -> Any:
    """Parse a JSON or YAML file; YAML timestamps stay strings (as they would be in JSON).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is neither JSON nor YAML.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ValueError(f"neither JSON nor YAML: {err}") from None


def _loader() -> type:
    import yaml

    class StringTimestampLoader(yaml.SafeLoader):
        """SafeLoader without the implicit timestamp type: dates stay strings."""

    StringTimestampLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return StringTimestampLoader


def cli_validate(path: str | Path, config: WorkerConfig | None = None) -> tuple[int, list[str]]:
    """Check a task file and describe the verdict; never raises for bad input.

    Args:
        path: a case file, a (partial) task definition, or a bare payload (YAML or JSON).
        config: the worker config to check against (default: ``WorkerConfig()``).

    Returns:
        ``(exit code, output lines)``: 0 and a one-line summary when valid; 2 and one
        ``<field path>: <message>`` line per problem when invalid or unreadable.
    """
    config = config or WorkerConfig()
    try:
        doc = load_document(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return EXIT_INVALID, [f"{path}: cannot read: {err}"]
    if not isinstance(doc, dict):
        return EXIT_INVALID, [f"{path}: expected a mapping (task, case or payload), "
                              f"got {type(doc).__name__}"]
    try:
        checks = _checks(doc, config)
    except (ValueError, ConfigError) as err:
        return EXIT_INVALID, [f"{path}: {err}"]
    lines: list[str] = []
    for label, task, cfg in checks:
        prefix = f"{label}: " if label else ""
        lines += [f"{prefix}{problem}" for problem in validate_task(task, cfg)]
    if lines:
        return EXIT_INVALID, lines
    engine = "docker" if "image" in (checks[-1][1].get("payload") or {}) else "native"
    variant = "" if engine == "docker" else (
        " (insecure)" if checks[-1][2].run_tasks_as_current_user else " (multiuser)")
    return EXIT_VALID, [f"{path}: valid for the {engine} engine{variant}"]


def _checks(doc: dict[str, Any], config: WorkerConfig) -> list[tuple[str, dict[str, Any], WorkerConfig]]:
    """``(label, complete task definition, config)`` for each task the document holds."""
    if "task" in doc:
        return _case_checks(doc, config)
    if "payload" in doc:
        return [("", complete_task_definition(doc), config)]
    return [("", complete_task_definition({"payload": doc}), config)]


def _case_checks(doc: dict[str, Any], config: WorkerConfig) -> list[tuple[str, dict[str, Any], WorkerConfig]]:
    from tcworker.testing.cases import case_from_mapping, render_case

    case = render_case(case_from_mapping(doc, case_id="case"))
    overrides = dict(case.worker_config)
    if "multiuser" in case.needs:
        overrides.setdefault("runTasksAsCurrentUser", False)
    if overrides:
        merged = config.model_dump(by_alias=True)
        merged.update(overrides)
        config = WorkerConfig.from_mapping(merged, environ={})
    checks = [(f"prereq {p.get('label', i)}", complete_task_definition(p.get("task") or {}), config)
              for i, p in enumerate(case.prereqs)]
    return checks + [("", complete_task_definition(case.task), config)]


def problems_text(problems: list[Problem]) -> str:
    """One ``<field path>: <message>`` line per problem."""
    return "\n".join(str(p) for p in problems)
