"""Shared pieces of the payload models: :class:`ArtifactSpec`, :class:`Problem`, strict base model,
RFC 3339 timestamps, unique-item lists, and turning pydantic errors into field paths.

What does not live here: the generic-worker and docker-worker models themselves
(:mod:`~tcworker.payloads.generic_worker`, :mod:`~tcworker.payloads.docker_worker`) and the
worker-level refusals (:mod:`~tcworker.payloads.rules`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Iterable, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

# RFC 3339 `date-time` (what the schemas' `format: date-time` means): full date, `T`, full time,
# optional fraction, and `Z` or a numeric offset. Lower-case `t`/`z` are allowed by RFC 3339.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
# A URI needs a scheme (RFC 3986 section 3) and never contains whitespace.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S*", re.ASCII)

TAG_PREFIX = "#"  # discriminator tags start with this; they are dropped from field paths


@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact the task declared, normalized across payload kinds.

    Attributes:
        name: published name (generic-worker default: ``path`` with ``/`` separators; docker-worker:
            the key of ``payload.artifacts``).
        path: as given: relative to the task directory, or absolute (docker: inside the container).
        kind: ``"file"`` or ``"directory"`` (docker-worker ``volume`` artifacts are directories).
        expires: explicit expiry, else the task's ``expires``; timezone-aware UTC.
        content_type: ``None``: guess from the name.
        content_encoding: ``"identity"``/``"gzip"`` (s3 mode only); ``None``: by extension.
        optional: a missing file does not fail the task (docker-worker: always ``True``).
    """

    name: str
    path: str
    kind: Literal["file", "directory"]
    expires: datetime
    content_type: str | None
    content_encoding: Literal["identity", "gzip"] | None
    optional: bool


@dataclass(frozen=True)
class Problem:
    """One reason a task cannot run here.

    Attributes:
        path: field path in the task definition, e.g. ``payload.env.FOO`` or
            ``payload.command[0][1]``; ``payload`` for the payload as a whole.
        message: human-readable reason.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class StrictModel(BaseModel):
    """Base of every payload model: strict types, unknown keys refused, frozen, camelCase aliases.

    Attributes are snake_case; the payload keys are the aliases. Only aliases are accepted as input
    (a payload saying ``max_run_time`` is refused as an unknown key, as upstream does).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any) -> Any:
        # No schema property allows null; optional fields are None only when absent.
        if value is None:
            raise PydanticCustomError("null_value", "Input should not be null")
        return value


# ---------------------------------------------------------------- field types
def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 ``date-time`` string into a timezone-aware UTC datetime.

    Raises:
        ValueError: not an RFC 3339 date-time (the message says so).
    """
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    text = value.upper()
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most 6 fraction digits
        digits = re.match(r"\d+", rest).group(0)  # type: ignore[union-attr]
        text = head + "." + digits[:6].ljust(6, "0") + rest[len(digits):]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a valid date-time: {value!r}") from None
    return parsed.astimezone(timezone.utc)


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except ValueError as err:
            raise PydanticCustomError("date_time", "{error}", {"error": str(err)}) from None
    raise PydanticCustomError("string_type", "Input should be a valid string (RFC 3339 date-time)")


def _check_uri(value: str) -> str:
    if not _URI.fullmatch(value):
        raise PydanticCustomError("uri", "Input should be a URI with a scheme and no spaces")
    return value


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for index, item in enumerate(items):
        plain = item.model_dump(exclude_unset=True, by_alias=True) if isinstance(item, BaseModel) else item
        if plain in seen:
            raise PydanticCustomError(
                "unique_items", "items must be unique: item {index} repeats item {first}",
                {"index": index, "first": seen.index(plain)},
            )
        seen.append(plain)
    return items


DateTime = Annotated[datetime, BeforeValidator(_to_datetime)]
"""A schema ``format: date-time`` string, parsed to an aware UTC datetime (strings only)."""
Uri = Annotated[str, AfterValidator(_check_uri)]
"""A schema ``format: uri`` string: needs a scheme, no whitespace."""
Sha256Hex = Annotated[str, pydantic.StringConstraints(pattern=r"^[a-f0-9]{64}$")]
SlugId = Annotated[
    str,
    pydantic.StringConstraints(
        pattern=r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
    ),
]


def unique_list(item_type: Any) -> Any:
    """``list[item_type]`` refusing repeated items (schema ``uniqueItems: true``)."""
    return Annotated[list[item_type], AfterValidator(_unique)]


# ---------------------------------------------------------------- errors → problems
def field_path(prefix: str, loc: Iterable[str | int]) -> str:
    """Join a pydantic error location into a field path (``payload.command[0][1]``).

    Discriminator tags (strings starting with ``#``) and pydantic's ``[key]`` marker are dropped.
    """
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(TAG_PREFIX) or part == "[key]":
            continue  # discriminator tags; "[key]" marks a bad mapping key, already in the path
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _describe_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems_from_error(err: pydantic.ValidationError, prefix: str = "payload") -> list[Problem]:
    """Turn a pydantic validation error into problems, one per error, with field paths.

    Type and value errors say what was given (``Input should be a valid integer (got '30')``);
    missing and unknown fields do not need to.
    """
    problems = []
    for item in err.errors(include_url=False):
        message = item["msg"]
        if item["type"] not in ("missing", "extra_forbidden") and "(got " not in message:
            message += f" (got {_describe_input(item.get('input'))})"
        problems.append(Problem(field_path(prefix, item["loc"]), message))
    return problems
