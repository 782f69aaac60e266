"""Artifacts on the worker's side: from the declared specs to files ready to upload.

:func:`collect` turns the payload's :class:`~tcworker.payloads.common.ArtifactSpec` list into
:class:`DataArtifact` (a regular file to upload) and :class:`ErrorArtifact` (the queue's ``error``
storage type) values, after the task ran. :func:`open_artifact` reopens a collected file safely at
upload time. :class:`LinkArtifact` and :class:`ReferenceArtifact` are built by features (live log).

Rules (generic-worker's, peer-workers.md 1.3, plus containment):

- Relative spec paths are relative to the task directory; absolute paths are host paths. Only
  regular files whose resolved path lies inside the artifact root or the task directory are
  published (FM-19): a link to a file inside is published under the link's own name; a link
  outside, a dangling link, a FIFO, a socket or a device is skipped with a warning (inside a
  directory artifact) or becomes an error artifact (a file artifact). FIFOs and devices are never
  opened; files are opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat``.
- Directory artifacts publish each file as ``<name>/<relative path>`` with forward slashes.
- Missing → ``file-missing-on-worker``; a directory where a file was declared (or the reverse, or
  a non-regular file) → ``invalid-resource-on-worker``; unreadable → ``file-not-readable-on-worker``.
- Multiuser: when the task directory belongs to another user than the worker (the run's own
  user), a file that user could not read (mode bits, every directory on its path) becomes an
  error artifact, never its contents (:mod:`tcworker.artifact_access`).
- ``optional: true``: a missing artifact still becomes an error artifact, as generic-worker does
  (its test ``TestMissingOptionalFileArtifactDoesNotFailTest``), but with ``fails_task=False``, so
  the task does not fail. Docker-worker payloads mark every artifact optional.

What does not live here: name and content-type rules (:mod:`tcworker.artifact_names`), writing to
a folder for ``tcworker exec`` (:mod:`tcworker.artifact_folder`), uploads
(:mod:`tcworker.queue.upload`).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Collection, Literal, Sequence

from tcworker.artifact_access import Reader, task_reader
from tcworker.artifact_names import (
    check_artifact_name,
    default_content_encoding,
    guess_content_type,
    join_artifact_name,
)
from tcworker.errors import MalformedPayload
from tcworker.fsutil import walk

if TYPE_CHECKING:
    from tcworker.payloads.common import ArtifactSpec

log = logging.getLogger(__name__)

FILE_MISSING = "file-missing-on-worker"
INVALID_RESOURCE = "invalid-resource-on-worker"
NOT_READABLE = "file-not-readable-on-worker"
ErrorReason = Literal[
    "file-missing-on-worker", "invalid-resource-on-worker", "file-not-readable-on-worker", "too-large-file-on-worker"
]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class DataArtifact:
    """A regular file to publish.

    Attributes:
        name: published name (``public/build/x.tar.gz``), checked by ``check_artifact_name``.
        path: resolved host path of the file (links resolved, inside the roots).
        size_bytes: size seen by :func:`collect`; the upload uses the size at open time.
        content_type: the payload's ``contentType``, else guessed from the name.
        content_encoding: ``identity`` or ``gzip``; used by ``s3`` uploads only.
        expires: timezone-aware expiry.
        file_id: ``(st_dev, st_ino)`` seen by :func:`collect`; :func:`open_artifact` refuses a
            different file at the same path.
        required: declared as a non-optional *file* artifact: vanishing before the upload fails
            the task (a vanished member of a directory does not).
    """

    name: str
    path: Path
    size_bytes: int
    content_type: str
    content_encoding: Literal["identity", "gzip"]
    expires: datetime
    file_id: tuple[int, int] | None = None
    required: bool = False


@dataclass(frozen=True)
class ErrorArtifact:
    """An ``error`` artifact: the queue answers downloads with 424 and ``{reason, message}``.

    Attributes:
        reason: one of the queue's four reasons (``file-missing-on-worker``, ...).
        message: for the task log and the artifact (the queue keeps at most 4096 characters).
        fails_task: the artifact was required, so the run resolves ``failed``.
    """

    name: str
    reason: ErrorReason
    message: str
    expires: datetime
    fails_task: bool


@dataclass(frozen=True)
class LinkArtifact:
    """A ``link`` artifact: ``name`` serves the artifact ``target`` of the same run."""

    name: str
    target: str
    expires: datetime
    content_type: str | None = None


@dataclass(frozen=True)
class ReferenceArtifact:
    """A ``reference`` artifact: ``name`` redirects to ``url`` (the live log while running)."""

    name: str
    url: str
    expires: datetime
    content_type: str


Artifact = DataArtifact | ErrorArtifact | LinkArtifact | ReferenceArtifact


class ArtifactGone(OSError):
    """A collected file can no longer be read as the file :func:`collect` saw (FM-02).

    Attributes:
        reason: the error artifact reason to publish instead.
    """

    def __init__(self, message: str, reason: ErrorReason = FILE_MISSING) -> None:
        super().__init__(message)
        self.reason: ErrorReason = reason


def collect(
    specs: Sequence[ArtifactSpec],
    root: Path,
    *,
    task_dir: Path,
    reserved: Collection[str] = (),
    warn: Callable[[str], None] | None = None,
) -> list[DataArtifact | ErrorArtifact]:
    """List what to publish for ``specs``, after the task ran. Blocking: call it in a thread.

    Args:
        specs: the payload's artifacts (``ParsedTask.artifact_specs``).
        root: the sandbox's artifact root; files must resolve inside it or inside ``task_dir``.
        task_dir: base of relative spec paths.
        reserved: names owned by features (live log, chain of trust): skipped with a warning.
        warn: receives one line per skipped file (``TaskLog.warn``); default: module logger.

    Returns:
        Data and error artifacts, one name each (the first spec wins a duplicate name), in spec
        order, directory members sorted by name.

    Raises:
        MalformedPayload: a spec name the queue cannot store (payload validation should have
            refused it before the task ran) → exception / malformed-payload.
    """
    warn = warn or log.warning
    problems = [
        f"artifact {spec.path!r}: {problem}"
        for spec in specs
        if (problem := check_artifact_name(spec.name, directory=spec.kind == "directory"))
    ]
    if problems:
        raise MalformedPayload("; ".join(problems))
    bases = _bases(root, task_dir)
    reader = task_reader(task_dir)
    seen: set[str] = set(reserved)
    out: list[DataArtifact | ErrorArtifact] = []
    for spec in specs:
        for artifact in _collect_spec(spec, bases, Path(task_dir), warn, reader):
            if artifact.name in seen:
                why = "is reserved by the worker" if artifact.name in reserved else "was already declared"
                warn(f"artifact {artifact.name!r} {why}; skipping {spec.path!r}")
                continue
            seen.add(artifact.name)
            out.append(artifact)
    return out


def open_artifact(artifact: DataArtifact) -> tuple[BinaryIO, int]:
    """Open a collected file for reading, refusing anything but the file :func:`collect` saw.

    Returns:
        ``(file, size_bytes)``: a binary file positioned at 0 (the caller closes it) and its size
        at open time; read exactly ``size_bytes`` so a growing file still matches its length.

    Raises:
        ArtifactGone: the file vanished, was replaced by another file or a link, or became
            unreadable (``reason`` says which error artifact to publish).
    """
    try:
        fd = os.open(artifact.path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ArtifactGone(f"{artifact.path} vanished before upload") from None
    except PermissionError:
        raise ArtifactGone(f"{artifact.path} is not readable", NOT_READABLE) from None
    except OSError as err:  # ELOOP: replaced by a link; ENXIO etc.
        raise ArtifactGone(f"{artifact.path} cannot be opened: {err.strerror}", INVALID_RESOURCE) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (
        artifact.file_id is not None and (st.st_dev, st.st_ino) != artifact.file_id
    ):
        os.close(fd)
        raise ArtifactGone(f"{artifact.path} was replaced before upload", INVALID_RESOURCE)
    return os.fdopen(fd, "rb"), st.st_size


# ----------------------------------------------------------------------------- internals


def _bases(root: Path, task_dir: Path) -> tuple[str, ...]:
    return tuple(dict.fromkeys(os.path.realpath(p) for p in (root, task_dir)))


def _inside(real: str, bases: tuple[str, ...]) -> bool:
    return any(real == base or real.startswith(base.rstrip(os.sep) + os.sep) for base in bases)


def _host_path(spec_path: str, task_dir: Path) -> Path:
    path = Path(spec_path)
    return path if path.is_absolute() else task_dir / path


def _error(spec: ArtifactSpec, name: str, reason: ErrorReason, message: str) -> ErrorArtifact:
    return ErrorArtifact(name, reason, message, spec.expires, fails_task=not spec.optional)


def _data(spec: ArtifactSpec, name: str, real: str, st: os.stat_result, required: bool) -> DataArtifact:
    content_type = spec.content_type or guess_content_type(name)
    encoding = spec.content_encoding or default_content_encoding(name, content_type)
    return DataArtifact(
        name=name,
        path=Path(real),
        size_bytes=st.st_size,
        content_type=content_type,
        content_encoding=encoding,  # type: ignore[arg-type]
        expires=spec.expires,
        file_id=(st.st_dev, st.st_ino),
        required=required,
    )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _probe(real: str, bases: tuple[str, ...], reader: Reader | None = None) -> os.stat_result:
    """Open ``real`` without following a final link or blocking, and check what was opened.

    Raises:
        PermissionError: unreadable. ArtifactGone: vanished, replaced, or not contained.
    """
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ArtifactGone(f"{real} vanished") from None
    except PermissionError:
        raise
    except OSError as err:
        raise ArtifactGone(f"{real} cannot be opened: {err.strerror}", INVALID_RESOURCE) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactGone(f"{real} is {_kind(st.st_mode)}", INVALID_RESOURCE)
        opened = _fd_path(fd)
        if opened is not None and not _inside(opened, bases):
            # A directory on the way was swapped for a link after realpath() ran.
            raise ArtifactGone(f"{real} resolves outside the task directory", INVALID_RESOURCE)
        if reader is not None and not reader.can_read(opened or real, st):
            raise PermissionError(f"{real} is not readable by the task user")
        return st
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # no /proc (macOS): realpath() containment is all we have


def _collect_spec(
    spec: ArtifactSpec, bases: tuple[str, ...], task_dir: Path, warn: Callable[[str], None], reader: Reader | None
) -> list[DataArtifact | ErrorArtifact]:
    host = _host_path(spec.path, task_dir)
    name = spec.name.rstrip("/") if spec.kind == "directory" else spec.name
    declared = f"{spec.kind} artifact {spec.path!r}"
    try:
        st = os.stat(host)
    except (FileNotFoundError, NotADirectoryError):
        return [_error(spec, name, FILE_MISSING, f"{declared} was not found on the worker")]
    except PermissionError:
        return [_error(spec, name, NOT_READABLE, f"{declared} cannot be read by the worker")]
    except OSError as err:  # ELOOP: a link cycle
        return [_error(spec, name, INVALID_RESOURCE, f"{declared} cannot be read: {err.strerror}")]
    real = os.path.realpath(host)
    if not _inside(real, bases):
        return [_error(spec, name, INVALID_RESOURCE, f"{declared} resolves outside the task directory")]
    if spec.kind == "directory":
        if not stat.S_ISDIR(st.st_mode):
            return [_error(spec, name, INVALID_RESOURCE, f"{declared} is {_kind(st.st_mode)}, not a directory")]
        return _collect_directory(spec, name, real, bases, warn, reader)
    if not stat.S_ISREG(st.st_mode):
        what = _kind(st.st_mode)
        hint = "; declare it with type: directory" if stat.S_ISDIR(st.st_mode) else ""
        return [_error(spec, name, INVALID_RESOURCE, f"{declared} is {what}, not a regular file{hint}")]
    try:
        st = _probe(real, bases, reader)
    except PermissionError:
        return [_error(spec, name, NOT_READABLE, f"{declared} cannot be read by the worker")]
    except ArtifactGone as gone:
        return [_error(spec, name, gone.reason, f"{declared}: {gone}")]
    return [_data(spec, name, real, st, required=not spec.optional)]


def _collect_directory(
    spec: ArtifactSpec, name: str, real_dir: str, bases: tuple[str, ...], warn: Callable[[str], None],
    reader: Reader | None,
) -> list[DataArtifact | ErrorArtifact]:
    out: list[DataArtifact | ErrorArtifact] = []
    walk_errors: list[OSError] = []
    for dirpath, dirnames, filenames in walk(real_dir, onerror=walk_errors.append):
        for entry in sorted(dirnames):
            if os.path.islink(os.path.join(dirpath, entry)):
                warn(f"skipping {os.path.join(dirpath, entry)}: a link to a directory is not followed")
        for entry in filenames:
            path = os.path.join(dirpath, entry)
            member = join_artifact_name(name, os.path.relpath(path, real_dir))
            artifact = _collect_member(spec, member, path, bases, warn, reader)
            if artifact is not None:
                out.append(artifact)
    if walk_errors and walk_errors[0].filename == real_dir:
        err = walk_errors[0]
        return [_error(spec, name, NOT_READABLE, f"directory artifact {spec.path!r} cannot be listed: {err.strerror}")]
    for err in walk_errors:
        warn(f"skipping {err.filename}: cannot list it ({err.strerror})")
    out.sort(key=lambda a: a.name)
    return out


def _collect_member(
    spec: ArtifactSpec, member: str, path: str, bases: tuple[str, ...], warn: Callable[[str], None],
    reader: Reader | None,
) -> DataArtifact | ErrorArtifact | None:
    problem = check_artifact_name(member)
    if problem:
        warn(f"skipping {path}: {problem}")
        return None
    try:
        lst = os.lstat(path)
        real = os.path.realpath(path) if stat.S_ISLNK(lst.st_mode) else path
        st = os.stat(real) if stat.S_ISLNK(lst.st_mode) else lst
    except FileNotFoundError:
        what = "a dangling link" if os.path.lexists(path) else "gone before it could be read"
        warn(f"skipping {path}: {what}")
        return None
    except OSError as err:  # ELOOP: a link cycle
        warn(f"skipping {path}: {err.strerror}")
        return None
    if not _inside(os.path.realpath(real), bases):
        warn(f"skipping {path}: it resolves outside the task directory")
        return None
    if not stat.S_ISREG(st.st_mode):
        warn(f"skipping {path}: {_kind(st.st_mode)}, not a regular file")
        return None
    try:
        st = _probe(real, bases, reader)
    except PermissionError:
        return _error(spec, member, NOT_READABLE, f"{path} cannot be read by the worker")
    except ArtifactGone as gone:
        warn(f"skipping {path}: {gone}")
        return None
    return _data(spec, member, os.path.realpath(real), st, required=False)


# Re-exported so callers find the folder sink where docs/internals.md says; imported last because
# artifact_folder builds on the names above.
from tcworker.artifact_folder import write_to_folder  # noqa: E402

__all__ = [
    "Artifact",
    "ArtifactGone",
    "DataArtifact",
    "ErrorArtifact",
    "LinkArtifact",
    "ReferenceArtifact",
    "check_artifact_name",
    "collect",
    "open_artifact",
    "write_to_folder",
]
