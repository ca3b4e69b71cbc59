"""Backup, heal and restore side by side with the real mongo-tools, on FerretDB and versitygw.

    .venv/bin/python benchmarks/bench.py [--case 1k 200b many big] [--gb 1.0] [--big-mb 400]
        [--collections 2000] [--many-mb 100] [--rounds 3] [--json FILE] [--mongo-tools DIR]
        [--mongo-uri URI --s3-endpoint URL [--bucket B] [--database D]]
        [--only backup heal restore]
    .venv/bin/python benchmarks/bench.py --smoke --json FILE      # 1k and many, 1 MiB, 1 round

Without --mongo-uri it builds and starts the test bed (scripts/testbed.py:
FerretDB on SQLite, versitygw); with it, it uses those servers (S3
credentials from the standard AWS variables) and drops DATABASE and
DATABASE_restored. mongodump and mongorestore are the real ones, found as the
tests find them (--mongo-tools DIR, $MONGOSNAP_MONGO_TOOLS, or
../shared/mongo-tools/bin beside the clone); missing tools are an error.

For each case (benchmarks/workload.py) it seeds the data, fingerprints every
collection, then runs three groups of contenders on that data, each contender
its own process (benchmarks/harness.py measures wall and CPU seconds and peak
RSS), alternated over --rounds with the order rotating each round:

- backup: ``mongosnap backup`` to versitygw (gzip); the legacy pipeline as
  backup.bash ran it (``mongodump --out``, ``tar -czf``, upload: three stages
  and their sum); ``mongodump --archive --gzip``; floors: a raw-batch drain of
  every collection and an upload of mongosnap's archive bytes
  (benchmarks/floors.py);
- heal of the ``heal`` collection (about 10 % of the data), dropped before each
  contender: ``mongosnap heal`` (bytes fetched against the collection's
  compressed range in the manifest); the legacy heal as healer.bash (download
  the legacy tarball, ``tar -xzf``, ``mongorestore dump/DB/heal.bson``, which
  reads its metadata.json beside it); floor: insert_many of its raw documents;
- full restore into a fresh DATABASE_restored: ``mongosnap restore`` of its
  archive; ``mongorestore`` (default parallelism) of the ``mongodump --archive
  --gzip`` file; floor: insert_many of every collection. With
  ``MONGOSNAP_BASELINE=DIR`` (a source tree, e.g. ``git archive`` of an older
  commit), ``mongosnap restore`` of that tree runs too, as ``baseline``.

Every heal and restore is verified afterwards: each collection's document
count and digest of its raw documents equal the source's, or the run stops.
Prints one markdown table per case; --json FILE writes every figure.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]
import testbed  # noqa: E402
from harness import BenchError, Run, Summary, launcher_floor_mib, machine, measure, rotated  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from report import report_case  # noqa: E402
from workload import (  # noqa: E402
    CASES,
    HEAL,
    Collection,
    Fingerprint,
    combined,
    fingerprints,
    layout,
    seed,
)

PYTHON = sys.executable
FLOORS = str(HERE / "floors.py")
TARBALL = "legacy-mongodb-dump.tar.gz"
MB = 1024 * 1024
SMOKE = {"gb": 0.001, "big_mb": 0.5, "collections": 20, "many_mb": 1.0, "rounds": 1}
BASELINE = os.environ.get("MONGOSNAP_BASELINE", "")
"""Another mongosnap source tree whose restore runs beside this one's."""
SMOKE_CASES = ("1k", "many")  # 200b and big differ only in their layouts (workload.py)


@dataclass
class Servers:
    mongo_uri: str
    s3_endpoint: str
    env: dict[str, str]  # for the contenders: S3 credentials in the AWS variables


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[Servers]:
    """The servers given on the command line, or a test bed started for this run."""
    if args.mongo_uri:
        yield Servers(args.mongo_uri, args.s3_endpoint, dict(os.environ))
        return
    testbed.build()
    with testbed.Testbed() as bed:
        gw = bed.s3["versitygw"]
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=gw.access_key,
            AWS_SECRET_ACCESS_KEY=gw.secret_key,
            AWS_DEFAULT_REGION=gw.region,
        )
        yield Servers(bed.mongo_uri, gw.endpoint_url, env)


