#!/usr/bin/env python3
"""Drop-in for the legacy healer.bash: ``healer.py <bucket-path> <host> <database> <coll>...``.

Every watched collection missing from DATABASE is "sick"; each is restored
from the newest of the three newest archives in ``<bucket-path>`` that holds
it (only its own bytes are fetched; it appears complete or not at all).
Exit 0 when nothing is sick afterwards, 1 otherwise, as before: "FATAL: no
backups found!" when there is no archive at all.
"""

from __future__ import annotations

import asyncio
import sys

import mongosnap

USAGE = """Usage: healer.py <bucket-path> <host> <database> <collection_1> [... <collection_n>]

  bucket-path  s3://bucket[/prefix] or a directory holding the backups
  host         the MongoDB server (host[:port])
  database     the database to watch
  collection   the collections that must exist"""


async def main(dest: str, host: str, database: str, collections: list[str]) -> int:
    try:
        report = await mongosnap.heal(
            f"mongodb://{host}/", dest, database=database, collections=collections
        )
    except mongosnap.NoBackupsFound:
        print("FATAL: no backups found!", file=sys.stderr)
        return 1
    except mongosnap.MongosnapError as exc:
        print(f"FATAL: {exc}", file=sys.stderr)
        return 1
    if not report.vanished:
        print(f"Nothing to heal: all {len(report.watched)} collections of {database} exist.")
        return 0
    for outcome in report.restored:
        if outcome.status != "restored":  # e.g. recreated by an application meanwhile
            print(f"{database}.{outcome.name}: {outcome.status}")
            continue
        print(
            f"Healed {database}.{outcome.name} from {outcome.archive} "
            f"({outcome.documents} documents, {outcome.indexes} indexes)"
        )
    if report.missing:
        print(f"FATAL: no backup holds {', '.join(report.missing)}!", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5:
        print(USAGE)
        sys.exit(1)
    sys.exit(asyncio.run(main(*sys.argv[1:4], sys.argv[4:])))
