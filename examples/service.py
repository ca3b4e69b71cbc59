#!/usr/bin/env python3
"""A long-running service embedding mongosnap: backups on a schedule, a heal watch.

    MONGOSNAP_URI=mongodb://user:pw@db/ python service.py DEST DATABASE COLL... \\
        [--backup-every SECONDS] [--heal-every SECONDS]

Two asyncio tasks share one MongoDB client: one backs DATABASE up every
``--backup-every`` seconds, the other heals the watched collections every
``--heal-every`` seconds. A failed cycle is logged and retried next time.
SIGTERM, SIGHUP (the terminal or ssh session that started it went away) or
Ctrl-C stops both: a backup in flight aborts its upload, a heal in flight
drops its staged copies, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from pymongo import AsyncMongoClient

import mongosnap

log = logging.getLogger("service")


async def every(seconds: float, name: str, job: Callable[[], Awaitable[str]]) -> None:
    """Run ``job`` now and then every ``seconds``; log what each run says, or why it failed."""
    while True:
        try:
            log.info("%s: %s", name, await job())
        except mongosnap.MongosnapError as exc:
            log.error("%s failed: %s: %s", name, type(exc).__name__, exc)
        await asyncio.sleep(seconds)


async def serve(args: argparse.Namespace) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(args.uri)

    async def backup() -> str:
        result = await mongosnap.backup(client, args.dest, database=args.database)
        return f"wrote {result.archive_key} ({result.documents} documents)"

    async def heal() -> str:
        report = await mongosnap.heal(
            client, args.dest, database=args.database, collections=args.collections
        )
        restored = [f"{o.name} ({o.status})" for o in report.restored]
        missing = f"; still missing: {', '.join(report.missing)}" if report.missing else ""
        return (f"restored {', '.join(restored)}" if restored else "all present") + missing

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(every(args.backup_every, "backup", backup)),
        asyncio.create_task(every(args.heal_every, "heal", heal)),
    ]
    log.info("started: backing up %s every %ss to %s", args.database, args.backup_every, args.dest)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        for task in tasks:
            task.cancel()  # cleanup (abort upload, drop staged copies) runs inside
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        log.info("stopped")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dest", help="s3://bucket[/prefix] or a directory")
    p.add_argument("database")
    p.add_argument("collections", nargs="+", help="collections to keep healed")
    p.add_argument("--uri", default=os.environ.get("MONGOSNAP_URI", "mongodb://localhost/"))
    p.add_argument("--backup-every", type=float, default=24 * 3600, metavar="SECONDS")
    p.add_argument("--heal-every", type=float, default=60, metavar="SECONDS")
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s", level=logging.INFO)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # its DEBUG prints credentials
    asyncio.run(serve(parse()))