def s3_client(srv: Servers) -> Any:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=srv.s3_endpoint,
        aws_access_key_id=srv.env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=srv.env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=srv.env.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class CaseRun:
    """One case: its data, its contenders (each returns a Run), and the checks after each."""

    def __init__(
        self, args: argparse.Namespace, srv: Servers, tools: Path, case: str, work: Path
    ) -> None:
        self.srv, self.tools, self.case = srv, tools, case
        self.bucket, self.db = args.bucket, args.database
        self.restored = f"{args.database}_restored"
        self.dir = work / case
        self.client: MongoClient[dict[str, Any]] = MongoClient(srv.mongo_uri)
        self.s3 = s3_client(srv)
        self.plan = plan_of(args, case)
        self.source: dict[str, Fingerprint] = {}
        self.backup: dict[str, Any] = {}  # the newest mongosnap backup's --json
        self.share: dict[str, int] = {}  # the heal collection's compressed range, archive size

    # -- set-up and clean-up

    def prepare(self) -> None:
        """Fresh databases and prefix, the seeded data, the source's fingerprints."""
        self.dir.mkdir(parents=True)
        self.finish(remove_dir=False)
        started = time.monotonic()
        seed(self.client, self.db, self.plan)
        self.source = fingerprints(self.client[self.db])
        expected = {c.name: c.documents for c in self.plan}
        if {n: fp.documents for n, fp in self.source.items()} != expected:
            raise BenchError(f"seeding {self.case} did not give the planned documents")
        log(f"{self.case}: seeded {self.total_bytes / MB:.1f} MiB in {elapsed(started)}")

    def finish(self, *, remove_dir: bool = True) -> None:
        self.client.drop_database(self.db)
        self.client.drop_database(self.restored)
        self.empty(f"{self.case}/")
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.client.close()

    def empty(self, prefix: str) -> None:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])

    @property
    def total_bytes(self) -> int:
        return sum(fp.bytes for fp in self.source.values())

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.case}/{name}"

    def s3_flags(self) -> list[str]:
        return ["--endpoint-url", self.srv.s3_endpoint, "--addressing-style", "path"]

    def contenders(self, group: str) -> dict[str, Callable[[], Run]]:
        """The group's contenders in round 1's order (mongosnap's backup first: the
        upload floor sends the bytes of its archive)."""
        return {
            "backup": {
                "mongosnap": self.backup_mongosnap,
                "legacy": self.backup_legacy,
                "mongodump-archive": self.backup_mongodump_archive,
                "drain-floor": self.backup_drain,
                "upload-floor": self.backup_upload,
            },
            "heal": {
                "mongosnap": self.heal_mongosnap,
                "legacy": self.heal_legacy,
                "insert-floor": self.heal_insert,
            },
            "restore": {
                "mongosnap": self.restore_mongosnap,
                **({"baseline": self.restore_baseline} if BASELINE else {}),
                "mongorestore": self.restore_mongorestore,
                "insert-floor": self.restore_insert,
            },
        }[group]

    # -- backup

    def backup_inputs(self) -> None:
        """Once, unmeasured: the archives and dump the heal and restore groups read."""
        for make in (self.backup_mongosnap, self.backup_legacy, self.backup_mongodump_archive):
            make()
        log(f"{self.case}: backups made for the heal and restore groups")

    def backup_mongosnap(self) -> Run:
        self.empty(f"{self.case}/mongosnap/")  # so `latest` and heal find this run's archive
        argv = [PYTHON, "-m", "mongosnap", "backup", self.url("mongosnap")]
        argv += ["--uri", self.srv.mongo_uri, self.db, "-q", "--json", *self.s3_flags()]
        sample = measure(argv, env=self.srv.env)
        result = json.loads(sample.stdout)
        if result["documents"] != sum(fp.documents for fp in self.source.values()):
            raise BenchError(f"mongosnap backed up {result['documents']} documents")
        self.backup = result
        key = f"{self.case}/mongosnap/{result['archive_key']}"
        self.s3.download_file(self.bucket, key, str(self.dir / "mongosnap.tar.gz"))
        return Run({"backup": sample}, {"bytes_out": result["bytes_out"]})

    def backup_legacy(self) -> Run:
        """backup.bash: mongodump to dump/, tar -czf, upload (s3cmd put there)."""
        legacy = self.dir / "legacy"
        shutil.rmtree(legacy, ignore_errors=True)
        legacy.mkdir()
        dump = [str(self.tools / "mongodump"), "--uri", self.srv.mongo_uri, "--db", self.db]
        stages = {"mongodump --out": measure([*dump, "--out", str(legacy / "dump"), "--quiet"])}
        stages["tar -czf"] = measure(["tar", "-czf", TARBALL, "dump"], cwd=legacy)
        size = (legacy / TARBALL).stat().st_size
        upload = [PYTHON, FLOORS, "upload", self.srv.s3_endpoint, self.bucket]
        stages["upload"] = measure(
            [*upload, f"{self.case}/legacy/{TARBALL}", str(legacy / TARBALL)], env=self.srv.env
        )
        # backup.bash deletes dump/ and the tarball; the dump stays as the insert floors' input
        shutil.rmtree(self.dir / "source", ignore_errors=True)
        (legacy / "dump" / self.db).rename(self.dir / "source")
        shutil.rmtree(legacy)
        return Run(stages, {"bytes_out": size})

    def backup_mongodump_archive(self) -> Run:
        path = self.dir / "mongodump.archive.gz"
        path.unlink(missing_ok=True)
        argv = [str(self.tools / "mongodump"), "--uri", self.srv.mongo_uri, "--db", self.db]
        sample = measure([*argv, f"--archive={path}", "--gzip", "--quiet"])
        return Run({"mongodump --archive --gzip": sample}, {"bytes_out": path.stat().st_size})

    def backup_drain(self) -> Run:
        sample = measure([PYTHON, FLOORS, "drain", self.srv.mongo_uri, self.db])
        if int(sample.stdout) != self.total_bytes:
            raise BenchError(f"the drain read {sample.stdout.strip()} bytes")
        return Run({"drain": sample})

    def backup_upload(self) -> Run:
        archive = self.dir / "mongosnap.tar.gz"
        if not archive.exists():
            raise BenchError("the upload floor runs after a mongosnap backup")
        argv = [PYTHON, FLOORS, "upload", self.srv.s3_endpoint, self.bucket]
        sample = measure([*argv, f"{self.case}/upload/archive", str(archive)], env=self.srv.env)
        return Run({"upload": sample}, {"bytes_out": archive.stat().st_size})

    # -- heal of one collection

    def drop_heal(self) -> None:
        self.client[self.db].drop_collection(HEAL)

    def heal_mongosnap(self) -> Run:
        self.drop_heal()
        argv = [PYTHON, "-m", "mongosnap", "heal", self.url("mongosnap"), "--uri"]
        argv += [self.srv.mongo_uri, self.db, HEAL, "-q", "--json", *self.s3_flags()]
        sample = measure(argv, env=self.srv.env)
        result = json.loads(sample.stdout)
        if not result["ok"] or [c["name"] for c in result["restored"]] != [HEAL]:
            raise BenchError(f"mongosnap heal did not restore {HEAL}: {sample.stdout[:2000]}")
        extra = {"bytes_fetched": result["bytes_fetched"], **self.heal_share()}
        extra["collection_bytes_fetched"] = result["restored"][0]["bytes_fetched"]
        return Run({"heal": sample}, extra | self.verify(self.db, [HEAL]))

    def heal_share(self) -> dict[str, int]:
        """The heal collection's compressed range [metadata start, bson end) in the manifest."""
        if not self.share:
            key = f"{self.case}/mongosnap/{self.backup['manifest_key']}"
            manifest = json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            entry = next(
                c for c in manifest["collections"] if (c["database"], c["name"]) == (self.db, HEAL)
            )
            self.share = {
                "compressed_share": entry["bson"]["end"] - entry["metadata"]["offset"],
                "archive_bytes": manifest["totals"]["compressed_bytes"],
            }
        return self.share

    def heal_legacy(self) -> Run:
        """healer.bash: download the whole tarball, extract it, mongorestore one .bson."""
        self.drop_heal()
        work = self.dir / "healer"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        download = [PYTHON, FLOORS, "download", self.srv.s3_endpoint, self.bucket]
        download += [f"{self.case}/legacy/{TARBALL}", str(work / TARBALL)]
        stages = {"download": measure(download, env=self.srv.env)}
        stages["tar -xzf"] = measure(["tar", "-xzf", TARBALL], cwd=work)
        restore = [str(self.tools / "mongorestore"), "--uri", self.srv.mongo_uri, "--quiet"]
        stages["mongorestore"] = measure([*restore, f"dump/{self.db}/{HEAL}.bson"], cwd=work)
        shutil.rmtree(work)
        return Run(stages, self.verify(self.db, [HEAL]))

    def heal_insert(self) -> Run:
        self.drop_heal()
        argv = [PYTHON, FLOORS, "insert", self.srv.mongo_uri, self.db, str(self.dir / "source")]
        sample = measure([*argv, HEAL])
        return Run({"insert": sample}, self.verify(self.db, [HEAL]))

    # -- full restore

    def restore_mongosnap(self, tree: Path = HERE.parent) -> Run:
        """``mongosnap restore`` of the clone's tree (or another one): first on the
        path, run from the case's directory, where no other tree shadows it."""
        self.client.drop_database(self.restored)
        argv = [PYTHON, "-m", "mongosnap", "restore", "latest", self.url("mongosnap"), "--uri"]
        argv += [self.srv.mongo_uri, self.db, "--to-database", self.restored, "--json"]
        env = {**self.srv.env, "PYTHONPATH": str(tree)}
        sample = measure([*argv, *self.s3_flags()], env=env, cwd=self.dir)
        result = json.loads(sample.stdout)
        if any(c["status"] != "restored" for c in result["collections"]):
            raise BenchError(f"mongosnap restore left collections behind: {sample.stdout[:2000]}")
        return Run({"restore": sample}, self.verify(self.restored))

    def restore_baseline(self) -> Run:
        """The same restore by the $MONGOSNAP_BASELINE tree."""
        return self.restore_mongosnap(Path(BASELINE))

    def restore_mongorestore(self) -> Run:
        self.client.drop_database(self.restored)
        archive = self.dir / "mongodump.archive.gz"
        argv = [str(self.tools / "mongorestore"), "--uri", self.srv.mongo_uri, "--quiet"]
        argv += [f"--archive={archive}", "--gzip", f"--nsFrom={self.db}.*"]
        sample = measure([*argv, f"--nsTo={self.restored}.*"])
        return Run({"mongorestore": sample}, self.verify(self.restored))

    def restore_insert(self) -> Run:
        self.client.drop_database(self.restored)
        argv = [PYTHON, FLOORS, "insert", self.srv.mongo_uri, self.restored]
        sample = measure([*argv, str(self.dir / "source")])
        return Run({"insert": sample}, self.verify(self.restored))

    # -- checks

    def verify(self, database: str, names: list[str] | None = None) -> dict[str, Any]:
        """The collections (all, when not named) equal the source's, document for document."""
        db = self.client[database]
        present = set(db.list_collection_names())
        if names is None and present != set(self.source):
            raise BenchError(f"{database} holds {len(present)} collections, not {len(self.source)}")
        found = fingerprints(db, [n for n in names or self.source if n in present])
        expected = {n: self.source[n] for n in names or self.source}
        if found != expected:
            wrong = sorted(n for n in expected if found.get(n) != expected[n])
            raise BenchError(f"{database} differs from the source in: {', '.join(wrong[:10])}")
        return {"verified": combined(found)}


