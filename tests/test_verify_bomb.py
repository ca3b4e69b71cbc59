"""verify of a gzip bomb of tiny documents: refused within heal's expansion
bound, quickly, and a SIGTERM during the CPU-bound decoding ends it at once.

The bomb is built here: a legacy ``.tar.gz`` (no sidecar) whose one
``dump/db/coll.bson`` member holds about 200 million empty documents
(5 bytes each, 1 GB), about 1 MB compressed.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
from helpers import Destination, run_cli, subprocess_env

from mongosnap import UnsafeArchive
from mongosnap.pipelines.engine import LEGACY_DOCUMENTS_PER_BYTE, LEGACY_FREE_DOCUMENTS

EMPTY = b"\x05\x00\x00\x00\x00"  # {}: the smallest BSON document
PIECE = EMPTY * (1 << 18)  # 1.25 MiB of them
PIECES = 800  # 1 GB in all
NAME = "2026-01-02-03-04-05-mongodb-dump.tar.gz"


def _deflated(data: bytes, last: bool = False) -> bytes:
    """Raw deflate of ``data`` on its own: no reference to what precedes it,
    so a segment can be repeated as it is."""
    pack = zlib.compressobj(9, zlib.DEFLATED, -15)
    return pack.compress(data) + pack.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)


def _bomb() -> bytes:
    """A gzip of a tar holding PIECES times PIECE: one compressed segment,
    repeated (compressing a gigabyte would take seconds)."""
    size = len(PIECE) * PIECES
    header = tarfile.TarInfo("dump/db/coll.bson")
    header.size = size
    head = header.tobuf(format=tarfile.PAX_FORMAT)
    tail = b"\0" * (-size % 512) + b"\0" * 1024
    crc = zlib.crc32(head)
    for _ in range(PIECES):
        crc = zlib.crc32(PIECE, crc)
    crc = zlib.crc32(tail, crc)
    total = len(head) + size + len(tail)
    body = _deflated(head) + _deflated(PIECE) * PIECES + _deflated(tail, last=True)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return gzip_header + body + struct.pack("<II", crc, total & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = _bomb()
    assert 500_000 < len(data) < 2_000_000, len(data)
    return data


def _place(dest: Destination, data: bytes) -> None:
    if dest.root is not None:
        dest.root.mkdir(parents=True, exist_ok=True)
        (dest.root / NAME).write_bytes(data)
    else:
        prefix = dest.url.split("/", 3)[3] if dest.url.count("/") >= 3 else ""
        key = f"{prefix}/{NAME}" if prefix else NAME
        dest.client().put_object(Bucket=dest.bucket, Key=key, Body=data)


def _s3_args(dest: Destination) -> list[str]:
    if dest.endpoint is None:
        return []
    return ["--endpoint-url", dest.endpoint.endpoint_url, "--addressing-style", "path"]


def test_verify_refuses_a_bomb_of_tiny_documents_quickly(
    destination: Destination, bomb: bytes
) -> None:
    _place(destination, bomb)
    started = time.monotonic()
    done = run_cli(
        "verify",
        "latest",
        destination.url,
        *_s3_args(destination),
        "--json",
        env=subprocess_env(destination),
    )
    took = time.monotonic() - started
    assert done.returncode == UnsafeArchive.exit_code, (done.returncode, done.stderr)
    report = json.loads(done.stdout.splitlines()[0] if "\n{" in done.stdout else done.stdout)
    (problem,) = report["problems"]
    assert problem["error"] == "UnsafeArchive" and "decompression bomb" in problem["message"]
    # Within the bound: at most the free documents plus 2 per compressed byte.
    assert report["documents"] <= LEGACY_FREE_DOCUMENTS + LEGACY_DOCUMENTS_PER_BYTE * len(bomb)
    assert report["bytes_read"] < len(bomb)  # stopped before the end
    assert took < 20, took


def _nested(levels: int) -> bytes:
    """``{a: {a: ... {}}}``, ``levels`` embedded documents deep."""
    if levels == 0:
        return EMPTY
    inner = b"\x03a\x00" + _nested(levels - 1)
    return struct.pack("<i", len(inner) + 5) + inner + b"\x00"


def _deep_archive(count: int) -> bytes:
    """A legacy archive of ``count`` documents ``{n: <int32>, s: "...", a: {a: ...}}``
    199 levels deep (200 with the top: the most accepted), each walked in
    Python for its depth: slow to check, yet only about 90 compressed bytes
    each, far within the expansion bound. ``n`` is set with strided slices."""
    body = b"\x10n\x00" + b"\x00" * 4 + b"\x02s\x00" + struct.pack("<i", 11) + b"\x03" * 10
    body += b"\x00\x03a\x00" + _nested(198)
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    block = bytearray(doc) * count
    block[7 :: len(doc)] = bytes(range(256)) * (count // 256)
    block[8 :: len(doc)] = bytes(high for high in range(count // 256) for _ in range(256))
    header = tarfile.TarInfo("dump/db/coll.bson")
    header.size = len(block)
    pack = zlib.compressobj(1, zlib.DEFLATED, 31)
    tail = b"\x00" * (-len(block) % 512 + 1024)
    head = pack.compress(header.tobuf(format=tarfile.PAX_FORMAT))
    return head + pack.compress(bytes(block)) + pack.compress(tail) + pack.flush()


def test_sigterm_during_decoding_ends_verify_within_two_seconds(tmp_path: Path) -> None:
    """Documents within the bound that take a minute of CPU-bound checking
    (each megabyte read holds about 12,000 of them, a dozen seconds' work
    if done in one go); SIGTERM during it must still be heard."""
    root = tmp_path / "backups"
    root.mkdir()
    (root / NAME).write_bytes(_deep_archive(16384))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongosnap", "verify", "latest", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # started (about 0.5 s) and well inside the decoding
        assert proc.poll() is None, ("verify ended before the signal", proc.communicate())
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert took < 2, took
