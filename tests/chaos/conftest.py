"""Fixtures of the chaos suite: the end-to-end ones (``tests/e2e/conftest.py``), re-exported.

Does not live here: the task mix and the invariants (``tcworker.testing.chaos``).
"""

from e2e.conftest import emulator, run_tasks, worker_process  # noqa: F401