def plan_of(args: argparse.Namespace, case: str) -> list[Collection]:
    many = case == "many"
    total = args.many_mb * MB if many else args.gb * 1024 * MB
    return layout(
        case, total_bytes=int(total), big_bytes=int(args.big_mb * MB), collections=args.collections
    )


GROUPS = ("backup", "heal", "restore")


def run_case(args: argparse.Namespace, srv: Servers, tools: Path, work: Path, case: str) -> Any:
    bench = CaseRun(args, srv, tools, case, work)
    try:
        bench.prepare()
        groups: dict[str, dict[str, Summary]] = {}
        if args.only and "backup" not in args.only:
            bench.backup_inputs()
        for group in GROUPS:
            if args.only and group not in args.only:
                continue
            contenders = bench.contenders(group)
            runs: dict[str, list[Run]] = {name: [] for name in contenders}
            for index in range(args.rounds):
                for name in rotated(list(contenders), index):
                    started = time.monotonic()
                    runs[name].append(contenders[name]())
                    log(
                        f"{case} round {index + 1}: {group}/{name} {runs[name][-1].wall:.2f}s"
                        f" (with checks {elapsed(started)})"
                    )
            groups[group] = {name: Summary(r) for name, r in runs.items()}
        source = {name: fp.to_json() for name, fp in bench.source.items()}
        figures = report_case(case, bench.plan, source, groups, bench.share)
        figures["source_all"] = combined(bench.source)  # what each restore's "verified" equals
        figures["source_heal"] = combined({HEAL: bench.source[HEAL]})  # and each heal's
        return figures
    finally:
        bench.finish()


