"""Every real-task case of ``../shared/cases/real-tasks`` whose needs are implemented gives its
expected result; the others are reported as skipped, naming the missing needs.

Cases without ``queue`` run through ``tcworker exec``; the others through ``tcworker run`` against
the queue emulator (:mod:`caserun`); the cases without ``queue`` run through ``tcworker run`` as
well, so the daemon's uploads meet the same expectations. ``{{fileserver}}`` is a loopback server
over ``files/``.

What does not live here: the needs set (:mod:`needs`), the runner, the checks (:mod:`expect`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import slugid

from tcworker.testing.cases import load_case, render_case
from tcworker.testing.shared import require_shared, shared_dir

from caserun import TaskResult, run_exec_case, run_queue_case
from expect import problems
from fileserver import FileServer
from needs import CASE_GAPS, IMPLEMENTED_NEEDS, missing_needs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: docker_fixtures
from docker_fixtures import ensure_test_image  # noqa: E402

RUNNER_FILES: dict[str, Callable[[Path], object]] = {"docker-image.tar": ensure_test_image}
"""Runner-built fixture files by name, each built into the served folder by its function."""


def _case_ids() -> list[str]:
    shared = shared_dir()
    if shared is None:
        return ["<shared folder missing>"]
    return sorted(p.stem for p in (shared / "cases" / "real-tasks").glob("*.yml"))


def _case_file(case_id: str) -> Path:
    return require_shared() / "cases" / "real-tasks" / f"{case_id}.yml"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case_id", _case_ids())
async def test_real_task_case(case_id: str, tmp_path: Path) -> None:
    """The case's own way: ``tcworker exec`` without ``queue``, ``tcworker run`` with it."""
    await _run_case(case_id, tmp_path, via_run="queue" in load_case(_case_file(case_id)).needs)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case_id", _case_ids())
async def test_exec_case_through_run(case_id: str, tmp_path: Path) -> None:
    """The cases without ``queue`` also through ``tcworker run``: same result, uploaded."""
    if "queue" in load_case(_case_file(case_id)).needs:
        pytest.skip(f"{case_id}: needs queue, covered by test_real_task_case")
    await _run_case(case_id, tmp_path, via_run=True)


async def _run_case(case_id: str, tmp_path: Path, *, via_run: bool) -> None:
    case = load_case(_case_file(case_id))
    missing = missing_needs(case.needs)
    if missing == ["multiuser"]:
        pytest.skip(f"{case_id}: a multiuser case, run by tests/engines/test_multiuser_cases.py")
    if missing:
        pytest.skip(f"{case_id}: needs not implemented: {', '.join(missing)}")
    if case_id in CASE_GAPS:
        pytest.skip(f"{case_id}: {CASE_GAPS[case_id]}")
    unknown_files = [f for f in case.fixtures.get("runner_files") or [] if f not in RUNNER_FILES]
    assert not unknown_files, f"runner files with no builder: {unknown_files}"
    serve = tmp_path / "serve"
    FileServer.link_case_files(serve, case.path.parent / "files")
    if "docker" in case.needs:
        ensure_test_image()
    for name in case.fixtures.get("runner_files") or []:
        RUNNER_FILES[name](serve / name)
    work = tmp_path / "work"
    work.mkdir()
    task_ids = {str(p["label"]): slugid.nice() for p in case.prereqs}
    task_id = slugid.nice()
    with FileServer(serve) as files:
        rendered = render_case(case, task_id=task_id, task_ids=task_ids, fileserver=files.url)
        if via_run:
            expects = {str(p["label"]): p.get("expect") or {} for p in rendered.prereqs}

            def check_prereq(label: str, result: TaskResult) -> None:
                found = problems(expects[label], result)
                assert not found, f"prereq {label}:\n" + "\n".join(found) + "\n" + result.diagnostics

            result = await run_queue_case(rendered, task_ids, task_id, work, check_prereq)
        else:
            assert not case.prereqs, "a case with prereqs needs `queue`"
            result = await asyncio.to_thread(run_exec_case, rendered, task_id, work)
    found = problems(rendered.expect, result)
    assert not found, "\n".join(found) + "\n" + result.diagnostics


def test_needs_set_is_the_documented_one() -> None:
    """Each issue adds its need here when its feature lands; the README's needs table is the
    vocabulary."""
    known = {"native", "multiuser", "docker", "queue", "fileserver", "mounts", "caches", "proxy",
             "chain-of-trust", "index", "privileged"}
    assert IMPLEMENTED_NEEDS <= known
    assert {"native", "queue", "fileserver"} <= IMPLEMENTED_NEEDS
    assert missing_needs(["native", "docker", "index"]) == ["index"]
