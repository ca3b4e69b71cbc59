"""Drill records: a small JSON object per drill, ``drills/<db>/<time>.json``.

Written at the destination after each drill (passed or failed), so that
``check --max-drill-age`` learns, from the place it already reads, when a
drill last passed. They live one level below the destination's root, where
no archive lives: list, prune and every archive reader see only the root's
level (storage/base.py), so they never see a record.

    {"format_version": 1, "database": "tsuru", "archive": "KEY", "ok": true,
     "started": "2026-12-07T09:00:00.000Z", "finished": "...",
     "rto_seconds": 12.3, "rpo_seconds": 3600.0, "failures": []}
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import units
from .._errors import MongosnapError
from ..archive.manifest import CLOCK_TOLERANCE
from ..storage import ObjectInfo, Storage

log = logging.getLogger("mongosnap.drill")

FOLDER = "drills/"
FORMAT_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
_NAME = "%Y%m%dT%H%M%S"
_KEY = re.compile(r"^(\d{8}T\d{6})\.(\d{3})Z\.json$")
_FAILURES_KEPT = 20


@dataclass(frozen=True)
class DrillRecord:
    key: str
    finished: datetime
    ok: bool
    archive: str
    failures: list[str]


def folder(database: str) -> str:
    return f"{FOLDER}{database}/"


async def write(storage: Storage, report: dict[str, Any]) -> str:
    """Store the record of one drill (a DrillReport's ``to_dict()``); its key.

    Named by the drill's end to the millisecond: a second drill ending in the
    same millisecond gets ObjectExists, never an overwrite."""
    finished = datetime.fromisoformat(report["finished"].replace("Z", "+00:00"))
    key = (
        f"{folder(report['database'])}{finished.astimezone(UTC).strftime(_NAME)}"
        f".{finished.microsecond // 1000:03d}Z.json"
    )
    record = {
        "format_version": FORMAT_VERSION,
        "database": report["database"],
        "archive": report["archive_key"],
        "ok": report["ok"],
        "started": report["started"],
        "finished": report["finished"],
        "rto_seconds": report["rto_seconds"],
        "rpo_seconds": report["rpo_seconds"],
        "failures": [f[:500] for f in report["failures"][:_FAILURES_KEPT]],
    }
    await storage.put(key, json.dumps(record, separators=(",", ":")).encode())
    return key


def record_time(key: str) -> datetime | None:
    """The drill's end, from its key; None for a key that is no drill record."""
    found = _KEY.match(key.rsplit("/", 1)[-1])
    if found is None:
        return None
    when = datetime.strptime(found.group(1), _NAME).replace(tzinfo=UTC)
    return when.replace(microsecond=int(found.group(2)) * 1000)


async def newest_passed(
    storage: Storage, database: str, since: datetime
) -> tuple[DrillRecord | None, DrillRecord | None]:
    """(the newest drill of ``database`` that passed since ``since``, the newest
    drill at all); a record that cannot be read does not count, with a warning."""
    listed = [o async for o in storage.list(folder(database))]
    dated = sorted(((t, o.key) for o in listed if (t := _dated(o)) is not None), reverse=True)
    latest = None
    for when, key in dated:
        if when < since and latest is not None:
            break
        found = await _read(storage, key, when)
        if found is None:
            continue
        latest = latest or found
        if found.ok and when >= since:
            return found, latest
        if when < since:
            break
    return None, latest


def _dated(obj: ObjectInfo) -> datetime | None:
    """When the drill ended: its name's time, unless the storage stored it
    earlier than that (the drilling host's clock ran ahead): then the
    storage's time, so a record from the future never vouches for a drill."""
    when = record_time(obj.key)
    if when is None or obj.modified is None:
        return when
    stored = obj.modified.astimezone(UTC)
    if when - stored <= CLOCK_TOLERANCE:
        return when
    log.warning(
        "drill record %s is named %s after the storage stored it (the drilling host's clock"
        " ran ahead); dated by the storage's clock",
        obj.key,
        units.duration(when - stored),
    )
    return stored


async def _read(storage: Storage, key: str, when: datetime) -> DrillRecord | None:
    try:
        data = json.loads(await storage.read_bytes(key, limit=MAX_RECORD_BYTES))
        return DrillRecord(
            key, when, data["ok"] is True, str(data["archive"]), list(data["failures"])
        )
    except (MongosnapError, ValueError, KeyError, TypeError) as exc:
        log.warning("drill record %s cannot be read: %s", key, exc)
        return None
