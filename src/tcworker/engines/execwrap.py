"""Joining a run's cgroup through a ``/bin/sh`` exec wrapper, so that CPython can ``vfork``.

A ``preexec_fn`` forces ``subprocess`` to ``fork``: the kernel copies the worker's page tables and
write-protects its memory, and the worker then takes a page fault on each page it writes (about
5 ms of worker CPU per command for a ~60 MB worker, ``bench/README.md``). Without one, CPython
uses ``vfork``. The wrapper::

    /bin/sh -c 'trap \': >"$0"\' EXIT; echo 0 >"$1" || exit; shift; unset PWD; exec "$@"' STATUS PROCS ARGV...

(``PWD=$2; shift 2`` instead of ``shift; unset PWD`` when the env holds a PWD, passed as ``$2``)
joins the cgroup (``PROCS`` is its ``cgroup.procs``) before the command runs, then execs
it with the same argv and environment. If that ``exec`` fails the shell exits through the EXIT
trap, which creates ``STATUS``: the engine then starts the command again the exact way (``fork``
and ``preexec_fn``), so a command that cannot start is still reported as a start failure with
Popen's own error, never as exit code 126/127 (the task log then also holds the shell's one-line
complaint: only for what the checks below cannot foresee, e.g. ETXTBSY or a race).

A shell is no exact ``execve``, so :meth:`ExecWrapper.plan` takes the wrapper only when it
cannot differ, and returns None (→ the exact path) otherwise:

- every env name is a shell identifier (dash drops the others) and none is a variable the shell
  resets (:data:`SHELL_VARIABLES`: ``IFS``, ``OPTIND``, ``PPID``...), and ``PATH`` is set (else
  Popen and the shell search different defaults) and holds no ``%`` (dash reads ``%`` in PATH
  entries); ``PWD``, which the shell sets, is put back or unset;
- the executable, looked up like Popen does (``argv[0]`` with a ``/`` as is, else each PATH entry,
  relative ones against the task directory), is a regular executable file which is an ELF
  binary of this machine's class and type whose ELF interpreter exists, or a ``#!`` script whose
  interpreter passes the same check (a file the kernel would refuse with ENOEXEC is run by the
  shell as a script: such files always take the exact path).

:func:`probe` (engine boot) checks that the shell passes an environment through unchanged and
reports a failed ``exec`` through the trap; when it does not (e.g. ``/bin/sh`` is bash, which
adds ``SHLVL`` and ``_``) the wrapper is not used at all. Environment order is not kept (the
shell rebuilds it); generic-worker does not keep it either.

What does not live here: starting and waiting (:mod:`.spawn`), the cgroup (:mod:`.proctree`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

SHELL = b"/bin/sh"
_JOIN = b'trap \': >"$0"\' EXIT; echo 0 >"$1" || exit; '
#: For an env without PWD (the shell sets one) and for one with PWD (the shell rewrites it).
SCRIPT = _JOIN + b'shift; unset PWD; exec "$@"'
SCRIPT_PWD = _JOIN + b'PWD=$2; shift 2; exec "$@"'
#: Names dash resets or rejects (``IFS``, ``OPTIND``, ``PPID``; dash 0.5.12 keeps every other
#: name, ``PWD`` is put back by :data:`SCRIPT_PWD`): an env holding one takes the exact path.
SHELL_VARIABLES = frozenset({b"IFS", b"OPTIND", b"OPTARG", b"PPID", b"LINENO"})
_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEAD_BYTES = 256  # the kernel reads this much of a #! line
_SCRIPT_DEPTH = 4  # nested #! interpreters the kernel follows


class ExecWrapper:
    """Builds wrapper command lines for one cgroup tree.

    Args:
        machine: ``(EI_CLASS, EI_DATA, e_machine)`` of this machine's ELF binaries.
    """

    def __init__(self, machine: tuple[int, int, int]) -> None:
        self.machine = machine

    def plan(
        self, argv: Sequence[bytes], env: Mapping[bytes, bytes], cwd: Path, procs: Path
    ) -> tuple[list[bytes], Path] | None:
        """The wrapper's argv and its status file for this command, or None for the exact path.

        The status file is a random name in ``cwd`` (the task directory), created only when the
        ``exec`` fails; :meth:`.spawn.ChildProcess.exec_failed` removes it.
        """
        if not argv or not _env_is_plain(env) or not self._runnable(argv[0], env, os.fsencode(cwd)):
            return None
        status = cwd / f".tcw-exec-failed-{secrets.token_hex(8)}"
        head = [SHELL, b"-c", SCRIPT, os.fsencode(status), os.fsencode(procs)]
        if b"PWD" in env:
            head[2:] = [SCRIPT_PWD, os.fsencode(status), os.fsencode(procs), env[b"PWD"]]
        return [*head, *argv], status

    def _runnable(self, exe: bytes, env: Mapping[bytes, bytes], cwd: bytes) -> bool:
        if os.path.dirname(exe):
            candidates = [exe]
        else:
            candidates = [os.path.join(os.fsencode(d), exe) for d in os.get_exec_path(env)]
        for candidate in candidates:
            path = os.path.join(cwd, candidate)
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                return False
            if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK):
                return self._loads(path, cwd, _SCRIPT_DEPTH)
        return False

    def _loads(self, path: bytes, cwd: bytes, depth: int) -> bool:
        """True when the kernel will load ``path``: a native ELF with its interpreter, or #!."""
        try:
            with open(path, "rb") as file:
                head = file.read(_HEAD_BYTES)
                if head.startswith(b"\x7fELF"):
                    return self._native_elf(file, head)
        except OSError:
            return False
        if not head.startswith(b"#!") or depth == 0 or b"\n" not in head:
            return False
        words = head[2:head.index(b"\n")].split()
        if not words:
            return False
        interpreter = os.path.join(cwd, words[0])
        try:
            if not (stat.S_ISREG(os.stat(interpreter).st_mode) and os.access(interpreter, os.X_OK)):
                return False
        except OSError:
            return False
        return self._loads(interpreter, cwd, depth - 1)

    def _native_elf(self, file, head: bytes) -> bool:
        ident = elf_machine(head)
        if ident != self.machine:
            return False
        interp = _elf_interpreter(file, head)
        return interp is None or (interp != b"" and os.path.isfile(interp) and os.access(interp, os.X_OK))


