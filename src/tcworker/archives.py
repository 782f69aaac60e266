"""Archive extraction and single-stream decompression for mounts, confined to a target directory.

Lives here:

- :func:`format_problem`: whether this worker can handle a mount's ``format`` (checked before
  anything runs; ``None`` means yes).
- :func:`extract`: unpack a directory mount's archive (``tar``, ``tar.gz``, ``tar.bz2``,
  ``tar.xz``, ``tar.zst``, ``tar.lz4``, ``tar.zz``, ``tar.br`` when ``brotli`` is installed,
  ``zip``, ``7z`` when ``py7zr`` is installed) into a directory.
- :func:`decompress`: a file mount's single-stream formats (``gz bz2 xz zst lz4 zz``, ``br``).

Safety (generic-worker rejects the same, ``peer-workers.md`` 1.5): no entry may land outside the
target: absolute names, ``..`` components and links pointing outside (or absolute) are refused as
:class:`ArchiveError`; tar goes through ``tarfile``'s ``data`` filter as a second fence (no device
files, no setuid bits). Zip entries keep their Unix mode (real zips rely on the executable bit)
and Unix symlinks stay symlinks when they point inside the target.

What does not live here: downloading the archive (:mod:`tcworker.downloads`), which mount goes
where (:mod:`tcworker.plugins.mounts`). Everything here is blocking: call it in a thread.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

CHUNK_BYTES = 1024 * 1024

# Single-stream codecs: name → (python module that provides it, or None for the stdlib).
_STREAMS: dict[str, str | None] = {
    "gz": None, "bz2": None, "xz": None, "zz": None, "zst": "zstandard", "lz4": "lz4", "br": "brotli",
}
_ARCHIVES = {"tar", "zip", "7z"} | {f"tar.{s}" for s in _STREAMS}


class ArchiveError(Exception):
    """The archive is broken or unsafe (an entry escaping the target): the task failed."""


def format_problem(fmt: str) -> str | None:
    """``None`` when ``fmt`` (a mount ``format``) can be handled here, else why not (one line).

    Formats of the payload schema that need a library this worker lacks (``rar``, ``tar.lz``,
    ``tar.mz``, ``tar.sz``; ``7z`` without ``py7zr``; ``br`` without ``brotli``) get a message
    meant for ``malformed-payload``.
    """
    stream = fmt[4:] if fmt.startswith("tar.") else fmt
    if fmt == "7z":
        module = "py7zr"
    elif fmt in ("tar", "zip"):
        return None
    elif stream in _STREAMS:
        module = _STREAMS[stream]
    else:
        return f"format {fmt!r} is not supported by this worker"
    if module is not None and importlib.util.find_spec(module) is None:
        return f"format {fmt!r} needs the Python package {module!r}, which this worker does not have"
    return None


# ------------------------------------------------------------------ streams
def open_stream(raw: BinaryIO, codec: str) -> BinaryIO:
    """A readable binary stream decoding ``raw`` with ``codec`` (a key of the single-stream table).

    Raises:
        ArchiveError: unknown codec.
    """
    if codec == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if codec == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if codec == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    if codec == "zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK_BYTES, closefd=False)
    if codec == "lz4":
        import lz4.frame

        return _Lz4Reader(lz4.frame.LZ4FrameFile(raw, mode="rb"))
    if codec in ("zz", "br"):
        return _IncrementalReader(raw, _zlib_or_brotli(codec))
    raise ArchiveError(f"unknown compression {codec!r}")


def _zlib_or_brotli(codec: str) -> Callable[[bytes], bytes]:
    if codec == "zz":
        return zlib.decompressobj().decompress
    import brotli  # optional: format_problem refuses br without it

    return brotli.Decompressor().process


class _Lz4Reader:
    """lz4 reports bad data as a bare ``RuntimeError``: make it an :class:`ArchiveError`."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner

    def read(self, size: int = -1) -> bytes:
        try:
            return self.inner.read(size)
        except RuntimeError as err:
            raise ArchiveError(f"not valid lz4 data: {err}") from None

    def tell(self) -> int:
        return self.inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.inner.seek(offset, whence)
        except RuntimeError as err:
            raise ArchiveError(f"not valid lz4 data: {err}") from None

    def close(self) -> None:
        self.inner.close()


class _IncrementalReader:
    """File-like ``read`` over a one-shot incremental decompressor (zlib, brotli)."""

    def __init__(self, raw: BinaryIO, step: Callable[[bytes], bytes]) -> None:
        self.raw, self.step, self.buffer = raw, step, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = self.raw.read(CHUNK_BYTES)
            if not chunk:
                break
            self.buffer += self.step(chunk)
        if size < 0:
            size = len(self.buffer)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def close(self) -> None:
        pass


