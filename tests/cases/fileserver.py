"""A loopback HTTP server for ``{{fileserver}}``: the ``files/`` of the cases folder plus runner files.

:class:`FileServer` serves a scratch folder (in the test's temp dir) on ``127.0.0.1:<port 0>`` from
a thread. The scratch folder holds symlinks to ``files/<case-id>`` in the shared folder (read, never
written) and the runner-built files at its top level.

What does not live here: building runner files (:mod:`caserun`), the cases themselves.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return


class FileServer:
    """Serves ``root`` over HTTP on loopback while open; ``url`` has no trailing slash.

    Args:
        root: the folder to serve (a scratch folder; see :meth:`link_case_files`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def link_case_files(root: Path, files_dir: Path) -> None:
        """Make ``root/<case-id>`` a symlink to each ``files_dir/<case-id>`` (nothing is copied)."""
        root.mkdir(parents=True, exist_ok=True)
        if files_dir.is_dir():
            for entry in sorted(files_dir.iterdir()):
                (root / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "FileServer not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FileServer":
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="case-fileserver",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
