"""Measure body-compression candidates on BSON-like data (not a test; run by hand).

    .venv/bin/python tests/archive/bench_codecs.py [MiB]

Each 1 MiB chunk is compressed as an independent member, as the archive writer
does. Prints single-thread throughput (MB/s of input, 1 MB = 10**6 bytes), the
ratio (input / output), and the two-thread throughput for the candidates.
"""

from __future__ import annotations

import datetime
import random
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bson
import zstandard
from bson.int64 import Int64
from bson.objectid import ObjectId
from isal import isal_zlib

CHUNK = 1 << 20


def bson_like(total: int, seed: int = 7) -> bytes:
    """Concatenated BSON documents shaped like application data."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(3000)]
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    out = bytearray()
    n = 0
    while len(out) < total:
        n += 1
        doc = {
            "_id": ObjectId(),
            "user": {
                "name": " ".join(rng.choices(words, k=2)).title(),
                "email": f"{rng.choice(words)}.{rng.choice(words)}@example.com",
                "age": rng.randint(18, 90),
            },
            "created": start + datetime.timedelta(seconds=n * 37 + rng.randint(0, 30)),
            "status": rng.choice(["active", "pending", "closed", "archived"]),
            "tags": rng.sample(words[:200], k=rng.randint(0, 5)),
            "score": rng.random() * 100,
            "counter": Int64(rng.randint(0, 1 << 40)),
            "flags": {"verified": rng.random() < 0.5, "beta": rng.random() < 0.1},
            "text": " ".join(rng.choices(words, k=rng.randint(5, 60))),
            "items": [
                {
                    "sku": f"SKU-{rng.randint(0, 99999):05d}",
                    "qty": rng.randint(1, 9),
                    "price": round(rng.random() * 500, 2),
                }
                for _ in range(rng.randint(0, 4))
            ],
            "blob": rng.randbytes(rng.choice([0, 0, 16, 64])),
        }
        out += bson.encode(doc)
    return bytes(out)


def with_level(fn: Callable[[bytes, int, int], bytes], level: int) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        return fn(data, level, 31)  # wbits 31: a gzip member

    return compress


def candidates() -> list[tuple[str, Callable[[bytes], bytes]]]:
    found = [(f"isal {lv}", with_level(isal_zlib.compress, lv)) for lv in range(4)]
    found += [(f"zlib {lv}", with_level(zlib.compress, lv)) for lv in (1, 6)]
    try:
        from zlib_ng import zlib_ng

        found += [(f"zlib-ng {lv}", with_level(zlib_ng.compress, lv)) for lv in (1, 6)]
    except ImportError:
        pass
    for level in (1, 3, 6, 9):
        cctx = zstandard.ZstdCompressor(level=level)
        found.append((f"zstd {level}", cctx.compress))
    return found


def fresh_zstd(level: int) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=level).compress(data)

    return compress


def measure(fn: Callable[[bytes], bytes], chunks: list[bytes], threads: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    if threads == 1:
        out = sum(len(fn(c)) for c in chunks)
    else:
        with ThreadPoolExecutor(threads) as pool:
            out = sum(len(b) for b in pool.map(fn, chunks))
    return time.perf_counter() - t0, out


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    data = bson_like(mib << 20)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    print(f"{len(data) / 1e6:.1f} MB of BSON in {len(chunks)} chunks of 1 MiB")
    print(f"{'codec':<12}{'MB/s 1 thr':>12}{'MB/s 2 thr':>12}{'ratio':>8}")
    for name, fn in candidates():
        # a ZstdCompressor is not safe for concurrent use: one per call
        fn2 = fresh_zstd(int(name.split()[1])) if name.startswith("zstd") else fn
        secs, out = measure(fn, chunks, 1)
        secs2, _ = measure(fn2, chunks, 2)
        print(
            f"{name:<12}{len(data) / 1e6 / secs:>12.0f}{len(data) / 1e6 / secs2:>12.0f}"
            f"{len(data) / out:>8.2f}"
        )


if __name__ == "__main__":
    main()