def decompress(source: BinaryIO, dest: Path, fmt: str | None) -> int:
    """Write ``source`` to ``dest`` (replacing it), decoded by ``fmt`` when given.

    Returns:
        bytes written.

    Raises:
        ArchiveError: the stream is not valid ``fmt``.
        OSError: ``dest`` cannot be written.
    """
    stream = source if fmt is None else open_stream(source, fmt)
    written = 0
    try:
        with open(dest, "wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise ArchiveError(f"not valid {fmt} data: {err}") from None
    except Exception as err:  # zstandard.ZstdError, lz4/brotli errors: no common base class
        if type(err).__module__.split(".")[0] in ("zstandard", "lz4", "brotli", "_brotli"):
            raise ArchiveError(f"not valid {fmt} data: {err}") from None
        raise
    return written


# ------------------------------------------------------------------ archives
def extract(source: BinaryIO, dest: Path, fmt: str) -> None:
    """Unpack the archive ``source`` (seekable for zip and 7z) into the directory ``dest``.

    Args:
        source: binary file object positioned at the start of the archive.
        dest: target directory (created if missing).
        fmt: a mount ``format`` for which :func:`format_problem` returned ``None``.

    Raises:
        ArchiveError: corrupt archive, unsupported format, or an entry escaping ``dest``.
        OSError: writing into ``dest`` failed (disk full, permissions).
    """
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    try:
        if fmt == "zip":
            _extract_zip(source, dest)
        elif fmt == "7z":
            _extract_7z(source, dest)
        elif fmt == "tar" or fmt.startswith("tar."):
            stream = source if fmt == "tar" else open_stream(source, fmt[4:])
            _extract_tar(stream, dest)
        else:
            raise ArchiveError(f"unsupported archive format {fmt!r}")
    except ArchiveError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error) as err:
        raise ArchiveError(f"not a valid {fmt} archive: {err}") from None
    except OSError as err:
        if err.errno is None:  # gzip/bz2 report bad data as OSError without errno
            raise ArchiveError(f"not a valid {fmt} archive: {err}") from None
        raise
    except Exception as err:  # zstandard/lz4/brotli/py7zr errors have no common base class
        if type(err).__module__.split(".")[0] in ("zstandard", "lz4", "brotli", "_brotli", "py7zr"):
            raise ArchiveError(f"not a valid {fmt} archive: {err}") from None
        raise


def check_entry_name(name: str) -> str:
    """The normalized relative path of an archive entry.

    Raises:
        ArchiveError: absolute, or with a ``..`` component (it would land outside the target).
    """
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"entry {name!r} has an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ArchiveError(f"entry {name!r} has a '..' component")
    return posixpath.normpath("/".join(parts)) if name not in ("", ".") else "."


def _check_link(name: str, target: str, *, hard: bool) -> None:
    if target.startswith("/"):
        raise ArchiveError(f"link {name!r} points to the absolute path {target!r}")
    base = "" if hard else posixpath.dirname(check_entry_name(name))
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"link {name!r} points outside the target ({target!r})")


class _TarFence:
    """The extraction filter of one tar archive.

    Every entry is checked lexically (:func:`check_entry_name`, :func:`_check_link`). Entries
    whose path passes through a symlink (one made by this archive, or anything when ``dest`` was
    not empty), and links themselves, also go through ``tarfile``'s ``data`` filter, which
    resolves paths on disk (``realpath``): lexical checks alone are fooled by ``l1 -> .`` then
    ``l1/l2 -> ..``. Other entries get the same attributes as the ``data`` filter gives them
    without its per-entry ``realpath`` (the bulk of extraction time for many small files).
    """

    def __init__(self, dest: Path) -> None:
        self.suspect_all = any(dest.iterdir())
        self.links: set[str] = set()

    def __call__(self, member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        name = check_entry_name(member.name)
        is_link = member.issym() or member.islnk()
        if is_link:
            _check_link(member.name, member.linkname, hard=member.islnk())
        parts = name.split("/")
        through = self.suspect_all or any("/".join(parts[:i]) in self.links for i in range(1, len(parts) + 1))
        if member.issym():
            self.links.add(name)
        if through or is_link:
            return tarfile.data_filter(member, dest_path)
        return _data_attrs(member)


def _data_attrs(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What ``tarfile.data_filter`` does to a regular file or directory, minus the path checks."""
    attrs: dict = {"uid": None, "gid": None, "uname": None, "gname": None}
    if member.isreg():
        mode = member.mode & 0o755
        if not mode & 0o100:
            mode &= ~0o111
        attrs["mode"] = mode | 0o600
    elif member.isdir():
        attrs["mode"] = None
    else:
        raise ArchiveError(f"entry {member.name!r} is a special file (device or pipe)")
    return member.replace(**attrs, deep=False)


def _extract_tar(stream: BinaryIO, dest: Path) -> None:
    # Read once, front to back, as it is decompressed. "r:" needs only forward seeks, which the
    # decompressors offer, and skips "r|"'s buffer copies; readers without seek use "r|".
    seekable = hasattr(stream, "seek") and hasattr(stream, "tell")
    mode, extra = ("r:", {}) if seekable else ("r|", {"bufsize": CHUNK_BYTES})
    with tarfile.open(fileobj=stream, mode=mode, **extra) as tar:
        tar.copybufsize = CHUNK_BYTES
        tar.extractall(dest, filter=_TarFence(dest))


def _extract_zip(source: BinaryIO, dest: Path) -> None:
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        for info in infos:
            check_entry_name(info.filename)
        for info in infos:
            _extract_zip_entry(archive, info, dest)


def _extract_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    rel = check_entry_name(info.filename)
    target = dest / rel
    mode = (info.external_attr >> 16) if info.create_system == 3 else 0
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    _ensure_inside(dest, target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISLNK(mode):
        link = archive.read(info).decode("utf-8", "surrogateescape")
        _check_link(info.filename, link, hard=False)
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(link, target)
        return
    if target.is_symlink():
        target.unlink()  # never write through a link an earlier entry made
    with archive.open(info) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)
    perms = stat.S_IMODE(mode) & 0o777
    os.chmod(target, perms if perms else 0o644)


def _ensure_inside(dest: Path, path: Path) -> None:
    """Refuse a path whose existing part resolves (through links) outside ``dest``."""
    resolved = path.resolve()
    if resolved != dest and dest not in resolved.parents:
        raise ArchiveError(f"entry directory {path} resolves outside the target")


def _extract_7z(source: BinaryIO, dest: Path) -> None:
    import py7zr  # optional: format_problem refuses 7z without it

    with py7zr.SevenZipFile(source, mode="r") as archive:
        for name in archive.getnames():
            check_entry_name(name)
        archive.extractall(path=dest)  # py7zr also refuses entries outside ``path``
