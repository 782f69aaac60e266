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


MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_DOCUMENT_NODES = 500_000


def load_document(path: str | Path) -> Any:
    """Parse a JSON or YAML file; YAML timestamps stay strings (as they would be in JSON).

    Bounded: files over :data:`MAX_DOCUMENT_BYTES`, documents nested too deeply, and YAML whose
    aliases would expand past :data:`MAX_DOCUMENT_NODES` nodes ("billion laughs") are refused
    before they are built.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is neither JSON nor YAML, not UTF-8, or too large once expanded.
    """
    data = Path(path).read_bytes()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"file is larger than {MAX_DOCUMENT_BYTES} bytes")
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("document is nested too deeply") from None
    except ValueError:
        pass
    import yaml

    loader = _loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_DOCUMENT_NODES) > MAX_DOCUMENT_NODES:
            raise ValueError(f"document has more than {MAX_DOCUMENT_NODES} nodes once YAML aliases are expanded")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ValueError(f"neither JSON nor YAML: {err}") from None
    except RecursionError:
        raise ValueError("document is nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(root: Any, limit: int) -> int:
    """Nodes of a composed YAML graph once aliases are expanded (capped past ``limit``).

    Raises:
        ValueError: an alias refers to one of its own ancestors.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _yaml_children(node)
        if children_done:
            visiting.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        if key in sizes:
            continue
        if key in visiting:
            raise ValueError("a YAML alias refers to itself")
        visiting.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _yaml_children(node: Any) -> list[Any]:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []
    children: list[Any] = []
    for item in value:
        children.extend(item if isinstance(item, tuple) else (item,))
    return children


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
