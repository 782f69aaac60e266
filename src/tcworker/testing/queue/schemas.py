"""Upstream JSON-schema validation of request and response bodies.

Lives here: :func:`find_shared_dir` / :func:`find_schema_dir` (where ``../shared`` is, honouring
``TCWORKER_SHARED`` and the ``CI=true`` rule), and :class:`SchemaSet`, which loads the rendered
draft-06 schemas under ``<shared>/schemas/queue/json`` with the recipe of that folder's README and
validates a body against ``<service>/v1/<name>``. ``jsonschema`` is imported lazily (it is slow).

Does not live here: which schema belongs to which method (the endpoint table in ``routes.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from typing import Any

BASE = "https://tc.invalid"


class SchemaMismatch(AssertionError):
    """A body does not match its upstream schema. ``errors`` is a list of str."""

    def __init__(self, schema: str, errors: list[str]):
        super().__init__(f"{schema}: " + "; ".join(errors))
        self.schema = schema
        self.errors = errors


def find_shared_dir() -> pathlib.Path | None:
    """The shared design folder: ``$TCWORKER_SHARED``, else ``<repo>/../shared``; None if absent.

    Raises:
        RuntimeError: absent while ``CI=true`` (CI must never skip the schema checks).
    """
    env = os.environ.get("TCWORKER_SHARED")
    if env:
        path = pathlib.Path(env)
    else:
        repo = pathlib.Path(__file__).resolve().parents[4]  # src/tcworker/testing/queue → repo
        path = repo.parent / "shared"
    if path.is_dir():
        return path
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"shared folder {path} is missing (set TCWORKER_SHARED); CI must not skip")
    return None


def find_schema_dir() -> pathlib.Path | None:
    """``<shared>/schemas/queue/json`` when it exists, else None (same CI rule as above)."""
    shared = find_shared_dir()
    if shared is None:
        return None
    path = shared / "schemas" / "queue" / "json"
    if path.is_dir():
        return path
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"schema folder {path} is missing; CI must not skip")
    return None


def _check_date_time(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


class SchemaSet:
    """Validators for every rendered schema of a folder; built on first use, then cached.

    Args:
        schema_dir: a ``.../schemas/queue/json`` folder (``common/``, ``queue/v1/``, ...).
    """

    def __init__(self, schema_dir: pathlib.Path) -> None:
        self.schema_dir = schema_dir
        self._registry = None
        self._validators: dict[str, Any] = {}

    def has(self, service: str, name: str) -> bool:
        """True when ``<service>/v1/<name>.json`` exists in the folder."""
        return (self.schema_dir / service / "v1" / f"{name}.json").is_file()

    def validate(self, service: str, name: str, body: Any) -> None:
        """Check ``body`` against ``/schemas/<service>/v1/<name>.json``.

        Raises:
            SchemaMismatch: with every error message (path: message).
        """
        key = f"{service}/{name}"
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = self._build(service, name)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            raise SchemaMismatch(key, [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                                       for e in errors[:10]])

    def _build(self, service: str, name: str) -> Any:
        from jsonschema import Draft6Validator, FormatChecker  # lazy: slow import
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT6

        if self._registry is None:
            docs = (json.loads(p.read_text()) for p in sorted(self.schema_dir.rglob("*.json")))
            self._registry = Registry().with_resources(
                (BASE + s["$id"].rstrip("#"), Resource.from_contents(s, default_specification=DRAFT6))
                for s in docs
            )
        checker = FormatChecker()
        # Without rfc3339-validator jsonschema skips date-time silently; check it ourselves.
        checker.checks("date-time")(_check_date_time)
        return Draft6Validator({"$ref": f"{BASE}/schemas/{service}/v1/{name}.json"},
                               registry=self._registry, format_checker=checker)
