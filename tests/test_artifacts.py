"""Tests of :mod:`tcworker.artifacts` (collect, open) and :mod:`tcworker.artifact_names`.

The folder sink for ``tcworker exec`` is tested in ``test_artifacts_folder.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tcworker.artifact_names import (
    check_artifact_name,
    default_content_encoding,
    guess_content_type,
    join_artifact_name,
)
from tcworker.artifacts import (
    ArtifactGone,
    DataArtifact,
    ErrorArtifact,
    collect,
    open_artifact,
)
from tcworker.errors import MalformedPayload
from tcworker.payloads.common import ArtifactSpec

EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)


def spec(path: str, *, name: str | None = None, kind: str = "file", optional: bool = False, **kw) -> ArtifactSpec:
    return ArtifactSpec(
        name=name if name is not None else path,
        path=path,
        kind=kind,  # type: ignore[arg-type]
        expires=kw.get("expires", EXPIRES),
        content_type=kw.get("content_type"),
        content_encoding=kw.get("content_encoding"),
        optional=optional,
    )


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    d = tmp_path / "task"
    d.mkdir()
    return d


def by_name(artifacts):
    return {a.name: a for a in artifacts}


# ----------------------------------------------------------------------------- names (FM-01, FM-06)


@pytest.mark.parametrize(
    "name",
    [
        "public/logs/../../../foo.log",
        "../foo",
        "public/..",
        "/etc/passwd",
        "public//x",
        "./x",
        "public/./x",
        "",
        "public/",
        "public/a\nb.txt",
        "public/tab\t.txt",
        "public/del\x7f",
        "public/café.txt",
    ],
)
def test_fm01_fm06_names_the_queue_refuses_have_a_clear_message(name: str) -> None:
    problem = check_artifact_name(name)
    assert problem is not None
    if name:
        assert repr(name) in problem


@pytest.mark.parametrize(
    "name",
    [
        "public/a+b.txt",
        "public/100%.log",
        "public/with space.txt",
        "public/https%3A%2F%2Fx/y.json",
        "public/back\\slash",
        "public/logs/live.log",
        "x",
        "...",
        "public/.hidden",
        "a..b",
    ],
)
def test_fm06_odd_but_storable_names_are_accepted(name: str) -> None:
    assert check_artifact_name(name) is None


def test_control_and_non_ascii_characters_are_named_in_the_message() -> None:
    assert "control character" in check_artifact_name("a\nb")  # type: ignore[operator]
    assert "U+000A" in check_artifact_name("a\nb")  # type: ignore[operator]
    assert "non-ASCII" in check_artifact_name("café")  # type: ignore[operator]


def test_directory_names_may_end_with_one_slash() -> None:
    assert check_artifact_name("public/build/", directory=True) is None
    assert check_artifact_name("public/build//", directory=True) is not None
    assert check_artifact_name("/", directory=True) is not None
    assert check_artifact_name(None) is not None  # type: ignore[arg-type]


def test_join_artifact_name_uses_one_forward_slash() -> None:
    assert join_artifact_name("public/build/", "a/b.txt") == "public/build/a/b.txt"
    assert join_artifact_name("out", "x\\y") == "out/x\\y"  # a backslash is part of a POSIX name


# ----------------------------------------------------------------------------- content type and encoding


@pytest.mark.parametrize(
    "name, expected",
    [
        ("public/logs/live.log", "text/plain"),
        ("x.jsonl", "application/jsonl"),
        ("data.json", "application/json"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("index.HTML", "text/html; charset=utf-8"),
        ("b.tar.gz", "application/gzip"),
        ("x.tar.zst", "application/zstd"),
        ("image.tar.lz4", "application/x-lz4"),
        ("README", "application/octet-stream"),
        ("weird.zzzunknown", "application/octet-stream"),
        (".bashrc", "application/octet-stream"),
    ],
)
def test_content_type_guess_follows_generic_worker(name: str, expected: str) -> None:
    assert guess_content_type(name) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("image.tar.lz4", "identity"),
        ("x.tar.zst", "identity"),
        ("a.dmg", "identity"),
        ("b.tar.gz", "identity"),
        ("pic.PNG", "identity"),
        ("log.txt", "gzip"),
        ("data.json", "gzip"),
        ("live.log", "gzip"),
        ("blob.bin", "identity"),
    ],
)
def test_fm07_default_encoding_gzips_only_text_like_uncompressed_files(name: str, expected: str) -> None:
    assert default_content_encoding(name, guess_content_type(name)) == expected


def test_payload_content_type_and_encoding_win(task_dir: Path) -> None:
    (task_dir / "a.bin").write_bytes(b"x")
    [art] = collect(
        [spec("a.bin", content_type="text/x-custom", content_encoding="gzip")], task_dir, task_dir=task_dir
    )
    assert isinstance(art, DataArtifact)
    assert (art.content_type, art.content_encoding) == ("text/x-custom", "gzip")


# ----------------------------------------------------------------------------- collect: files


def test_file_artifact_becomes_data_artifact_with_resolved_path_and_size(task_dir: Path) -> None:
    (task_dir / "hello.log").write_text("hi\n")
    [art] = collect([spec("hello.log", name="public/hello.log")], task_dir, task_dir=task_dir)
    assert art == DataArtifact(
        name="public/hello.log",
        path=Path(os.path.realpath(task_dir / "hello.log")),
        size_bytes=3,
        content_type="text/plain",
        content_encoding="gzip",
        expires=EXPIRES,
        file_id=art.file_id,
        required=True,
    )


def test_absolute_path_inside_task_dir_is_accepted(task_dir: Path) -> None:
    (task_dir / "a.txt").write_text("a")
    [art] = collect([spec(str(task_dir / "a.txt"), name="public/a.txt")], task_dir, task_dir=task_dir)
    assert isinstance(art, DataArtifact)


def test_artifact_root_other_than_task_dir_is_also_a_containment_base(tmp_path: Path, task_dir: Path) -> None:
    root = tmp_path / "container-root"
    (root / "builds").mkdir(parents=True)
    (root / "builds" / "out.txt").write_text("x")
    [art] = collect([spec(str(root / "builds/out.txt"), name="public/out.txt")], root, task_dir=task_dir)
    assert isinstance(art, DataArtifact)


def test_fm03_missing_required_file_fails_task(task_dir: Path) -> None:
    [art] = collect([spec("nothere.txt", name="public/nothere.txt")], task_dir, task_dir=task_dir)
    assert isinstance(art, ErrorArtifact)
    assert (art.name, art.reason, art.fails_task) == ("public/nothere.txt", "file-missing-on-worker", True)
    assert "nothere.txt" in art.message


def test_fm03_missing_directory_artifact_optional_or_not(task_dir: Path) -> None:
    """Given directory artifact ``crashinfo`` never created; optional still gets an error artifact
    (generic-worker does so) but does not fail the task."""
    required, optional = collect(
        [
            spec("crashinfo", name="public/crashinfo", kind="directory"),
            spec("crashinfo", name="public/crashinfo-opt", kind="directory", optional=True),
        ],
        task_dir,
        task_dir=task_dir,
    )
    assert isinstance(required, ErrorArtifact) and isinstance(optional, ErrorArtifact)
    assert (required.reason, required.fails_task) == ("file-missing-on-worker", True)
    assert (optional.reason, optional.fails_task) == ("file-missing-on-worker", False)


def test_fm03_directory_declared_as_file_is_invalid_resource(task_dir: Path) -> None:
    (task_dir / "out").mkdir()
    (task_dir / "f.txt").write_text("x")
    as_file, as_dir = collect(
        [spec("out", name="public/out"), spec("f.txt", name="public/f", kind="directory")],
        task_dir,
        task_dir=task_dir,
    )
    assert isinstance(as_file, ErrorArtifact) and as_file.reason == "invalid-resource-on-worker"
    assert "type: directory" in as_file.message
    assert isinstance(as_dir, ErrorArtifact) and as_dir.reason == "invalid-resource-on-worker"


def test_unreadable_file_is_file_not_readable(task_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads everything, so the permission error is simulated at ``os.open``."""
    (task_dir / "secret.txt").write_text("x")
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    [art] = collect([spec("secret.txt", name="public/secret.txt")], task_dir, task_dir=task_dir)
    assert isinstance(art, ErrorArtifact) and art.reason == "file-not-readable-on-worker"


