"""Tests of :mod:`tcworker.artifact_bodies`: createArtifact bodies, the hashing reader, gzip."""

from __future__ import annotations

import gzip
import hashlib
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tcworker.artifact_bodies import BodyReader, create_request, format_expires, gzip_to_temp, sha256_of
from tcworker.artifacts import ArtifactGone, DataArtifact, ErrorArtifact, LinkArtifact, ReferenceArtifact

WHEN = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def test_expires_is_formatted_like_the_queue_with_milliseconds() -> None:
    assert format_expires(WHEN) == "2030-01-02T03:04:05.678Z"
    assert format_expires(WHEN.astimezone(timezone(timedelta(hours=2)))) == "2030-01-02T03:04:05.678Z"
    assert format_expires(WHEN.replace(tzinfo=None)) == "2030-01-02T03:04:05.678Z"


def test_create_request_for_every_kind() -> None:
    data = DataArtifact("public/a", Path("/x"), 3, "text/plain", "gzip", WHEN)
    assert create_request(data, storage_type="object", size_bytes=3) == {
        "storageType": "object", "contentType": "text/plain", "expires": "2030-01-02T03:04:05.678Z",
        "contentLength": 3}
    assert "contentLength" not in create_request(data, storage_type="s3")
    error = ErrorArtifact("public/e", "file-missing-on-worker", "m" * 5000, WHEN, True)
    body = create_request(error)
    assert body["storageType"] == "error" and len(body["message"]) == 4096 and "contentType" not in body
    assert create_request(LinkArtifact("l", "t", WHEN)) == {
        "storageType": "link", "expires": "2030-01-02T03:04:05.678Z", "artifact": "t"}
    assert create_request(ReferenceArtifact("r", "https://x/y", WHEN, "text/plain"))["url"] == "https://x/y"


async def test_body_reader_reads_exactly_size_and_hashes() -> None:
    reader = BodyReader(io.BytesIO(b"0123456789-extra"), 10)
    got = b"".join([chunk async for chunk in reader.chunks()])
    assert got == b"0123456789" and reader.complete
    assert reader.hexdigest() == hashlib.sha256(b"0123456789").hexdigest()
    assert await reader.read(5) == b""


async def test_body_reader_raises_artifact_gone_when_the_file_shrank() -> None:
    reader = BodyReader(io.BytesIO(b"short"), 10)
    assert await reader.read(100) == b"short"
    with pytest.raises(ArtifactGone):
        await reader.read(100)


def test_gzip_to_temp_is_deterministic_and_decodes_to_the_input() -> None:
    data = b"text line\n" * 5000
    first, size1, digest = gzip_to_temp(io.BytesIO(data), len(data))
    second, size2, _ = gzip_to_temp(io.BytesIO(data), len(data))
    with first, second:
        body = first.read()
        assert body == second.read() and len(body) == size1 == size2 < len(data)
    assert gzip.decompress(body) == data
    assert digest == hashlib.sha256(data).hexdigest() == sha256_of(io.BytesIO(data), len(data))


def test_gzip_to_temp_refuses_a_file_that_shrank() -> None:
    with pytest.raises(ArtifactGone):
        gzip_to_temp(io.BytesIO(b"abc"), 10)
