"""Tests of :func:`tcworker.artifacts.write_to_folder`, the ``tcworker exec`` artifact sink."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tcworker.artifacts import DataArtifact, ErrorArtifact, collect, write_to_folder
from tcworker.payloads.common import ArtifactSpec

EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)


def spec(path: str, name: str, kind: str = "file") -> ArtifactSpec:
    return ArtifactSpec(name, path, kind, EXPIRES, None, None, False)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    d = tmp_path / "task"
    (d / "out/sub").mkdir(parents=True)
    (d / "hello.log").write_bytes(b"hello\n")
    (d / "out/empty.txt").write_bytes(b"")
    (d / "out/sub/a b+%.json").write_bytes(b"{}")
    return d


def test_data_link_and_error_artifacts_land_in_folder_with_manifest(tmp_path: Path, task_dir: Path) -> None:
    arts = collect(
        [
            spec("hello.log", "public/logs/live_backing.log"),
            spec("out", "public/out", "directory"),
            spec("missing.txt", "public/missing.txt"),
        ],
        task_dir,
        task_dir=task_dir,
    )
    dest = tmp_path / "artifacts"
    manifest = write_to_folder(arts, dest, links={"public/logs/live.log": "public/logs/live_backing.log"})

    assert (dest / "public/logs/live_backing.log").read_bytes() == b"hello\n"
    assert (dest / "public/logs/live.log").read_bytes() == b"hello\n"
    assert (dest / "public/out/empty.txt").read_bytes() == b""
    assert (dest / "public/out/sub/a b+%.json").read_bytes() == b"{}"
    assert not (dest / "public/missing.txt").exists()

    on_disk = json.loads((dest / ".tcworker/artifacts.json").read_text())
    assert on_disk == manifest
    entries = {e["name"]: e for e in manifest["artifacts"]}
    assert [e["name"] for e in manifest["artifacts"]] == sorted(entries)
    assert entries["public/logs/live_backing.log"] == {
        "name": "public/logs/live_backing.log",
        "storageType": "object",
        "contentType": "text/plain",
        "size": 6,
        "sha256": sha(b"hello\n"),
    }
    assert entries["public/logs/live.log"]["storageType"] == "link"
    assert entries["public/logs/live.log"]["artifact"] == "public/logs/live_backing.log"
    assert entries["public/logs/live.log"]["sha256"] == sha(b"hello\n")
    assert entries["public/out/empty.txt"]["size"] == 0
    assert entries["public/out/empty.txt"]["sha256"] == sha(b"")
    missing = entries["public/missing.txt"]
    assert (missing["storageType"], missing["reason"], missing["sha256"]) == ("error", "file-missing-on-worker", None)


def test_name_resolving_outside_folder_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    st = os.stat(src)
    evil = DataArtifact("../escape.txt", src, 1, "text/plain", "identity", EXPIRES, (st.st_dev, st.st_ino))
    inside = DataArtifact(".tcworker/artifacts.json", src, 1, "text/plain", "identity", EXPIRES, None)
    dest = tmp_path / "d"
    # a link planted in the folder must not redirect writes either
    (dest / "public").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (dest / "public/linked").symlink_to(tmp_path / "elsewhere")
    via_link = DataArtifact("public/linked/x.txt", src, 1, "text/plain", "identity", EXPIRES, None)
    manifest = write_to_folder([evil, inside, via_link], dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "elsewhere/x.txt").exists()
    assert all(e["storageType"] == "error" for e in manifest["artifacts"])
    assert len(manifest["artifacts"]) == 3


def test_fm02_file_vanished_before_copy_becomes_error_entry(tmp_path: Path, task_dir: Path) -> None:
    arts = collect([spec("out", "public/out", "directory")], task_dir, task_dir=task_dir)
    (task_dir / "out/empty.txt").unlink()
    manifest = write_to_folder(arts, tmp_path / "d")
    entries = {e["name"]: e for e in manifest["artifacts"]}
    assert entries["public/out/empty.txt"]["reason"] == "file-missing-on-worker"
    assert entries["public/out/sub/a b+%.json"]["storageType"] == "object"


def test_link_to_unknown_target_is_recorded_as_error(tmp_path: Path) -> None:
    err = ErrorArtifact("public/x", "file-missing-on-worker", "gone", EXPIRES, True)
    manifest = write_to_folder([err], tmp_path / "d", links={"public/l": "public/x"})
    entries = {e["name"]: e for e in manifest["artifacts"]}
    assert entries["public/l"]["storageType"] == "error"
    assert not (tmp_path / "d/public/l").exists()


def test_rewriting_a_folder_replaces_files_and_s3_storage_type_is_recorded(tmp_path: Path, task_dir: Path) -> None:
    dest = tmp_path / "d"
    arts = collect([spec("hello.log", "public/h.log")], task_dir, task_dir=task_dir)
    write_to_folder(arts, dest)
    (task_dir / "hello.log").write_bytes(b"second run\n")
    arts = collect([spec("hello.log", "public/h.log")], task_dir, task_dir=task_dir)
    manifest = write_to_folder(arts, dest, storage_type="s3")
    assert (dest / "public/h.log").read_bytes() == b"second run\n"
    assert manifest["artifacts"][0]["storageType"] == "s3"
    assert [p.name for p in (dest / "public").iterdir()] == ["h.log"]  # no temp files left


def test_error_artifact_removes_a_stale_file_from_an_earlier_run(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    (dest / "public").mkdir(parents=True)
    (dest / "public/result.txt").write_text("from the previous run")
    err = ErrorArtifact("public/result.txt", "file-missing-on-worker", "gone", EXPIRES, True)
    write_to_folder([err], dest)
    assert not (dest / "public/result.txt").exists()