def test_file_link_to_outside_is_an_error_and_host_file_untouched(tmp_path: Path, task_dir: Path) -> None:
    host = tmp_path / "host-secret"
    host.write_text("secret")
    (task_dir / "link").symlink_to(host)
    [art] = collect([spec("link", name="public/link")], task_dir, task_dir=task_dir)
    assert isinstance(art, ErrorArtifact) and art.reason == "invalid-resource-on-worker"
    assert "outside" in art.message
    assert host.read_text() == "secret"


def test_file_path_escaping_with_dotdot_is_an_error(tmp_path: Path, task_dir: Path) -> None:
    (tmp_path / "outside.txt").write_text("x")
    [art] = collect([spec("../outside.txt", name="public/o.txt")], task_dir, task_dir=task_dir)
    assert isinstance(art, ErrorArtifact) and art.reason == "invalid-resource-on-worker"


def test_fifo_declared_as_file_is_never_opened(task_dir: Path) -> None:
    os.mkfifo(task_dir / "pipe")
    [art] = collect([spec("pipe", name="public/pipe")], task_dir, task_dir=task_dir)  # would block if opened
    assert isinstance(art, ErrorArtifact) and art.reason == "invalid-resource-on-worker"
    assert "FIFO" in art.message


def test_fm01_bad_spec_name_raises_malformed_payload_naming_it(task_dir: Path) -> None:
    with pytest.raises(MalformedPayload) as err:
        collect([spec("hello.log", name="public/logs/../../../foo.log")], task_dir, task_dir=task_dir)
    assert "public/logs/../../../foo.log" in str(err.value)


