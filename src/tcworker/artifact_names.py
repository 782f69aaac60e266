"""Artifact names, content types and content encodings: pure functions, no I/O.

- :func:`check_artifact_name` says why the queue would refuse a name (payload validation calls it,
  and so do :func:`tcworker.artifacts.collect` and the exec folder writer).
- :func:`guess_content_type` follows generic-worker: a small custom map, then the OS mime table
  by extension, then ``application/octet-stream``.
- :func:`default_content_encoding` picks ``identity`` or ``gzip`` for ``s3`` artifacts (``object``
  artifacts are always stored identity-encoded by the Object service).

What does not live here: reading files (:mod:`tcworker.artifacts`), uploading
(:mod:`tcworker.queue.upload`).
"""

from __future__ import annotations

import mimetypes
import os

# The queue's URL pattern for artifact names is ``^[\x20-\x7e]+$`` (printable ASCII, slashes
# allowed); a name outside it gets 400 InvalidRequestArguments at upload time, after the task ran
# (taskcluster/taskcluster#6577). We refuse such names up front instead.
_PRINTABLE_ASCII = range(0x20, 0x7F)

# generic-worker's own map, consulted before the OS table (peer-workers.md 1.3).
_CUSTOM_TYPES = {
    ".log": "text/plain",
    ".jsonl": "application/jsonl",
}

# Python's mimetypes treats these as *encodings* of another type, not types; Go's table (which
# generic-worker uses) gives them a type of their own.
_COMPRESSED_TYPES = {
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
    ".br": "application/x-brotli",
    ".zst": "application/zstd",
    ".lz4": "application/x-lz4",
    ".z": "application/x-compress",
}

# Extensions generic-worker never gzips because they are compressed already (artifacts.go; the
# schema documents a subset). peer-workers.md 1.3.
ALREADY_COMPRESSED_EXTENSIONS = frozenset(
    "7z br aab apk bz2 deb dmg flv gif gz jar jpeg jpg lz lz4 mz npz pkg png swf sz tbz tgz wasm "
    "webp whl woff woff2 xpi xz zip zst zz".split()
)

_TEXT_LIKE_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/x-sh",
        "application/x-csh",
        "application/x-tex",
        "application/x-latex",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/sql",
        "application/xhtml+xml",
        "application/x-httpd-php",
        "application/rtf",
        "application/postscript",
    }
)


def check_artifact_name(name: object, *, directory: bool = False) -> str | None:
    """Say why the queue cannot store an artifact under ``name``, or ``None`` when it can.

    Refused (FM-01, FM-06): a non-string or empty name; a character outside printable ASCII
    (control characters such as ``\\n``, and non-ASCII such as ``é``: the queue's name pattern is
    ``^[\\x20-\\x7e]+$``); a leading ``/``; an empty segment (``//``, or a trailing ``/``); a ``.``
    or ``..`` segment (``./x``, ``a/../b``). Accepted: anything else, ``+ % space \\`` included.

    Args:
        name: the artifact name as published (``public/logs/live.log``).
        directory: the name of a directory artifact; one trailing ``/`` is allowed there, because
            files are published as ``<name>/<relative path>`` with the slash collapsed.

    Returns:
        ``None``, or a one-line message for the task log that quotes the name with ``repr``.
    """
    if not isinstance(name, str):
        return f"artifact name must be a string, got {type(name).__name__}"
    if name == "" or (directory and name == "/"):
        return "artifact name is empty"
    shown = repr(name)
    for char in name:
        if ord(char) not in _PRINTABLE_ASCII:
            kind = "a control character" if ord(char) < 0x20 or ord(char) == 0x7F else "a non-ASCII character"
            return (
                f"artifact name {shown} contains {kind} ({char!r}, U+{ord(char):04X}); "
                "the queue stores only printable ASCII names (0x20-0x7e)"
            )
    if name.startswith("/"):
        return f"artifact name {shown} starts with '/'; artifact names are relative (e.g. 'public/x.log')"
    body = name[:-1] if directory and name.endswith("/") else name
    for segment in body.split("/"):
        if segment == "":
            return f"artifact name {shown} contains an empty path segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"artifact name {shown} contains a {segment!r} path segment"
    return None


def join_artifact_name(directory_name: str, relative_path: str) -> str:
    """``<directory_name>/<relative_path>`` with forward slashes and one separator.

    Args:
        directory_name: a directory artifact's name (a trailing ``/`` is dropped).
        relative_path: path of a file below the directory, in the OS's separators (on POSIX a
            ``\\`` is part of a file name and stays).
    """
    rel = relative_path.replace(os.sep, "/") if os.sep != "/" else relative_path
    return directory_name.rstrip("/") + "/" + rel.lstrip("/")


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def guess_content_type(name: str) -> str:
    """The content type generic-worker would give an artifact called ``name``.

    Order: ``.log`` → ``text/plain``, ``.jsonl`` → ``application/jsonl``; then the OS mime table by
    the last extension (``text/*`` types get ``; charset=utf-8``, as Go's ``mime`` package adds);
    then ``application/octet-stream``. Extensions are tried as given, then lower-cased.
    """
    ext = _extension(name)
    if not ext:
        return "application/octet-stream"
    for candidate in (ext, ext.lower()):
        if candidate in _CUSTOM_TYPES:
            return _CUSTOM_TYPES[candidate]
    if not mimetypes.inited:
        mimetypes.init()
    for candidate in (ext, ext.lower()):
        found = mimetypes.types_map.get(candidate) or mimetypes.common_types.get(candidate)
        if found is None:
            found = _COMPRESSED_TYPES.get(candidate)
        if found:
            if found.startswith("text/") and "charset" not in found:
                found += "; charset=utf-8"
            return found
    return "application/octet-stream"


def is_text_like(content_type: str) -> bool:
    """Whether gzip pays for a body of ``content_type`` (``text/*``, JSON, XML, scripts, SVG)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime.startswith("text/"):
        return True
    if mime.endswith("+json") or mime.endswith("+xml"):
        return True
    return mime in _TEXT_LIKE_APPLICATION_TYPES


def default_content_encoding(name: str, content_type: str) -> str:
    """``identity`` or ``gzip`` for an ``s3`` artifact when the payload gives no encoding.

    ``identity`` for extensions that are compressed already (:data:`ALREADY_COMPRESSED_EXTENSIONS`)
    and for types that are not text-like; ``gzip`` for text-like types (FM-07). generic-worker
    gzips every other extension; we skip binaries, which gain little and cost CPU.
    """
    if _extension(name).lower().lstrip(".") in ALREADY_COMPRESSED_EXTENSIONS:
        return "identity"
    return "gzip" if is_text_like(content_type) else "identity"
