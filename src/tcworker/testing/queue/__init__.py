"""``tcworker.testing.queue``: a local emulator of the Taskcluster Queue, Object, Purge-Cache and
Index services, for tests and benchmarks (``docs/testing.md``).

Package map: ``server.py`` (QueueEmulator, life cycle, test helpers), ``pipeline.py`` (per-request
order of checks), ``routes.py`` (endpoint table), ``queue_api.py`` / ``artifact_api.py`` /
``object_api.py`` / ``misc_api.py`` (handlers), ``state.py`` + ``model.py`` (run state machine),
``artifacts.py`` (artifact rules), ``objects.py`` (object service, blobs), ``storage.py`` (storage
URLs), ``auth.py`` (Hawk, scopes), ``schemas.py`` (upstream schema validation), ``faults.py``
(fault injection, call log), ``clock.py`` (injectable clock), ``__main__.py`` (run as a process).

Only re-exports live here.
"""

from .faults import Call, Fault
from .schemas import SchemaMismatch, find_schema_dir, find_shared_dir
from .server import DEFAULT_TASK_QUEUE_ID, QueueEmulator

__all__ = ["QueueEmulator", "DEFAULT_TASK_QUEUE_ID", "Call", "Fault", "SchemaMismatch",
           "find_schema_dir", "find_shared_dir"]
