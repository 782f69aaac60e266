"""Tests of :mod:`tcworker.logs`: the task log's layout, raw bytes, copying and live readers."""

from __future__ import annotations

import asyncio
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tcworker.logs import FOLLOW_CHUNK_BYTES, TaskLog, format_message, timestamp

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


async def collect(log: TaskLog, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in log.follow(offset)])


def test_timestamp_is_rfc3339_utc_with_milliseconds() -> None:
    when = datetime(2026, 8, 21, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert timestamp(when) == "2026-08-21T10:00:00.123Z"


def test_given_worker_messages_when_written_then_each_line_is_prefixed(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.info("hello\nworld")
    log.warn("careful")
    log.error("broken\ntwice")
    log.close()
    lines = (tmp_path / "live.log").read_text().splitlines()
    assert re.fullmatch(rf"\[taskcluster {TS}\] hello", lines[0])
    assert re.fullmatch(rf"\[taskcluster {TS}\] world", lines[1])
    assert re.fullmatch(rf"\[taskcluster:warn {TS}\] careful", lines[2])
    assert lines[3:] == ["[taskcluster:error] broken", "[taskcluster:error] twice"]


def test_given_raw_bytes_without_newline_when_message_follows_then_it_starts_a_new_line(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.write(b"caf\xe9\xff no newline")
    log.error("after")
    log.close()
    assert (tmp_path / "live.log").read_bytes() == b"caf\xe9\xff no newline\n[taskcluster:error] after\n"
    assert log.size_bytes == len(b"caf\xe9\xff no newline\n[taskcluster:error] after\n")


def test_format_message_empty_gives_one_prefixed_line() -> None:
    assert format_message("[p] ", "") == b"[p] \n"


def test_given_a_pipe_when_copied_then_bytes_land_exactly_and_eof_is_zero(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.write(b"head\n")
    r, w = os.pipe()
    os.set_blocking(r, False)
    payload = bytes(range(256)) * 100
    os.write(w, payload)
    with pytest.raises(BlockingIOError):
        while True:
            log.copy_from(r, 1000)
    os.close(w)
    assert log.copy_from(r) == 0
    os.close(r)
    log.info("tail")
    log.close()
    data = (tmp_path / "live.log").read_bytes()
    assert data.startswith(b"head\n" + payload + b"\n[taskcluster ")  # newline added: payload ends in 0xff


def test_given_echo_when_writing_and_copying_then_echo_gets_every_byte(tmp_path: Path) -> None:
    echo = io.BytesIO()
    log = TaskLog(tmp_path / "live.log", echo=echo)
    log.info("start")
    r, w = os.pipe()
    os.write(w, b"\xff\xfeout\n")
    os.close(w)
    while log.copy_from(r):
        pass
    os.close(r)
    log.close()
    assert echo.getvalue() == (tmp_path / "live.log").read_bytes()


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.close()
    log.close()
    with pytest.raises(ValueError):
        log.write(b"x")


async def test_given_readers_attached_early_and_late_then_all_see_everything(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.write(b"one\n")
    early = asyncio.create_task(collect(log))
    mid_offset = log.size_bytes
    await asyncio.sleep(0)
    big = os.urandom(3 * FOLLOW_CHUNK_BYTES + 7)
    log.write(big)
    late = asyncio.create_task(collect(log))
    from_mid = asyncio.create_task(collect(log, mid_offset))
    await asyncio.sleep(0)
    log.write(b"end\n")
    log.close()
    expected = b"one\n" + big + b"end\n"
    assert await early == expected
    assert await late == expected
    assert await from_mid == big + b"end\n"


async def test_given_a_reader_that_never_reads_then_the_writer_is_not_held_up(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.write(b"first\n")
    stalled = log.follow()
    assert await stalled.__anext__() == b"first\n"
    for _ in range(100):
        log.write(b"x" * 65536)
    log.close()
    assert log.size_bytes == 6 + 100 * 65536
    await stalled.aclose()


async def test_given_a_closed_log_when_followed_then_replays_and_ends(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "live.log")
    log.write(b"all\n")
    log.close()
    assert await collect(log) == b"all\n"


def test_given_an_echo_stream_with_a_descriptor_when_copied_then_it_gets_the_same_bytes(tmp_path):
    # copy_from splices into the file, then sendfile(2)s the same range to the echo descriptor
    echo_path = tmp_path / "echo.out"
    with open(echo_path, "wb") as echo:
        log = TaskLog(tmp_path / "log", echo=echo)
        log.info("before")
        read_end, write_end = os.pipe()
        payload = bytes(range(256)) * 4096 + b"tail without newline"
        os.write(write_end, payload[:60000])
        os.set_blocking(read_end, False)
        moved = 0
        while moved < 60000:
            moved += log.copy_from(read_end)
        log.error("after")
        log.close()
        os.close(read_end)
        os.close(write_end)
    assert echo_path.read_bytes() == (tmp_path / "log").read_bytes()
    assert payload[:60000] in echo_path.read_bytes()
