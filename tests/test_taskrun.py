"""TaskRun pipeline with a fake engine: stage order, plugin hooks, upload/report order, aborts.

The fake engine records what it was asked to do; the recording outlet records the order of
uploads and reports. Observable results only: the outlet's calls, the log's lines, hook order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, ExitResult, Sandbox
from tcworker.errors import RunResolvedElsewhere, WorkerShutdown
from tcworker.outlet import RunOutlet
from tcworker.plugins.base import Plugin, TaskPlugin
from tcworker.taskrun import TaskRun


class FakeSandbox(Sandbox):
    def __init__(self, task_dir: Path, result: ExitResult, block: bool) -> None:
        self.task_dir = task_dir
        self.result = result
        self.block = block
        self.spec = None
        self.aborted_with = None
        self.disposed = 0
        self._abort = asyncio.Event()

    async def run(self, spec):
        self.spec = spec
        if self.block:
            await self._abort.wait()
            return ExitResult(exit_code=None, failed_command=0, signal=15, aborted=True)
        return self.result

    async def abort(self, reason):
        self.aborted_with = reason
        self._abort.set()

    async def artifact_root(self):
        return self.task_dir

    async def dispose(self, keep=False):
        self.disposed += 1


class FakeEngine(Engine):
    name = "native"

    def __init__(self, tmp_path: Path, result: ExitResult | None = None, block: bool = False):
        self.tmp_path = tmp_path
        self.result = result or ExitResult(exit_code=0)
        self.block = block
        self.sandboxes: list[FakeSandbox] = []

    async def boot(self):
        pass

    async def create_sandbox(self, task_id, run_id, log):
        task_dir = self.tmp_path / f"task_{run_id}"
        task_dir.mkdir(exist_ok=True)
        (task_dir / "out.txt").write_text("artifact body")
        sandbox = FakeSandbox(task_dir, self.result, self.block)
        self.sandboxes.append(sandbox)
        return sandbox


class RecordingOutlet(RunOutlet):
    def __init__(self):
        self.calls: list[tuple] = []
        self.log_text = b""

    async def publish_artifacts(self, artifacts):
        self.calls.append(("artifacts", sorted(a.name for a in artifacts)))

    async def publish_log(self, path, names, expires):
        self.log_text = Path(path).read_bytes()
        self.calls.append(("log", names.backing))

    async def report(self, resolution):
        self.calls.append(("report", resolution.state, resolution.reason))


class OrderPlugin(Plugin):
    """Records every hook call of its task plugins into a shared list."""

    def __init__(self, config, label, journal, fail_in=None):
        super().__init__(config)
        self.label, self.journal, self.fail_in = label, journal, fail_in

    def new_run(self, run):
        plugin = self

        class Recorder(TaskPlugin):
            async def _hook(self, name):
                plugin.journal.append(f"{plugin.label}.{name}")
                if plugin.fail_in == name:
                    raise RuntimeError(f"{name} broke")

            async def prepare(self):
                await self._hook("prepare")

            async def build_sandbox(self, builder):
                builder.env[f"FROM_{plugin.label.upper()}"] = "1"
                await self._hook("build_sandbox")

            async def started(self):
                await self._hook("started")

            async def stopped(self, result):
                await self._hook("stopped")

            async def finished(self, resolution):
                await self._hook("finished")

            async def dispose(self):
                await self._hook("dispose")

        return Recorder(run)


def make_task(**payload):
    payload.setdefault("command", [["true"]])
    payload.setdefault("maxRunTime", 60)
    return {
        "taskGroupId": "group-1",
        "created": "2026-01-01T00:00:00.000Z",
        "deadline": "2099-01-02T00:00:00.000Z",
        "expires": "2099-02-01T00:00:00.000Z",
        "payload": payload,
    }


def make_run(tmp_path, task, engine, outlet, plugins=()):
    return TaskRun(
        task=task, task_id="abcTaskId", run_id=0, config=WorkerConfig(), engines={"native": engine},
        outlet=outlet, log_path=tmp_path / "live_backing.log", plugins=plugins, worker_env={"PATH": "/bin"},
    )


async def test_given_successful_task_when_run_then_hooks_in_order_upload_before_report(tmp_path):
    journal: list[str] = []
    plugins = [OrderPlugin(WorkerConfig(), "a", journal), OrderPlugin(WorkerConfig(), "b", journal)]
    engine, outlet = FakeEngine(tmp_path), RecordingOutlet()
    task = make_task(artifacts=[{"type": "file", "path": "out.txt", "name": "public/out.txt"}])
    resolution = await make_run(tmp_path, task, engine, outlet, plugins).execute()

    assert resolution.state == "completed"
    assert journal == [
        "a.prepare", "b.prepare", "a.build_sandbox", "b.build_sandbox", "a.started", "b.started",
        "a.stopped", "b.stopped", "b.finished", "a.finished", "b.dispose", "a.dispose",
    ]
    assert outlet.calls == [
        ("artifacts", ["public/out.txt"]),
        ("log", "public/logs/live_backing.log"),
        ("report", "completed", "completed"),
    ]
    spec = engine.sandboxes[0].spec
    assert spec.env["FROM_A"] == "1" and spec.env["TASK_ID"] == "abcTaskId" and spec.env["RUN_ID"] == "0"
    assert engine.sandboxes[0].disposed == 1
    assert b"=== Task Starting ===" in outlet.log_text and b"=== Task Finished ===" in outlet.log_text


async def test_given_nonzero_exit_then_failed_after_uploads(tmp_path):
    engine = FakeEngine(tmp_path, ExitResult(exit_code=3, failed_command=0))
    outlet = RecordingOutlet()
    resolution = await make_run(tmp_path, make_task(), engine, outlet).execute()
    assert (resolution.state, resolution.reason) == ("failed", "failed")
    assert [c[0] for c in outlet.calls] == ["artifacts", "log", "report"]
    assert b"[taskcluster:error] command 0 exited with code 3" in outlet.log_text


async def test_given_retry_exit_code_then_intermittent_task_reported_before_uploads(tmp_path):
    engine = FakeEngine(tmp_path, ExitResult(exit_code=75, failed_command=0))
    outlet = RecordingOutlet()
    task = make_task(onExitStatus={"retry": [75]})
    resolution = await make_run(tmp_path, task, engine, outlet).execute()
    assert (resolution.state, resolution.reason) == ("exception", "intermittent-task")
    assert [c[0] for c in outlet.calls] == ["report", "artifacts", "log"]


async def test_given_malformed_payload_then_no_sandbox_and_message_names_field(tmp_path):
    engine, outlet = FakeEngine(tmp_path), RecordingOutlet()
    journal: list[str] = []
    plugins = [OrderPlugin(WorkerConfig(), "a", journal)]
    resolution = await make_run(tmp_path, make_task(maxRunTime="30"), engine, outlet, plugins).execute()
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert "payload.maxRunTime" in resolution.message
    assert engine.sandboxes == []
    assert outlet.calls[0] == ("report", "exception", "malformed-payload")
    assert b"payload.maxRunTime" in outlet.log_text
    assert journal == []  # task plugins are created after the payload parsed


async def test_given_prepare_fails_then_internal_error_and_dispose_still_runs(tmp_path):
    journal: list[str] = []
    plugins = [OrderPlugin(WorkerConfig(), "a", journal), OrderPlugin(WorkerConfig(), "b", journal, fail_in="prepare")]
    resolution = await make_run(tmp_path, make_task(), FakeEngine(tmp_path), RecordingOutlet(), plugins).execute()
    assert (resolution.state, resolution.reason) == ("exception", "internal-error")
    assert "RuntimeError" in resolution.message
    assert journal == ["a.prepare", "b.prepare", "a.finished", "b.dispose", "a.dispose"]


async def test_given_finished_and_dispose_fail_then_resolution_unchanged(tmp_path, caplog):
    journal: list[str] = []
    plugins = [OrderPlugin(WorkerConfig(), "a", journal, fail_in="finished"),
               OrderPlugin(WorkerConfig(), "b", journal, fail_in="dispose")]
    resolution = await make_run(tmp_path, make_task(), FakeEngine(tmp_path), RecordingOutlet(), plugins).execute()
    assert resolution.state == "completed"
    assert journal[-4:] == ["b.finished", "a.finished", "b.dispose", "a.dispose"]
    assert "finished hook failed" in caplog.text and "dispose hook failed" in caplog.text


async def test_given_run_resolved_elsewhere_during_run_then_no_report_but_uploads(tmp_path):
    engine, outlet = FakeEngine(tmp_path, block=True), RecordingOutlet()
    run = make_run(tmp_path, make_task(), engine, outlet)
    execution = asyncio.create_task(run.execute())
    while not engine.sandboxes or engine.sandboxes[0].spec is None:
        await asyncio.sleep(0)
    run.abort(RunResolvedElsewhere("cancelled"))
    resolution = await execution
    assert resolution.state is None
    assert engine.sandboxes[0].aborted_with is not None
    assert ("artifacts", []) in outlet.calls and ("log", "public/logs/live_backing.log") in outlet.calls
    assert outlet.calls[0][0] == "report" and outlet.calls[0][1] is None  # the outlet decides: nothing sent


async def test_given_worker_shutdown_abort_then_worker_shutdown_reported_first(tmp_path):
    engine, outlet = FakeEngine(tmp_path, block=True), RecordingOutlet()
    run = make_run(tmp_path, make_task(), engine, outlet)
    execution = asyncio.create_task(run.execute())
    while not engine.sandboxes or engine.sandboxes[0].spec is None:
        await asyncio.sleep(0)
    run.abort(WorkerShutdown("SIGTERM"))
    resolution = await execution
    assert (resolution.state, resolution.reason) == ("exception", "worker-shutdown")
    assert outlet.calls[0] == ("report", "exception", "worker-shutdown")


@pytest.mark.parametrize("feature", [{"features": {"taskclusterProxy": True}}, {"mounts": [{"file": "x", "content": {"raw": "x"}}]}])
async def test_given_feature_no_plugin_provides_then_malformed_payload(tmp_path, feature):
    resolution = await make_run(tmp_path, make_task(**feature), FakeEngine(tmp_path), RecordingOutlet()).execute()
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert "not supported by this worker" in resolution.message


async def test_given_missing_required_artifact_then_failed_with_error_artifact(tmp_path):
    outlet = RecordingOutlet()
    task = make_task(artifacts=[{"type": "file", "path": "nope.txt", "name": "public/nope.txt"}])
    resolution = await make_run(tmp_path, task, FakeEngine(tmp_path), outlet).execute()
    assert resolution.state == "failed"
    assert outlet.calls[0] == ("artifacts", ["public/nope.txt"])
    assert b"file-missing-on-worker" in outlet.log_text


class RefusingOutlet(RecordingOutlet):
    async def report(self, resolution):
        await super().report(resolution)
        raise RunResolvedElsewhere("409: run is not running")


async def test_given_report_refused_then_the_returned_resolution_says_so(tmp_path):
    resolution = await make_run(tmp_path, make_task(), FakeEngine(tmp_path), RefusingOutlet()).execute()
    assert resolution.state is None and "409" in resolution.message


class BrokenUploadOutlet(RecordingOutlet):
    async def publish_artifacts(self, artifacts):
        raise RuntimeError("a bug in the uploader")


async def test_given_a_bug_while_uploading_then_internal_error_is_still_reported(tmp_path):
    outlet = BrokenUploadOutlet()
    resolution = await make_run(tmp_path, make_task(), FakeEngine(tmp_path), outlet).execute()
    assert (resolution.state, resolution.reason) == ("exception", "internal-error")
    assert ("report", "exception", "internal-error") in outlet.calls


class UnreadableRootEngine(FakeEngine):
    async def create_sandbox(self, task_id, run_id, log):
        sandbox = await super().create_sandbox(task_id, run_id, log)

        async def artifact_root():
            raise OSError("input/output error")

        sandbox.artifact_root = artifact_root
        return sandbox


async def test_given_artifacts_cannot_be_collected_then_never_completed_without_them(tmp_path):
    outlet = RecordingOutlet()
    task = make_task(artifacts=[{"type": "file", "path": "out.txt", "name": "public/out.txt"}])
    resolution = await make_run(tmp_path, task, UnreadableRootEngine(tmp_path), outlet).execute()
    assert (resolution.state, resolution.reason) == ("exception", "internal-error")
    assert b"cannot collect artifacts" in outlet.log_text


@pytest.mark.parametrize("logs", [{"backing": "public/../x.log"}, {"live": "../../x"}, {"backing": "/etc/passwd"}])
async def test_given_log_names_the_queue_cannot_store_then_malformed_payload(tmp_path, logs):
    outlet = RecordingOutlet()
    resolution = await make_run(tmp_path, make_task(logs=logs), FakeEngine(tmp_path), outlet).execute()
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert "payload.logs." in resolution.message
    assert ("log", "public/logs/live_backing.log") in outlet.calls  # the refused run's log, under the default
