"""``tcworker exec``'s artifact sink: artifacts written to a folder instead of the queue.

:func:`write_to_folder` copies each data artifact to ``DIR/<name>`` (renames exec's scratch log into
place), writes a ``link`` artifact as a file under its own name (a hard link to its target's file,
or a copy across filesystems), never writes an error artifact under its name, and records
every artifact in ``DIR/.tcworker/artifacts.json``::

    {"artifacts": [
      {"name": "public/a.txt", "storageType": "object", "contentType": "text/plain; charset=utf-8",
       "size": 3, "sha256": "<64 hex>"},
      {"name": "public/latest.txt", "storageType": "link", "artifact": "public/a.txt", ...},
      {"name": "public/missing", "storageType": "error", "reason": "file-missing-on-worker",
       "message": "...", "contentType": null, "size": null, "sha256": null}
    ]}

What does not live here: collecting the files (:mod:`tcworker.artifacts`), queue uploads
(:mod:`tcworker.queue.upload`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from tcworker.artifact_names import check_artifact_name
from tcworker.fsutil import make_dirs
from tcworker.artifacts import (
    INVALID_RESOURCE,
    ArtifactGone,
    DataArtifact,
    ErrorArtifact,
    open_artifact,
)

MANIFEST_DIR = ".tcworker"
MANIFEST_NAME = "artifacts.json"
_CHUNK_BYTES = 1 << 20


def write_to_folder(
    artifacts: Iterable[DataArtifact | ErrorArtifact],
    out_dir: Path,
    *,
    links: Mapping[str, str] | None = None,
    storage_type: str = "object",
    moves: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Write ``artifacts`` below ``out_dir`` and return the manifest (also written to disk).

    Blocking: call it in a thread. Existing files of the same name are replaced atomically; other
    files in ``out_dir`` are left alone.

    Args:
        artifacts: from :func:`tcworker.artifacts.collect`.
        out_dir: the folder (created when missing).
        links: ``{link name: target artifact name}`` (the live log's ``link`` artifact).
        storage_type: recorded for data artifacts (``object`` or ``s3``, as the worker would upload).
        moves: names of artifacts whose file is a scratch file (exec's task log): renamed into place
            when on the same filesystem instead of copied (the source is gone afterwards).

    Returns:
        ``{"artifacts": [entry, ...]}`` sorted by name; each entry has ``name``, ``storageType``,
        ``contentType``, ``size``, ``sha256`` (``None`` for errors), plus ``reason``/``message``
        for errors and ``artifact`` for links. A data artifact that cannot be written (its file
        vanished, or its name resolves outside ``out_dir``) is recorded as an error entry.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    real_out = os.path.realpath(out_dir)
    entries: dict[str, dict[str, Any]] = {}
    written: dict[str, dict[str, Any]] = {}
    for artifact in artifacts:
        if isinstance(artifact, ErrorArtifact):
            entries[artifact.name] = _error_entry(artifact.name, artifact.reason, artifact.message)
            _remove_stale(real_out, artifact.name)
            continue
        entry = _write_data(artifact, real_out, storage_type, move=artifact.name in moves)
        entries[artifact.name] = entry
        if entry["storageType"] != "error":
            written[artifact.name] = entry
    for name, target in (links or {}).items():
        entries[name] = _write_link(name, target, written, real_out)
    manifest = {"artifacts": [entries[name] for name in sorted(entries)]}
    manifest_dir = Path(real_out) / MANIFEST_DIR
    manifest_dir.mkdir(exist_ok=True)
    _atomic_write(manifest_dir / MANIFEST_NAME, json.dumps(manifest, indent=2).encode() + b"\n")
    return manifest


def destination(out_dir: str, name: str) -> Path:
    """The file ``name`` is written to below the resolved ``out_dir``.

    Raises:
        ValueError: the queue would refuse ``name``, it is inside ``.tcworker/``, or it resolves
            outside ``out_dir`` (through a link already in the folder).
    """
    problem = check_artifact_name(name)
    if problem:
        raise ValueError(problem)
    if name.split("/", 1)[0] == MANIFEST_DIR:
        raise ValueError(f"artifact name {name!r} is inside {MANIFEST_DIR}/, which tcworker exec uses")
    dest = Path(out_dir, *name.split("/"))
    parent = os.path.realpath(dest.parent)
    if parent != out_dir and not parent.startswith(out_dir.rstrip(os.sep) + os.sep):
        raise ValueError(f"artifact name {name!r} resolves outside {out_dir}")
    return dest


def _remove_stale(out_dir: str, name: str) -> None:
    """Remove a file an earlier run left under an error artifact's name (it would mislead)."""
    try:
        dest = destination(out_dir, name)
    except ValueError:
        return
    if dest.is_file() and not dest.is_symlink():
        dest.unlink()


