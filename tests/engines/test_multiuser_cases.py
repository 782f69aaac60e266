"""The real-task native cases (``../shared/cases/real-tasks/gw-*``) through ``tcworker run`` in
multiuser mode: same expected results when each run is a fresh OS user.

Reuses the case runner of ``tests/cases`` (its ``caserun``, ``expect``, ``fileserver``, ``needs``
modules) with ``runTasksAsCurrentUser: false`` added to the case's worker settings and the work
folder under a 0711 parent (task users cannot enter pytest's 0700 ``tmp_path``). ``multiuser``
counts as implemented here; the other needs follow the runner's :data:`IMPLEMENTED_NEEDS`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import slugid

from tcworker.testing.cases import load_case, render_case
from tcworker.testing.shared import require_shared, shared_dir

from multiuser_helpers import mu_parent  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cases"))
from caserun import TaskResult, run_queue_case  # noqa: E402
from expect import problems  # noqa: E402
from fileserver import FileServer  # noqa: E402
from needs import missing_needs  # noqa: E402


def _native_case_ids() -> list[str]:
    shared = shared_dir()
    if shared is None:
        return ["<shared folder missing>"]
    return sorted(p.stem for p in (shared / "cases" / "real-tasks").glob("gw-*.yml"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case_id", _native_case_ids())
async def test_native_case_in_multiuser_mode(case_id: str, mu_parent: Path, tmp_path: Path) -> None:  # noqa: F811
    case = load_case(require_shared() / "cases" / "real-tasks" / f"{case_id}.yml")
    missing = [need for need in missing_needs(case.needs) if need != "multiuser"]
    if missing:
        pytest.skip(f"{case_id}: needs not implemented: {', '.join(missing)}")
    if case.fixtures.get("runner_files"):
        pytest.skip(f"{case_id}: runner-built files are the case runner's (tests/cases)")
    case = dataclasses.replace(case, worker_config={**case.worker_config, "runTasksAsCurrentUser": False})
    serve = tmp_path / "serve"
    FileServer.link_case_files(serve, case.path.parent / "files")
    work = mu_parent / "work"
    work.mkdir(mode=0o711)
    work.chmod(0o711)
    task_ids = {str(p["label"]): slugid.nice() for p in case.prereqs}
    task_id = slugid.nice()
    with FileServer(serve) as files:
        rendered = render_case(case, task_id=task_id, task_ids=task_ids, fileserver=files.url)
        expects = {str(p["label"]): p.get("expect") or {} for p in rendered.prereqs}

        def check_prereq(label: str, result: TaskResult) -> None:
            found = problems(expects[label], result)
            assert not found, f"prereq {label}:\n" + "\n".join(found) + "\n" + result.diagnostics

        result = await run_queue_case(rendered, task_ids, task_id, work, check_prereq)
    found = problems(rendered.expect, result)
    log_tail = (result.log or b"")[-3000:].decode(errors="replace")
    assert not found, "\n".join(found) + "\n" + result.diagnostics + "\n--- task log tail\n" + log_tail
