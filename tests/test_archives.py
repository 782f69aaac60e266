"""Archive extraction and decompression (tcworker.archives): every format, modes kept, and the
fence: no entry may land outside the target (``..``, absolute names, escaping links).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from tcworker.archives import ArchiveError, decompress, extract, format_problem

COMPRESS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "lz4": lz4.frame.compress,
    "zz": zlib.compress,
}


def tar_bytes(entries: list[tarfile.TarInfo | tuple[str, bytes, int]]) -> bytes:
    """A plain tar of ``(name, data, mode)`` files and prepared ``TarInfo`` entries (links, dirs)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data, mode = entry
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


SAMPLE = [("bin/tool", b"#!/bin/sh\necho tool\n", 0o755), ("data/readme.txt", b"hello\n", 0o644)]


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst", "tar.lz4", "tar.zz"])
def test_given_each_tar_format_when_extracted_then_files_and_exec_bit_are_there(tmp_path: Path, fmt: str):
    raw = tar_bytes(SAMPLE + [link("bin/alias", "tool")])
    data = raw if fmt == "tar" else COMPRESS[fmt[4:]](raw)
    assert format_problem(fmt) is None
    extract(io.BytesIO(data), tmp_path / "out", fmt)
    tool = tmp_path / "out" / "bin" / "tool"
    assert tool.read_bytes() == b"#!/bin/sh\necho tool\n"
    assert os.stat(tool).st_mode & stat.S_IXUSR
    assert (tmp_path / "out" / "data" / "readme.txt").read_text() == "hello\n"
    assert os.readlink(tmp_path / "out" / "bin" / "alias") == "tool"


def zip_bytes(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return buf.getvalue()


def test_given_a_zip_with_unix_modes_when_extracted_then_the_executable_bit_and_symlinks_stay(tmp_path: Path):
    data = zip_bytes([
        ("cmd/git", b"#!/bin/sh\necho git\n", stat.S_IFREG | 0o755),
        ("etc/conf", b"x=1\n", stat.S_IFREG | 0o644),
        ("cmd/g", b"git", stat.S_IFLNK | 0o777),
        ("empty/", b"", stat.S_IFDIR | 0o755),
    ])
    extract(io.BytesIO(data), tmp_path / "out", "zip")
    git = tmp_path / "out" / "cmd" / "git"
    assert stat.S_IMODE(os.stat(git).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "etc" / "conf").st_mode) == 0o644
    assert os.readlink(tmp_path / "out" / "cmd" / "g") == "git"
    assert (tmp_path / "out" / "empty").is_dir()


@pytest.mark.parametrize("entries", [
    [("../evil", b"x", 0o644)],
    [("a/../../evil", b"x", 0o644)],
    [("/tmp/evil-absolute", b"x", 0o644)],
    [link("esc", "../../outside")],
    [link("abs", "/etc/passwd")],
    [link("hard", "../outside", tarfile.LNKTYPE)],
    [link("d", "."), link("d/../../evil", "x")],
    [link("l1", "."), link("l1/l2", ".."), ("l1/l2/evil", b"x", 0o644)],  # lexically inside, really not
    [link("in", "sub"), ("sub/x", b"x", 0o644), link("in/up", "../../.."), ("in/up/evil", b"x", 0o644)],
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out",
        "link-then-dotdot", "link-chain", "link-through-link"])
def test_given_a_tar_escaping_its_target_when_extracted_then_refused_and_nothing_written_outside(
        tmp_path: Path, entries):
    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(ArchiveError):
        extract(io.BytesIO(gzip.compress(tar_bytes(entries))), target, "tar.gz")
    assert not (tmp_path / "a" / "b" / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/evil-absolute").exists()


def test_given_a_device_or_fifo_entry_when_extracted_then_refused(tmp_path: Path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(ArchiveError):
        extract(io.BytesIO(tar_bytes([fifo])), tmp_path / "out", "tar")


def test_given_a_setuid_world_writable_file_then_extracted_without_those_bits(tmp_path: Path):
    extract(io.BytesIO(tar_bytes([("f", b"x", 0o4777), ("g", b"y", 0o444)])), tmp_path / "out", "tar")
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "f").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "g").st_mode) == 0o644  # owner can write