def _error_entry(name: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "name": name,
        "storageType": "error",
        "reason": reason,
        "message": message,
        "contentType": None,
        "size": None,
        "sha256": None,
    }


def _write_data(artifact: DataArtifact, out_dir: str, storage_type: str, move: bool = False) -> dict[str, Any]:
    try:
        dest = destination(out_dir, artifact.name)
        if move and _moved(artifact.path, dest):
            with open(dest, "rb") as moved:
                sha256 = hashlib.file_digest(moved, "sha256").hexdigest()
            return {"name": artifact.name, "storageType": storage_type, "contentType": artifact.content_type,
                    "size": os.stat(dest).st_size, "sha256": sha256}
        source, size = open_artifact(artifact)
    except ValueError as err:
        return _error_entry(artifact.name, INVALID_RESOURCE, str(err))
    except ArtifactGone as gone:
        return _error_entry(artifact.name, gone.reason, str(gone))
    except OSError as err:  # only from a move: open_artifact raises ArtifactGone
        return _error_entry(artifact.name, INVALID_RESOURCE, f"cannot move {artifact.path} into place: {err}")
    with source:
        try:
            sha256 = _copy(source, size, dest)
        except (OSError, ValueError) as err:
            return _error_entry(artifact.name, INVALID_RESOURCE, f"cannot write {dest}: {err}")
    return {
        "name": artifact.name,
        "storageType": storage_type,
        "contentType": artifact.content_type,
        "size": size,
        "sha256": sha256,
    }


def _moved(source: Path, dest: Path) -> bool:
    """Rename ``source`` to ``dest``; False (nothing done) when they are on different filesystems."""
    make_dirs(dest.parent)
    try:
        os.replace(source, dest)
    except OSError as err:
        if err.errno == errno.EXDEV:
            return False
        raise
    return True


def _write_link(name: str, target: str, written: Mapping[str, dict[str, Any]], out_dir: str) -> dict[str, Any]:
    entry = written.get(target)
    if entry is None:
        return _error_entry(name, INVALID_RESOURCE, f"link target {target!r} is not a written data artifact")
    try:
        dest = destination(out_dir, name)
        make_dirs(dest.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tcworker-", dir=dest.parent)
        os.close(fd)
        os.unlink(tmp)
        try:  # a hard link to the file just written (else a kernel-side copy): size and sha256 known
            try:
                os.link(Path(out_dir, *target.split("/")), tmp)
            except OSError:
                shutil.copyfile(Path(out_dir, *target.split("/")), tmp)
            if os.stat(tmp).st_size != entry["size"]:
                raise ValueError(f"{target!r} changed while copying")
            os.replace(tmp, dest)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        sha256 = entry["sha256"]
    except (OSError, ValueError) as err:
        return _error_entry(name, INVALID_RESOURCE, f"cannot write link {name!r}: {err}")
    return {
        "name": name,
        "storageType": "link",
        "artifact": target,
        "contentType": entry["contentType"],
        "size": entry["size"],
        "sha256": sha256,
    }


def _copy(source: Any, size_bytes: int, dest: Path) -> str:
    """Copy exactly ``size_bytes`` from ``source`` to ``dest`` (atomically); return the sha256."""
    make_dirs(dest.parent)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".tcworker-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            remaining = size_bytes
            while remaining > 0:
                chunk = source.read(min(_CHUNK_BYTES, remaining))
                if not chunk:
                    raise ValueError(f"file shrank while copying ({remaining} bytes short)")
                digest.update(chunk)
                out.write(chunk)
                remaining -= len(chunk)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tcworker-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