def test_duplicate_and_reserved_names_keep_the_first_and_warn(task_dir: Path) -> None:
    (task_dir / "a.txt").write_text("a")
    (task_dir / "b.txt").write_text("b")
    warnings: list[str] = []
    arts = collect(
        [spec("a.txt", name="public/x"), spec("b.txt", name="public/x"), spec("b.txt", name="public/logs/live.log")],
        task_dir,
        task_dir=task_dir,
        reserved={"public/logs/live.log"},
        warn=warnings.append,
    )
    assert [a.path.name for a in arts] == ["a.txt"]  # type: ignore[union-attr]
    assert len(warnings) == 2 and "reserved" in warnings[1]


# ----------------------------------------------------------------------------- collect: directories


def test_directory_publishes_relative_paths_with_forward_slashes(task_dir: Path) -> None:
    (task_dir / "out/sub/deeper").mkdir(parents=True)
    (task_dir / "out/a.txt").write_text("a")
    (task_dir / "out/sub/deeper/b.json").write_text("{}")
    arts = collect([spec("out", name="public/build/", kind="directory")], task_dir, task_dir=task_dir)
    assert [a.name for a in arts] == ["public/build/a.txt", "public/build/sub/deeper/b.json"]
    assert all(isinstance(a, DataArtifact) and not a.required for a in arts)
    assert arts[1].content_type == "application/json"  # type: ignore[union-attr]


def test_empty_directory_publishes_nothing(task_dir: Path) -> None:
    (task_dir / "out").mkdir()
    assert collect([spec("out", kind="directory")], task_dir, task_dir=task_dir) == []


def test_fm19_links_in_a_directory_only_regular_files_inside_are_published(tmp_path: Path, task_dir: Path) -> None:
    """Given in out/: a link to a file inside, a link to a host file, a dangling link, a link to a
    directory; then only the inside file is published (under both names), nothing crashes."""
    host = tmp_path / "host.txt"
    host.write_text("host")
    out = task_dir / "out"
    (out / "d").mkdir(parents=True)
    (out / "real.txt").write_text("real")
    (out / "inside-link").symlink_to("real.txt")
    (out / "outside-link").symlink_to(host)
    (out / "dangling").symlink_to("nowhere")
    (out / "dirlink").symlink_to(out / "d")
    (out / "loop").symlink_to("loop")
    warnings: list[str] = []
    arts = collect([spec("out", name="public/out", kind="directory")], task_dir, task_dir=task_dir, warn=warnings.append)
    assert sorted(a.name for a in arts) == ["public/out/inside-link", "public/out/real.txt"]
    assert {a.path for a in arts} == {Path(os.path.realpath(out / "real.txt"))}  # type: ignore[union-attr]
    joined = "\n".join(warnings)
    for word in ("outside-link", "dangling", "dirlink", "loop"):
        assert word in joined
    assert host.read_text() == "host"