def _env_is_plain(env: Mapping[bytes, bytes]) -> bool:
    path = env.get(b"PATH")
    if path is None or b"%" in path:
        return False
    return all(_NAME.match(name) and name not in SHELL_VARIABLES for name in env)


def elf_machine(head: bytes) -> tuple[int, int, int] | None:
    """``(EI_CLASS, EI_DATA, e_machine)`` of an ELF header, or None if it is not one."""
    if len(head) < 20 or not head.startswith(b"\x7fELF") or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    return head[4], head[5], struct.unpack_from(order + "H", head, 18)[0]


def _elf_interpreter(file, head: bytes) -> bytes | None:
    """The PT_INTERP path of an ELF file (None: static; b"": unreadable headers)."""
    order = "<" if head[5] == 1 else ">"
    wide = head[4] == 2  # ELFCLASS64
    word = order + ("Q" if wide else "I")
    try:
        phoff = struct.unpack_from(word, head, 32 if wide else 28)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54 if wide else 42)
        offset_at, size_at = (8, 32) if wide else (4, 16)  # p_offset, p_filesz
        file.seek(phoff)
        table = file.read(phentsize * phnum)
        for i in range(phnum):
            entry = table[i * phentsize:(i + 1) * phentsize]
            if struct.unpack_from(order + "I", entry, 0)[0] == 3:  # PT_INTERP
                file.seek(struct.unpack_from(word, entry, offset_at)[0])
                return file.read(struct.unpack_from(word, entry, size_at)[0]).rstrip(b"\0")
    except (OSError, struct.error):
        return b""
    return None


def probe(procs: Path) -> ExecWrapper | None:
    """An :class:`ExecWrapper` if the shell keeps an environment exactly and reports a failed exec.

    ``procs`` is the ``cgroup.procs`` of an empty scratch cgroup. Blocking (two short processes,
    a few ms).
    """
    try:
        with tempfile.TemporaryDirectory(prefix="tcw-execwrap-") as scratch:
            return _probe(procs, Path(scratch))
    except (OSError, subprocess.SubprocessError) as err:
        logger.info("native engine: exec wrapper not usable (%s); commands start without vfork", err)
        return None


def _probe(procs: Path, status_dir: Path) -> ExecWrapper | None:
    """:func:`probe` with ``status_dir`` as the scratch task directory."""
    with open("/proc/self/exe", "rb") as exe:
        machine = elf_machine(exe.read(64))
    env_tool = b"/usr/bin/env"
    if machine is None or not os.access(SHELL, os.X_OK) or not os.access(env_tool, os.X_OK):
        return None
    wrapper = ExecWrapper(machine)
    env = {b"PATH": b"/usr/bin:/bin", b"A_1": b"x y\n z=\xff\t", b"EMPTY": b"", b"HOME": b"/nonexistent"}
    planned = wrapper.plan([env_tool, b"-0"], env, status_dir, procs)
    if planned is None:
        return None
    out = subprocess.run(planned[0], env=env, cwd=status_dir, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=30)
    if out.returncode != 0 or planned[1].exists():
        return None
    seen = dict(item.split(b"=", 1) for item in out.stdout.split(b"\0") if item)
    if seen != env:
        logger.info("native engine: %s changes the environment; commands start without vfork", SHELL)
        return None
    failing = [SHELL, b"-c", SCRIPT, os.fsencode(planned[1]), os.fsencode(procs),
               os.fsencode(status_dir / "no-such-command")]
    subprocess.run(failing, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    if not planned[1].exists():
        return None
    planned[1].unlink()
    return wrapper
