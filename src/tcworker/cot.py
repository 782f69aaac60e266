"""Chain of Trust documents and ed25519 keys, as generic-worker makes them
(``../shared/reference/peer-workers.md`` section 3.9, ``chain_of_trust_feature.go`` upstream).

- Keys: a key file holds base64 of the 32-byte ed25519 seed (generic-worker's
  ``new-ed25519-keypair`` format); the public key is given as base64 of its 32 bytes, the form
  scriptworker's ``ed25519_public_keys`` config takes. :func:`write_new_keypair`,
  :func:`load_signing_key`, :func:`lock_down_key`, :func:`public_key_b64`.
- The document (:func:`build_document`): ``chainOfTrustVersion`` 1, ``artifacts``
  (``{name: {"sha256": hex}}``), the full ``task`` definition, ``taskId``, ``runId``,
  ``workerGroup``, ``workerId``, ``environment`` (:func:`environment`), in that order as Go's
  struct marshals it. :func:`merge_additional_data` deep-merges a task's
  ``chain-of-trust-additional-data.json`` under it (the worker's values win, as ``mergemap``),
  after which keys are sorted, as Go marshals maps.
- :func:`render` gives the bytes exactly as Go's ``json.MarshalIndent(v, "", "  ")``: 2-space
  indent, ``": "``, UTF-8, and ``<``, ``>``, ``&``, U+2028, U+2029 escaped. Those bytes are
  uploaded and signed (:func:`sign`, detached 64-byte signature).
- :func:`read_additional_data` reads the task's file without following links, only when the task
  user owns it.

What does not live here: when the document is made and uploaded (:mod:`tcworker.plugins.chain_of_trust`).
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tcworker.errors import ConfigError, TaskFailed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tcworker.config import WorkerConfig

ADDITIONAL_DATA_NAME = "chain-of-trust-additional-data.json"
#: Largest additional-data file read, bytes.
MAX_ADDITIONAL_BYTES = 1024 * 1024
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# ---------------------------------------------------------------- keys
def write_new_keypair(path: str | os.PathLike[str]) -> str:
    """Create a key file (base64 seed, mode 0600) at ``path`` and return the public key (base64).

    Raises:
        FileExistsError: ``path`` exists (a key is never overwritten).
        OSError: the file cannot be written.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(base64.b64encode(seed).decode() + "\n")
    return public_key_b64(key)


def load_signing_key(path: str | os.PathLike[str]) -> "Ed25519PrivateKey":
    """Read a key file (base64 of the 32-byte seed; surrounding whitespace ignored).

    Raises:
        ConfigError: unreadable file or not a base64 32-byte seed (names ``ed25519SigningKeyLocation``).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"ed25519SigningKeyLocation {path}: cannot read the key: {err}") from None
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(f"ed25519SigningKeyLocation {path}: expected base64 of a 32-byte ed25519 seed "
                          "(tcworker new-ed25519-keypair --file PATH writes one)")
    return Ed25519PrivateKey.from_private_bytes(seed)


def lock_down_key(path: str | os.PathLike[str]) -> None:
    """Make the key file worker-owned and 0600 (generic-worker's ``SecureFiles``).

    Raises:
        ConfigError: the owner or mode cannot be changed.
    """
    try:
        info = os.stat(path)
        if info.st_uid != os.geteuid() or info.st_gid != os.getegid():
            os.chown(path, os.geteuid(), os.getegid())
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.chmod(path, 0o600)
    except OSError as err:
        raise ConfigError(f"ed25519SigningKeyLocation {path}: cannot make it private (0600): {err}") from None


def public_key_b64(key: "Ed25519PrivateKey") -> str:
    """Base64 of the 32-byte public key (scriptworker's ``ed25519_public_keys`` form)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(key: "Ed25519PrivateKey", data: bytes) -> bytes:
    """Detached ed25519 signature of ``data`` (64 bytes)."""
    return key.sign(data)


def verify(public_b64: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``data`` signed by the key whose base64 public key is given."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


# ---------------------------------------------------------------- the document
def environment(config: "WorkerConfig") -> dict[str, str]:
    """``environment`` as generic-worker's ``CoTEnvironment``: ``publicIpAddress`` only when
    known, then ``privateIpAddress``, ``instanceId``, ``instanceType``, ``region`` (empty when
    unknown)."""
    env = {"publicIpAddress": config.public_ip} if config.public_ip else {}
    env.update(privateIpAddress=config.private_ip, instanceId=config.instance_id,
               instanceType=config.instance_type, region=config.region)
    return env


def build_document(
    *,
    artifacts: Mapping[str, str],
    task: Mapping[str, Any],
    task_id: str,
    run_id: int,
    worker_group: str,
    worker_id: str,
    environment: Mapping[str, str],
) -> dict[str, Any]:
    """The certificate, keys in generic-worker's order.

    Args:
        artifacts: artifact name → sha256 hex of its (uncompressed) bytes.
        task: the full task definition from the claim.
    """
    return {
        "chainOfTrustVersion": 1,
        "artifacts": {name: {"sha256": artifacts[name]} for name in sorted(artifacts)},
        "task": dict(task),
        "taskId": task_id,
        "runId": run_id,
        "workerGroup": worker_group,
        "workerId": worker_id,
        "environment": dict(environment),
    }


def merge_additional_data(document: Mapping[str, Any], additional: Mapping[str, Any]) -> dict[str, Any]:
    """``additional`` with ``document`` merged over it: objects present in both are merged key by
    key, any other value of ``document`` replaces the task's (``mergemap.Merge``)."""
    merged = dict(additional)
    for key, value in document.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_additional_data(value, merged[key])
        else:
            merged[key] = value
    return merged


def render(document: Mapping[str, Any], *, sort_keys: bool = False) -> bytes:
    """Bytes as Go's ``json.MarshalIndent(document, "", "  ")`` (``sort_keys``: as Go marshals a
    map, which the merged document is)."""
    text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=sort_keys, allow_nan=False)
    for char, escape in _GO_ESCAPES.items():  # only inside strings: JSON syntax has none of them
        text = text.replace(char, escape)
    return text.encode("utf-8")


def read_additional_data(task_dir: Path, owner_uid: int | None) -> dict[str, Any] | None:
    """The task's ``chain-of-trust-additional-data.json``, or None when it wrote none.

    Read without following a link and only when ``owner_uid`` (the task user, None: anyone) owns
    it, so a task cannot smuggle in a file it could not read itself. Blocking.

    Raises:
        TaskFailed: a link, not a regular file, owned by someone else, too large, or not a JSON
            object.
    """
    path = Path(task_dir) / ADDITIONAL_DATA_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: cannot be read ({err.strerror}); links are not followed") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: not a regular file")
        if owner_uid is not None and info.st_uid != owner_uid:
            raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: not owned by the task user")
        data = source.read(MAX_ADDITIONAL_BYTES + 1)
    if len(data) > MAX_ADDITIONAL_BYTES:
        raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: larger than {MAX_ADDITIONAL_BYTES} bytes")
    try:
        value = json.loads(data)
    except ValueError as err:
        raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise TaskFailed(f"{ADDITIONAL_DATA_NAME}: must hold a JSON object")
    return value