def test_given_a_symlink_then_a_file_through_it_when_extracted_then_the_outside_file_is_untouched(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    raw = tar_bytes([link("sub", "../../outside"), ("sub/owned", b"x", 0o644)])
    with pytest.raises(ArchiveError):
        extract(io.BytesIO(raw), tmp_path / "t" / "out", "tar")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil"])
def test_given_a_zip_escaping_its_target_when_extracted_then_refused(tmp_path: Path, name: str):
    data = zip_bytes([("ok", b"x", stat.S_IFREG | 0o644), (name, b"x", stat.S_IFREG | 0o644)])
    with pytest.raises(ArchiveError, match="absolute|'..'"):
        extract(io.BytesIO(data), tmp_path / "t" / "out", "zip")
    assert not (tmp_path / "t" / "evil").exists()
    assert not (tmp_path / "t" / "out" / "ok").exists()  # checked before anything is written


def test_given_a_zip_symlink_out_of_the_target_when_extracted_then_refused(tmp_path: Path):
    data = zip_bytes([("l", b"../../etc", stat.S_IFLNK | 0o777)])
    with pytest.raises(ArchiveError, match="outside"):
        extract(io.BytesIO(data), tmp_path / "out", "zip")


@pytest.mark.parametrize("fmt,data", [
    ("tar.gz", b"not gzip at all" * 10),
    ("tar.zst", b"\x28\xb5\x2f\xfd garbage" * 10),
    ("tar.xz", b"garbage" * 10),
    ("tar.bz2", b"BZh9 garbage" * 10),
    ("tar.lz4", b"garbage" * 10),
    ("zip", b"PK garbage" * 10),
    ("tar", b"x" * 1024),
])
def test_given_a_corrupt_archive_when_extracted_then_archive_error(tmp_path: Path, fmt: str, data: bytes):
    with pytest.raises(ArchiveError, match="not (a )?valid"):
        extract(io.BytesIO(data), tmp_path / "out", fmt)


def test_given_a_truncated_tar_zst_when_extracted_then_archive_error(tmp_path: Path):
    data = zstandard.ZstdCompressor().compress(tar_bytes([("big", os.urandom(200_000), 0o644)]))
    with pytest.raises(ArchiveError):
        extract(io.BytesIO(data[: len(data) // 2]), tmp_path / "out", "tar.zst")


@pytest.mark.parametrize("fmt", sorted(COMPRESS))
def test_given_each_single_stream_format_when_decompressed_then_bytes_match(tmp_path: Path, fmt: str):
    payload = b"line\n" * 5000 + os.urandom(1000)
    written = decompress(io.BytesIO(COMPRESS[fmt](payload)), tmp_path / "f", fmt)
    assert written == len(payload)
    assert (tmp_path / "f").read_bytes() == payload


def test_given_no_format_when_decompressed_then_copied_as_is(tmp_path: Path):
    decompress(io.BytesIO(b"raw bytes"), tmp_path / "f", None)
    assert (tmp_path / "f").read_bytes() == b"raw bytes"


def test_given_bad_single_stream_data_when_decompressed_then_archive_error(tmp_path: Path):
    with pytest.raises(ArchiveError, match="not valid gz"):
        decompress(io.BytesIO(b"plain text, not gzip"), tmp_path / "f", "gz")


@pytest.mark.parametrize("fmt", ["rar", "tar.lz", "tar.mz", "tar.sz"])
def test_given_a_format_without_a_library_then_format_problem_says_so(fmt: str):
    problem = format_problem(fmt)
    assert problem is not None and fmt in problem


def test_7z_and_brotli_are_supported_only_with_their_libraries():
    import importlib.util

    for fmt, module in (("7z", "py7zr"), ("tar.br", "brotli"), ("br", "brotli")):
        problem = format_problem(fmt)
        if importlib.util.find_spec(module) is None:
            assert problem is not None and module in problem
        else:
            assert problem is None
