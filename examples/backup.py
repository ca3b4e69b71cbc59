#!/usr/bin/env python3
"""Drop-in for the legacy backup.bash: ``backup.py <bucket-path> <host[:port]> <database>``.

Dumps DATABASE from HOST into ``<bucket-path>`` (``s3://bucket[/prefix]`` or a
directory) as ``<time>-mongodb-dump.tar.gz``, streaming: no local dump, no
tarball on disk. S3 credentials and endpoint come from the standard AWS
variables and files. Exit 0 on success, 1 on any failure, as before; a
crontab line changes only its script name.
"""

from __future__ import annotations

import asyncio
import sys

import mongosnap

USAGE = """Usage: backup.py <bucket-path> <host[:port]> <database>

  bucket-path  s3://bucket[/prefix] or a directory
  host[:port]  the MongoDB server
  database     the database to back up"""


async def main(dest: str, host: str, database: str) -> int:
    print(f"Backing up {database} from {host} to {dest}", flush=True)
    try:
        result = await mongosnap.backup(f"mongodb://{host}/", dest, database=database)
    except mongosnap.MongosnapError as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return 1
    print(
        f"Uploaded {result.archive_key} to {dest} ({len(result.collections)} collections, "
        f"{result.documents} documents, {result.bytes_out} bytes)"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(USAGE)
        sys.exit(1)
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
