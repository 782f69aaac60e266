"""Worker configuration: :class:`WorkerConfig`, loaded once at start and frozen.

Keys are generic-worker's (``../shared/reference/peer-workers.md`` section 2), matched
case-insensitively because worker-runner writes ``instanceID`` where generic-worker reads
``instanceId``. Our own additions use clearly named camelCase keys listed in ``docs/config.md``.
``TASKCLUSTER_ROOT_URL`` / ``_CLIENT_ID`` / ``_ACCESS_TOKEN`` / ``_CERTIFICATE`` fill what the file
leaves out. Unknown keys are logged and ignored; a wrong type stops start-up with a
:class:`~tcworker.errors.ConfigError` naming the key.

What does not live here: per-task settings (the payload models in :mod:`tcworker.payloads`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Mapping

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tcworker.errors import ConfigError

log = logging.getLogger(__name__)

ENV_KEYS = {
    "rootURL": "TASKCLUSTER_ROOT_URL",
    "clientId": "TASKCLUSTER_CLIENT_ID",
    "accessToken": "TASKCLUSTER_ACCESS_TOKEN",
    "certificate": "TASKCLUSTER_CERTIFICATE",
}


class DockerConfig(BaseModel):
    """Docker engine switches (``dockerConfig``; names follow generic-worker's ``d2gConfig``)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", populate_by_name=True)

    allow_privileged: bool = Field(False, alias="allowPrivileged")
    allow_ptrace: bool = Field(True, alias="allowPtrace")
    allowed_devices: tuple[str, ...] = Field((), alias="allowedDevices", strict=False)


class WorkerConfig(BaseModel):
    """The whole worker config, frozen. Attribute names are snake_case; aliases are the file keys.

    Build it with :func:`load_config` (file + environment) or :meth:`from_mapping`.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", populate_by_name=True)

    # -- identity and credentials (2.1)
    root_url: str = Field("", alias="rootURL")
    client_id: str = Field("", alias="clientId")
    access_token: str = Field("", alias="accessToken")
    certificate: str = Field("", alias="certificate")
    provisioner_id: str = Field("", alias="provisionerId")
    worker_type: str = Field("", alias="workerType")
    worker_pool_id_key: str = Field("", alias="workerPoolId")
    worker_group: str = Field("", alias="workerGroup")
    worker_id: str = Field("", alias="workerId")
    ed25519_signing_key_location: str = Field("", alias="ed25519SigningKeyLocation")
    instance_id: str = Field("", alias="instanceId")
    instance_type: str = Field("", alias="instanceType")
    region: str = Field("", alias="region")
    availability_zone: str = Field("", alias="availabilityZone")
    private_ip: str = Field("", alias="privateIP")
    public_ip: str = Field("", alias="publicIP")
    worker_location: str = Field("", alias="workerLocation")
    worker_type_metadata: dict[str, Any] = Field(default_factory=dict, alias="workerTypeMetadata")

    # -- directories and disk (2.2)
    tasks_dir: str = Field("tasks", alias="tasksDir")
    caches_dir: str = Field("caches", alias="cachesDir")
    downloads_dir: str = Field("downloads", alias="downloadsDir")
    required_disk_space_megabytes: int = Field(256, ge=0, alias="requiredDiskSpaceMegabytes")
    clean_up_task_dirs: bool = Field(True, alias="cleanUpTaskDirs")

    # -- loop and life cycle (2.3)
    capacity: int = Field(1, ge=1, le=255, alias="capacity")
    number_of_tasks_to_run: int = Field(0, ge=0, alias="numberOfTasksToRun")
    idle_timeout_secs: int = Field(0, ge=0, alias="idleTimeoutSecs")
    shutdown_machine_on_idle: bool = Field(False, alias="shutdownMachineOnIdle")
    shutdown_machine_on_internal_error: bool = Field(False, alias="shutdownMachineOnInternalError")
    max_task_run_time_s: int = Field(86400, ge=1, alias="maxTaskRunTime")
    run_tasks_as_current_user: bool = Field(True, alias="runTasksAsCurrentUser")

    # -- feature switches (2.4); tasks asking for a disabled feature get malformed-payload
    enable_chain_of_trust: bool = Field(True, alias="enableChainOfTrust")
    enable_interactive: bool = Field(False, alias="enableInteractive")
    enable_live_log: bool = Field(True, alias="enableLiveLog")
    enable_mounts: bool = Field(True, alias="enableMounts")
    enable_os_groups: bool = Field(True, alias="enableOSGroups")
    enable_resource_monitor: bool = Field(True, alias="enableResourceMonitor")
    enable_taskcluster_proxy: bool = Field(True, alias="enableTaskclusterProxy")
    create_object_artifacts: bool = Field(True, alias="createObjectArtifacts")
    allowed_os_groups: tuple[str, ...] = Field((), alias="allowedOsGroups", strict=False)

    # -- tcworker's own keys
    engines: tuple[Literal["native", "docker"], ...] = Field(("native", "docker"), alias="engines", strict=False)
    docker_config: DockerConfig = Field(default_factory=DockerConfig, alias="dockerConfig")
    live_log_port: int = Field(0, ge=0, le=65535, alias="liveLogPort")
    live_log_public_url: str = Field("", alias="liveLogPublicURL")
    status_poll_interval_s: float = Field(30.0, gt=0, alias="statusPollIntervalSecs")
    reclaim_margin_s: float = Field(180.0, ge=0, alias="reclaimMarginSecs")
    shutdown_grace_period_s: float = Field(60.0, ge=0, alias="shutdownGracePeriodSecs")
    upload_concurrency: int = Field(10, ge=1, le=64, alias="uploadConcurrency")
    upload_budget_s: float = Field(600.0, gt=0, alias="uploadBudgetSecs")
    kill_grace_period_s: float = Field(5.0, ge=0, alias="killGracePeriodSecs")
    output_drain_s: float = Field(1.0, ge=0, alias="outputDrainSecs")
    watchdog_s: float = Field(0.0, ge=0, alias="watchdogSecs")
    queue_call_timeout_s: float = Field(60.0, gt=0, alias="queueCallTimeoutSecs")
    log_format: Literal["text", "json"] = Field("text", alias="logFormat")
    pulse_url: str = Field("", alias="pulseURL")
    pulse_namespace: str = Field("", alias="pulseNamespace")

    # -------------------------------------------------------------- derived values
    @property
    def worker_pool_id(self) -> str:
        """``<provisionerId>/<workerType>``, or the ``workerPoolId`` key when given."""
        if self.worker_pool_id_key:
            return self.worker_pool_id_key
        if self.provisioner_id and self.worker_type:
            return f"{self.provisioner_id}/{self.worker_type}"
        return ""

    @property
    def credentials(self) -> dict[str, str]:
        """Worker credentials in the ``taskcluster`` client's shape (certificate only when set)."""
        creds = {"clientId": self.client_id, "accessToken": self.access_token}
        if self.certificate:
            creds["certificate"] = self.certificate
        return creds

    def require_for_run(self, *, chain_of_trust: bool = False) -> None:
        """Check the keys ``tcworker run`` needs.

        Raises:
            ConfigError: naming every missing key (``rootURL``, ``clientId``, ``accessToken``, the
                pool, ``workerGroup``, ``workerId``; ``ed25519SigningKeyLocation`` only when chain
                of trust is enabled).
        """
        missing = [
            key
            for key, value in (
                ("rootURL", self.root_url),
                ("clientId", self.client_id),
                ("accessToken", self.access_token),
                ("workerGroup", self.worker_group),
                ("workerId", self.worker_id),
            )
            if not value
        ]
        if not self.worker_pool_id:
            missing.append("provisionerId + workerType (or workerPoolId)")
        if chain_of_trust and not self.ed25519_signing_key_location:
            missing.append("ed25519SigningKeyLocation (enableChainOfTrust is on)")
        if missing:
            raise ConfigError("missing required config keys: " + ", ".join(missing))

    # -------------------------------------------------------------- construction
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> "WorkerConfig":
        """Build a config from a parsed file.

        Args:
            raw: mapping of config keys (any case) to values, as read from YAML or JSON.
            environ: environment to fill credentials from (default ``os.environ``).

        Raises:
            ConfigError: a value has the wrong type or range; the message names the key.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config must be a mapping of keys to values, got {type(raw).__name__}")
        data = _canonical_keys(raw)
        environ = os.environ if environ is None else environ
        for key, var in ENV_KEYS.items():
            if not data.get(key) and environ.get(var):
                data[key] = environ[var]
        if isinstance(data.get("workerPoolId"), str) and "/" in data["workerPoolId"]:
            prov, _, wtype = data["workerPoolId"].partition("/")
            data.setdefault("provisionerId", prov)
            data.setdefault("workerType", wtype)
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as err:
            raise ConfigError(_describe(err)) from None

    def redacted(self) -> dict[str, Any]:
        """The config as file keys with secrets replaced by ``***`` (safe to log)."""
        out = self.model_dump(by_alias=True)
        for key in ("accessToken", "certificate"):
            if out.get(key):
                out[key] = "***"
        return out


def _aliases() -> dict[str, str]:
    return {
        (field.alias or name).lower(): field.alias or name
        for name, field in WorkerConfig.model_fields.items()
    }


def _canonical_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    aliases = _aliases()
    data: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = aliases.get(str(key).lower())
        if canonical is None:
            log.warning("ignoring unknown config key %r", key)
            continue
        data[canonical] = value
    return data


def _describe(err: pydantic.ValidationError) -> str:
    problems = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(config)"
        problems.append(f"config key {where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)


def load_config(path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Load a worker config from a YAML or JSON file (``None``: defaults plus environment).

    Raises:
        ConfigError: the file cannot be read or parsed, or a key has the wrong type.
    """
    if path is None:
        return WorkerConfig.from_mapping({}, environ=environ)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        raw = json.loads(text)
    except ValueError:
        import yaml  # JSON is the common case (worker-runner writes JSON); YAML only when needed

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse config file {path}: {err}") from None
    return WorkerConfig.from_mapping(raw or {}, environ=environ)
