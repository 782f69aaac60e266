"""The Chain of Trust feature (``features.chainOfTrust``): :class:`ChainOfTrustPlugin` (the
worker's signing key) and :class:`ChainOfTrustRun` (one run's certificate).

As generic-worker (``../shared/reference/peer-workers.md`` section 3.9):

- boot: read ``ed25519SigningKeyLocation`` and lock the file down (worker-owned, 0600); a key
  that cannot be read or locked down stops start-up (``ConfigError``). Without the key setting,
  tasks asking for chain of trust resolve ``malformed-payload`` naming it.
- prepare / build_sandbox: the native engine signs only for tasks that run as their own OS user
  (``runTasksAsCurrentUser: false``), so the task cannot read the key; otherwise
  ``malformed-payload`` naming the setting. Docker tasks need no multiuser mode.
- reserved names: ``public/logs/certified.log``, ``public/chain-of-trust.json`` and
  ``public/chain-of-trust.json.sig``; task files declared under those names are skipped.
- ``uploaded`` (after the payload artifacts are up, before the log closes and the report; only
  for completed/failed runs): copy the log so far as ``public/logs/certified.log``, build the
  document from the sha256 of every uploaded data artifact plus the certified log, merge the
  task's ``chain-of-trust-additional-data.json`` (native), sign those exact bytes, and return the
  three artifacts for the task runner to publish.

What does not live here: the document's format, keys and signing (:mod:`tcworker.cot`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tcworker import cot
from tcworker.errors import MalformedPayload
from tcworker.plugins.base import Plugin, TaskPlugin

if TYPE_CHECKING:
    from tcworker.artifact_results import UploadResult
    from tcworker.taskrun import SandboxBuilder, TaskRun

log = logging.getLogger(__name__)

CERTIFIED_LOG = "public/logs/certified.log"
DOCUMENT = "public/chain-of-trust.json"
SIGNATURE = "public/chain-of-trust.json.sig"
TEXT = "text/plain; charset=utf-8"


class ChainOfTrustPlugin(Plugin):
    """Provides ``chainOfTrust``; holds the worker's signing key (None: not configured)."""

    name = "chainOfTrust"
    provides = frozenset({"chainOfTrust"})

    def __init__(self, config) -> None:
        super().__init__(config)
        self.key = None
        self.public_key = ""

    async def boot(self) -> None:
        """Load and lock down the key. Raises ``ConfigError`` when it cannot."""
        if self.key is not None:
            return
        path = self.config.ed25519_signing_key_location
        if not path:
            log.info("chain of trust: no ed25519SigningKeyLocation, tasks asking for it are refused")
            return
        cot.lock_down_key(path)
        self.key = cot.load_signing_key(path)
        self.public_key = cot.public_key_b64(self.key)
        log.info("chain of trust: signing with public key %s", self.public_key)

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        if run.parsed is None or not run.parsed.features.chain_of_trust:
            return None
        return ChainOfTrustRun(run, self)


class ChainOfTrustRun(TaskPlugin):
    """One run's certificate."""

    reserved_artifacts = (CERTIFIED_LOG, DOCUMENT, SIGNATURE)

    def __init__(self, run: "TaskRun", plugin: ChainOfTrustPlugin) -> None:
        super().__init__(run)
        self.plugin = plugin
        self.scratch: Path | None = None

    async def prepare(self) -> None:
        if self.plugin.key is None:
            raise MalformedPayload("payload.features.chainOfTrust: this worker has no signing key "
                                   "(config ed25519SigningKeyLocation)")
        if self.run.parsed.engine == "native" and self.run.config.run_tasks_as_current_user:
            raise MalformedPayload("payload.features.chainOfTrust: needs runTasksAsCurrentUser: false "
                                   "(tasks running as the worker's user could read the signing key)")

    async def build_sandbox(self, builder: "SandboxBuilder") -> None:
        owner = getattr(self.run.sandbox, "owner", None)
        if self.run.parsed.engine == "native" and (owner is None or owner[0] in (0, os.geteuid())):
            # generic-worker's start-time guard: the task user must not be able to read the key
            raise MalformedPayload("payload.features.chainOfTrust: the task would run as the worker's "
                                   "own user and could read the signing key (runTasksAsCurrentUser: false "
                                   "needs the multiuser native engine)")

    async def uploaded(self, results: "Sequence[UploadResult] | None") -> list:
        self.scratch = Path(tempfile.mkdtemp(prefix="tcw-cot-"))
        certified = self.scratch / "certified.log"
        await asyncio.to_thread(_copy_prefix, self.run.log.path, certified, self.run.log.size_bytes)
        hashes = await asyncio.to_thread(self._artifact_hashes, results)
        hashes[CERTIFIED_LOG] = await asyncio.to_thread(_sha256_file, certified)
        document = cot.build_document(
            artifacts=hashes, task=self.run.task, task_id=self.run.task_id, run_id=self.run.run_id,
            worker_group=self.run.config.worker_group, worker_id=self.run.config.worker_id,
            environment=cot.environment(self.run.config),
        )
        additional = await asyncio.to_thread(self._additional_data)
        if additional is None:
            data = cot.render(document)
        else:
            data = cot.render(cot.merge_additional_data(document, additional), sort_keys=True)
        (self.scratch / "chain-of-trust.json").write_bytes(data)
        (self.scratch / "chain-of-trust.json.sig").write_bytes(cot.sign(self.plugin.key, data))
        self.run.log.info(f"Chain of Trust: {len(hashes)} artifact(s) certified, signed with "
                          f"public key {self.plugin.public_key}")
        return [
            self._artifact(CERTIFIED_LOG, certified, TEXT),
            self._artifact(DOCUMENT, self.scratch / "chain-of-trust.json", TEXT),
            self._artifact(SIGNATURE, self.scratch / "chain-of-trust.json.sig", "application/octet-stream"),
        ]

    async def dispose(self) -> None:
        scratch, self.scratch = self.scratch, None
        if scratch is not None:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def _artifact_hashes(self, results: "Sequence[UploadResult] | None") -> dict[str, str]:
        """sha256 of every uploaded ``object``/``s3`` artifact; without upload results (the
        folder outlet of ``tcworker exec`` writes at the end) of every collected data artifact."""
        from tcworker.artifacts import DataArtifact

        if results is not None:
            return {r.name: r.sha256 for r in results
                    if r.status == "uploaded" and r.storage_type in ("object", "s3") and r.sha256}
        return {a.name: _sha256_file(a.path) for a in self.run.artifacts if isinstance(a, DataArtifact)}

    def _additional_data(self) -> dict | None:
        sandbox = self.run.sandbox
        if self.run.parsed.engine != "native" or sandbox is None:
            return None  # docker-worker has no additional data either
        owner = getattr(sandbox, "owner", None)
        return cot.read_additional_data(sandbox.task_dir, owner[0] if owner else None)

    def _artifact(self, name: str, path: Path, content_type: str):
        from tcworker.artifacts import DataArtifact

        return DataArtifact(name=name, path=path, size_bytes=path.stat().st_size, content_type=content_type,
                            content_encoding="gzip", expires=self._expires())

    def _expires(self) -> datetime:
        value = self.run.task.get("expires")
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
        return datetime.now(timezone.utc) + timedelta(days=365)


def _copy_prefix(source: Path, target: Path, size: int) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        left = size
        while left > 0:
            chunk = src.read(min(left, 1024 * 1024))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
