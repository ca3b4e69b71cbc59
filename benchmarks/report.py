"""bench.py's output: one markdown table per case on stdout, and the figures for --json."""

from __future__ import annotations

from typing import Any

from harness import Summary
from workload import HEAL, Collection

LABELS = {
    "backup/mongosnap": "backup: mongosnap → versitygw (gzip)",
    "backup/legacy": "backup: legacy pipeline (sum of 3 stages)",
    "backup/mongodump-archive": "backup: `mongodump --archive --gzip`",
    "backup/drain-floor": "floor: raw-batch drain, nothing written",
    "backup/upload-floor": "floor: upload of mongosnap's archive bytes",
    "heal/mongosnap": "heal: `mongosnap heal`",
    "heal/legacy": "heal: legacy (sum of 3 stages)",
    "heal/insert-floor": "floor: insert_many of the collection",
    "restore/mongosnap": "restore: `mongosnap restore`",
    "restore/baseline": "restore: `mongosnap restore` of $MONGOSNAP_BASELINE",
    "restore/mongorestore": "restore: `mongorestore --archive --gzip`",
    "restore/insert-floor": "floor: insert_many of every collection",
}

DUMP = "backup/mongodump-archive"
RATIOS = (  # name, contender, reference
    ("mongosnap backup / legacy pipeline", "backup/mongosnap", "backup/legacy"),
    ("mongosnap backup / mongodump --archive --gzip", "backup/mongosnap", DUMP),
    ("mongosnap backup / drain floor", "backup/mongosnap", "backup/drain-floor"),
    ("mongosnap heal / legacy heal", "heal/mongosnap", "heal/legacy"),
    ("mongosnap heal / insert floor", "heal/mongosnap", "heal/insert-floor"),
    ("mongosnap restore / mongorestore", "restore/mongosnap", "restore/mongorestore"),
    ("mongosnap restore / insert floor", "restore/mongosnap", "restore/insert-floor"),
    ("mongosnap restore / baseline", "restore/mongosnap", "restore/baseline"),
    ("baseline restore / mongorestore", "restore/baseline", "restore/mongorestore"),
)


def report_case(
    case: str,
    plan: list[Collection],
    source: dict[str, dict[str, Any]],
    groups: dict[str, dict[str, Summary]],
    share: dict[str, int],
) -> dict[str, Any]:
    """Print the case's tables; return its figures."""
    flat = {f"{g}/{name}": s for g, contenders in groups.items() for name, s in contenders.items()}
    total = sum(fp["bytes"] for fp in source.values())
    documents = sum(fp["documents"] for fp in source.values())
    heal_mb = source[HEAL]["bytes"] / 1e6
    print(
        f"\n## {case}: {len(plan)} collections, {documents:,} documents, "
        f"{total / 1e6:.1f} MB of BSON; `{HEAL}` {heal_mb:.1f} MB\n"
    )
    print(
        "| contender | wall min s | wall median s | CPU min s | CPU median s"
        " | peak RSS MiB | MB/s of BSON |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, summary in flat.items():
        size = source[HEAL]["bytes"] if key.startswith("heal/") else total
        _row(LABELS[key], summary, size)
        for stage in summary.runs[0].stages if len(summary.runs[0].stages) > 1 else ():
            _stage_row(stage, summary, size)
    ratios = {name: _ratio(flat[a], flat[b]) for name, a, b in RATIOS if a in flat and b in flat}
    print("\n| ratio (min / min) | wall | CPU |\n| --- | ---: | ---: |")
    for name, value in ratios.items():
        print(f"| {name} | {value['wall']:.2f} | {value['cpu']:.2f} |")
    if "heal/mongosnap" not in flat:  # bench.py --only without heal
        return {**_figures(plan, source, flat, ratios), "heal_bytes": {}}
    heal = _heal_bytes(flat["heal/mongosnap"], share)
    print(f"| heal: bytes fetched / `{HEAL}`'s compressed share | {heal['ratio']:.2f} | |")
    print(
        f"\nHeal fetched {heal['bytes_fetched'] / 1e6:.2f} MB in all ("
        f"{heal['collection_bytes_fetched'] / 1e6:.2f} MB for the collection's range); its "
        f"compressed share is {heal['compressed_share'] / 1e6:.2f} MB of a "
        f"{heal['archive_bytes'] / 1e6:.2f} MB archive."
    )
    return {**_figures(plan, source, flat, ratios), "heal_bytes": heal}


def _figures(
    plan: list[Collection],
    source: dict[str, dict[str, Any]],
    flat: dict[str, Summary],
    ratios: dict[str, dict[str, float]],
) -> dict[str, Any]:
    return {
        "layout": [vars(c) for c in plan],
        "source": source,
        "contenders": {key: s.to_json() for key, s in flat.items()},
        "ratios": ratios,
    }


def _row(label: str, s: Summary, size: int) -> None:
    print(
        f"| {label} | {s.min('wall'):.2f} | {s.median('wall'):.2f} | {s.min('cpu'):.2f}"
        f" | {s.median('cpu'):.2f} | {max(r.rss_mib for r in s.runs):.0f}"
        f" | {size / 1e6 / s.min('wall'):.1f} |"
    )


def _stage_row(stage: str, s: Summary, size: int) -> None:
    wall, cpu = s.stage(stage, "wall"), s.stage(stage, "cpu")
    rss = max(s.stage(stage, "rss_mib"))
    print(
        f"| &nbsp;&nbsp;stage: `{stage}` | {min(wall):.2f} | {_median(wall):.2f} | {min(cpu):.2f}"
        f" | {_median(cpu):.2f} | {rss:.0f} | {size / 1e6 / min(wall):.1f} |"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _ratio(a: Summary, b: Summary) -> dict[str, float]:
    return {"wall": a.min("wall") / b.min("wall"), "cpu": a.min("cpu") / b.min("cpu")}


def _heal_bytes(heal: Summary, share: dict[str, int]) -> dict[str, float]:
    fetched = max(r.extra["bytes_fetched"] for r in heal.runs)
    ranged = max(r.extra["collection_bytes_fetched"] for r in heal.runs)
    return {
        "bytes_fetched": fetched,
        "collection_bytes_fetched": ranged,
        "compressed_share": share["compressed_share"],
        "archive_bytes": share["archive_bytes"],
        "ratio": fetched / share["compressed_share"],
    }
