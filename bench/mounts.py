"""Bench: mounting a read-only directory from a 200 MB ``tar.zst`` vs ``tar --zstd -xf``, and the
second use of a cached download.

Usage: ``.venv/bin/python bench/mounts.py [--mb 200] [--repeat 3] [--dir DIR]``

Builds an archive of about ``--mb`` MB (compressed: mostly incompressible 1 MiB files plus a
few thousand small text files), then prints a Markdown table of median wall seconds for:

- ``tar --zstd -xf`` of the local file (the reference);
- :func:`tcworker.archives.extract` of the same file (what a read-only directory mount does once
  the content is in the download cache) and its ratio to tar;
- the first use of URL content (download from a loopback server + sha256 + store);
- the second use of that URL content, with the payload's sha256 (re-hashed before reuse) and
  without (size check only): no network.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_mounts_helpers import ScriptedServer  # noqa: E402

from tcworker.archives import extract  # noqa: E402
from tcworker.downloads import DownloadStore, RetryPolicy, url_fetcher  # noqa: E402


def build_archive(path: Path, mb: int) -> tuple[int, int]:
    """A tar.zst of ~``mb`` MB → (files, uncompressed bytes)."""
    import zstandard

    files = total = 0
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw) as zst:
        with tarfile.open(fileobj=zst, mode="w|") as tar:
            for i in range(mb):
                data = os.urandom(1024 * 1024)  # incompressible: the archive is ~``mb`` MB
                info = tarfile.TarInfo(f"big/{i // 50}/blob{i}.bin")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                files, total = files + 1, total + len(data)
            for i in range(3000):
                data = (f"line {i}\n" * 40).encode()
                info = tarfile.TarInfo(f"small/{i // 100}/f{i}.txt")
                info.size, info.mode = len(data), 0o755 if i % 10 == 0 else 0o644
                tar.addfile(info, io.BytesIO(data))
                files, total = files + 1, total + len(data)
    return files, total


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_extract(archive: Path, work: Path, repeat: int) -> tuple[list[float], list[float]]:
    tar_s, ours_s = [], []
    for i in range(repeat):
        for label, results in (("tar", tar_s), ("ours", ours_s)):
            dest = work / f"{label}{i}"
            dest.mkdir()
            if label == "tar":
                results.append(timed(lambda: subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(dest)],
                                                           check=True)))
            else:
                def ours() -> None:
                    with open(archive, "rb") as src:
                        extract(src, dest, "tar.zst")
                results.append(timed(ours))
            shutil.rmtree(dest)
    return tar_s, ours_s


async def bench_download(archive: Path, work: Path, repeat: int) -> dict[str, list[float]]:
    server = await ScriptedServer().start()
    server.files["/a.tar.zst"] = archive.read_bytes()
    digest = hashlib.sha256(server.files["/a.tar.zst"]).hexdigest()
    url = server.url + "/a.tar.zst"
    out: dict[str, list[float]] = {"first use (download)": [], "second use, sha256 given": [],
                                   "second use, no sha256": []}
    try:
        for i in range(repeat):
            store = DownloadStore(work / f"dl{i}")

            async def use(sha: str | None) -> float:
                start = time.perf_counter()
                handle = await store.open(f"urlcontent:{url}", url_fetcher(url, RetryPolicy()), sha256=sha,
                                          label=url, warn=lambda _m: None)
                handle.close()
                return time.perf_counter() - start

            out["first use (download)"].append(await use(digest))
            out["second use, sha256 given"].append(await use(digest))
            out["second use, no sha256"].append(await use(None))
            shutil.rmtree(store.dir)
    finally:
        await server.stop()
    assert server.hits["/a.tar.zst"] == repeat
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tcw-bench-mounts-") as tmp:
        work = Path(tmp)
        archive = work / "a.tar.zst"
        files, total = build_archive(archive, args.mb)
        size = archive.stat().st_size
        print(f"archive: {size / 1e6:.0f} MB tar.zst, {files} entries, {total / 1e6:.0f} MB unpacked; "
              f"median of {args.repeat}\n")
        tar_s, ours_s = bench_extract(archive, work, args.repeat)
        downloads = asyncio.run(bench_download(archive, work, args.repeat))
        tar_m = statistics.median(tar_s)
        print("| what | median s | vs tar --zstd -xf |\n|---|---|---|")
        print(f"| tar --zstd -xf | {tar_m:.3f} | 1.00 |")
        print(f"| archives.extract (read-only directory mount) | {statistics.median(ours_s):.3f} | "
              f"{statistics.median(ours_s) / tar_m:.2f} |")
        for label, values in downloads.items():
            print(f"| {label} | {statistics.median(values):.3f} | |")


if __name__ == "__main__":
    main()
