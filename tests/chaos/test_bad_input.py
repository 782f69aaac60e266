"""Bad input in one long run: a single ``tcworker run`` (capacity 4) takes every bad-input payload of
``failure-modes.md`` (FM-01 artifact names, FM-05 artifact expiries, FM-06 odd artifact names,
FM-15 environment edge cases, FM-18 malformed payloads), three rounds interleaved with good tasks,
resolves each as its case says, and still claims and completes a last clean task.

The single cases, with their detailed checks, live next to their features (``docs/reliability.md``
lists where); this test is about the worker surviving them all in a row. ``payload: null`` is not
here: the queue refuses to create such a task (``create-task-request`` wants an object), so only
``tcworker exec`` can meet it (``tests/test_exec.py``).

Does not cover: queue faults (``test_chaos.py``).
"""

from __future__ import annotations

from e2e.conftest import native_payload, resolutions, task_log

from tcworker.testing.queue.clock import iso

ROUNDS = 3
MALFORMED = ("exception", "malformed-payload")
COMPLETED = ("completed", "completed")
BAD_NAMES = ["", "public/logs/../../../foo.log", "/abs/foo.log", "public//foo.log", "./foo.log",
             "public/café.txt", "public/new\nline.txt"]
ODD_NAMES = ["public/a+b.txt", "public/100%.log", "public/with space.txt", "public/https%3A%2F%2Fx/y.json"]
ODD_ENV = {"Q": "a b;&|\"'$HOME`x`", "E": "", "NL": "l1\nl2", "U": "ünï©ødé", "1X": "digit", "A B": "space"}


def _file(path: str, name: str, **extra) -> dict:
    return {"type": "file", "path": path, "name": name, **extra}


def _cases(now: float) -> list[tuple[str, dict, dict, tuple[str, str]]]:
    """``(case, payload, task overrides, expected (state, reason))`` for one round."""
    short = {"deadline": iso(now + 1800), "expires": iso(now + 3600)}
    cases = [(f"FM-01 {name!r}", native_payload("echo hi > hello.log", artifacts=[_file("hello.log", name)]),
              {}, MALFORMED) for name in BAD_NAMES]
    cases += [
        ("FM-05 later than the task", native_payload("echo x > a.txt", artifacts=[
            _file("a.txt", "public/a.txt", expires=iso(now + 86400))]), short, MALFORMED),
        ("FM-05 in the past", native_payload("echo x > a.txt", artifacts=[
            _file("a.txt", "public/a.txt", expires=iso(now - 3600))]), short, MALFORMED),
        ("FM-05 missing", native_payload("echo x > a.txt", artifacts=[_file("a.txt", "public/a.txt")]),
         short, COMPLETED),
        ("FM-06 odd names", native_payload(
            "; ".join(f"printf '%s' '{n}' > f{i}" for i, n in enumerate(ODD_NAMES)),
            artifacts=[_file(f"f{i}", n) for i, n in enumerate(ODD_NAMES)]), {}, COMPLETED),
        ("FM-15 odd env", native_payload("printenv Q E NL U", env=ODD_ENV), {}, COMPLETED),
    ]
    for what, env in (("bool", {"A": True}), ("float", {"N": 1.5}), ("empty name", {"": "x"}),
                      ("= in name", {"A=B": "x"}), ("NUL in name", {"A\0B": "x"})):
        cases.append((f"FM-15 {what}", native_payload("echo ran", env=env), {}, MALFORMED))
    for what, payload in (("string maxRunTime", {"maxRunTime": "30", "command": [["true"]]}),
                          ("negative maxRunTime", {"maxRunTime": -1, "command": [["true"]]}),
                          ("huge maxRunTime", {"maxRunTime": 1e12, "command": [["true"]]}),
                          ("no command", {"maxRunTime": 30}),
                          ("5 MB payload", {"maxRunTime": 30, "command": [["true"]], "env": {"BIG": "x" * 5 * 1024 * 1024}}),
                          ("unknown key", {"maxRunTime": 30, "command": [["true"]], "bogusKey": 1})):
        cases.append((f"FM-18 {what}", payload, {}, MALFORMED))
    cases.append(("good", native_payload("echo good"), {}, COMPLETED))
    return cases


async def test_one_worker_survives_every_bad_input_case_and_keeps_claiming(emulator, run_tasks):
    emu = await emulator()
    cases = [case for _ in range(ROUNDS) for case in _cases(emu.clock.now())]
    last = ("last clean task", native_payload("echo last"), {}, COMPLETED)
    cases.append(last)  # created last: FIFO claims make it the last one
    ids, worker = await run_tasks(emu, [c[1] for c in cases], task_overrides=[c[2] for c in cases], capacity=4)
    wrong = [f"{case}: {resolutions(emu, task_id)}" for (case, _, _, expected), task_id in zip(cases, ids)
             if resolutions(emu, task_id) != [expected]]
    assert not wrong, "\n".join(wrong)
    assert "=== Task Starting ===" not in task_log(emu, ids[0])  # refused before anything ran
    assert "a b;&|\"'$HOME`x`\n\nl1\nl2\nünï©ødé\n" in task_log(emu, ids[[c[0] for c in cases].index("FM-15 odd env")])
    assert not worker.matching(r"Traceback|crashed"), worker.log_text
    assert len(worker.matching(r"task-resolved")) == len(cases) == ROUNDS * 24 + 1