def byte_compile() -> None:
    """Compile mongosnap's sources, as an installed package is: with
    PYTHONDONTWRITEBYTECODE set, each ``python -m mongosnap`` run would otherwise
    compile them again (0.1-0.15 CPU-second charged to every heal and restore)."""
    compileall.compile_dir(HERE.parent / "mongosnap", quiet=1)
    if BASELINE:
        compileall.compile_dir(Path(BASELINE) / "mongosnap", quiet=1)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.1f}s"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--case", nargs="+", choices=CASES, help="default: all (smoke: 1k many)")
    parser.add_argument("--gb", type=float, default=1.0, help="size of 1k, 200b and big (GiB)")
    parser.add_argument("--big-mb", type=float, default=400, help="big's largest collection")
    parser.add_argument("--collections", type=int, default=2000, help="collections of many")
    parser.add_argument("--many-mb", type=float, default=100, help="size of many (MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round (CI)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--mongo-tools", type=Path, help="directory of mongodump, mongorestore")
    parser.add_argument("--mongo-uri", help="a running MongoDB-compatible server")
    parser.add_argument("--s3-endpoint", help="a running S3 server (with --mongo-uri)")
    parser.add_argument("--bucket", default="bench", help="created when missing")
    parser.add_argument("--database", default="bench", help="dropped and seeded per case")
    parser.add_argument("--work-dir", type=Path, help="where dumps and tarballs go (a temp dir)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="these groups only (the backups heal and restore read are still made, once)",
    )
    args = parser.parse_args(argv)
    if bool(args.mongo_uri) != bool(args.s3_endpoint):
        parser.error("--mongo-uri and --s3-endpoint go together")
    if args.smoke:
        vars(args).update(SMOKE)
    args.case = args.case or list(SMOKE_CASES if args.smoke else CASES)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for case in args.case:
        try:
            plan_of(args, case)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        tools = testbed.mongo_tools_dir(args.mongo_tools)
    except testbed.TestbedError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    byte_compile()
    out: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    work = Path(tempfile.mkdtemp(prefix="mongosnap-bench-", dir=args.work_dir))
    try:
        with servers(args) as srv:
            s3 = s3_client(srv)
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=args.bucket)
            out["launcher_floor_mib"] = launcher_floor_mib()
            out["cases"] = {}
            for case in args.case:
                out["cases"][case] = run_case(args, srv, tools, work, case)
                if args.json:  # after each case, so a failure later keeps these
                    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