def test_fm19_directory_that_is_a_link_to_outside_is_refused(tmp_path: Path, task_dir: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("x")
    (task_dir / "out").symlink_to(tmp_path / "etc")
    [art] = collect([spec("out", kind="directory")], task_dir, task_dir=task_dir)
    assert isinstance(art, ErrorArtifact) and art.reason == "invalid-resource-on-worker"


def test_fifos_and_sockets_in_a_directory_are_skipped_without_blocking(task_dir: Path) -> None:
    out = task_dir / "out"
    out.mkdir()
    (out / "ok.txt").write_text("ok")
    os.mkfifo(out / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(out / "sock"))
        warnings: list[str] = []
        arts = collect([spec("out", kind="directory")], task_dir, task_dir=task_dir, warn=warnings.append)
    finally:
        sock.close()
    assert [a.name for a in arts] == ["out/ok.txt"]
    assert any("FIFO" in w for w in warnings) and any("socket" in w for w in warnings)


def test_fm06_files_with_names_the_queue_refuses_are_skipped_with_a_warning(task_dir: Path) -> None:
    out = task_dir / "out"
    out.mkdir()
    (out / "a+b %.txt").write_text("ok")
    (out / "new\nline.txt").write_text("x")
    (out / "café.txt").write_text("x")
    warnings: list[str] = []
    arts = collect([spec("out", name="public", kind="directory")], task_dir, task_dir=task_dir, warn=warnings.append)
    assert [a.name for a in arts] == ["public/a+b %.txt"]
    assert len(warnings) == 2


# ----------------------------------------------------------------------------- open_artifact (FM-02)


def test_fm02_file_vanishing_after_collect_raises_artifact_gone(task_dir: Path) -> None:
    (task_dir / "out").mkdir()
    (task_dir / "out/b.txt").write_text("b")
    [art] = collect([spec("out", kind="directory")], task_dir, task_dir=task_dir)
    (task_dir / "out/b.txt").unlink()
    with pytest.raises(ArtifactGone) as gone:
        open_artifact(art)  # type: ignore[arg-type]
    assert gone.value.reason == "file-missing-on-worker"


def test_file_replaced_by_a_link_or_other_file_after_collect_is_refused(tmp_path: Path, task_dir: Path) -> None:
    (task_dir / "a.txt").write_text("a")
    [art] = collect([spec("a.txt")], task_dir, task_dir=task_dir)
    os.rename(task_dir / "a.txt", task_dir / "a.orig")  # keeps the inode, so no new file reuses it
    (tmp_path / "host").write_text("host")
    (task_dir / "a.txt").symlink_to(tmp_path / "host")
    with pytest.raises(ArtifactGone):
        open_artifact(art)  # type: ignore[arg-type]
    os.unlink(task_dir / "a.txt")
    (task_dir / "a.txt").write_text("another file")
    with pytest.raises(ArtifactGone) as gone:
        open_artifact(art)  # type: ignore[arg-type]
    assert gone.value.reason == "invalid-resource-on-worker"


def test_open_artifact_reports_size_at_open_time(task_dir: Path) -> None:
    (task_dir / "grow.log").write_text("12")
    [art] = collect([spec("grow.log")], task_dir, task_dir=task_dir)
    with open(task_dir / "grow.log", "a") as f:
        f.write("345")
    file, size = open_artifact(art)  # type: ignore[arg-type]
    with file:
        assert (size, file.read()) == (5, b"12345")


def test_collect_does_not_block_on_a_fifo_swapped_in_after_listing(task_dir: Path) -> None:
    """A FIFO can appear between stat and open: the O_NONBLOCK open plus fstat refuses it."""
    from tcworker import artifacts as mod

    os.mkfifo(task_dir / "p")
    done = threading.Event()

    def probe() -> None:
        with pytest.raises(ArtifactGone):
            mod._probe(str(task_dir / "p"), (str(task_dir),))
        done.set()

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout=10)
    assert done.is_set()


def test_expiry_comes_from_the_spec(task_dir: Path) -> None:
    (task_dir / "a").write_text("a")
    when = EXPIRES - timedelta(days=1)
    [art] = collect([spec("a", expires=when)], task_dir, task_dir=task_dir)
    assert art.expires == when
