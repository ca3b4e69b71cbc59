"""Verify an archive: stream it once through the safe reader, then fetch each
collection's range alone, as heal and restore will.

A bad archive is not an exception here: every problem goes into the report
with its error class (CorruptArchive, TruncatedArchive, UnsafeArchive), and
the CLI exits with the first one's code. Storage errors (a missing bucket,
refused credentials, an unknown key) do raise.

Checks, in order:

1. the stream: member names safe, headers and compression sound, the
   end-of-archive present (the reader raises otherwise, which ends the stream);
   every ``.bson`` splits into BSON documents within bounds, each valid BSON
   (element types, lengths, terminators, nesting: BsonSplitter's validation,
   the same heal and restore apply before inserting); every
   ``.metadata.json`` parses within the size, depth and value limits;
2. against the manifest (COMPLETE archives; for INCOMPLETE ones, the embedded
   manifest when it parses): the embedded manifest equals the sidecar byte for
   byte, every collection is present with its documents, size and sha256,
   nothing else is under ``dump/``, no member repeats or follows the manifest;
3. ranges (COMPLETE archives): each collection's compressed range
   ``[metadata.offset, bson.end)`` read alone decompresses to exactly its
   members, with the manifest's names, sizes, document count and sha256.

A manifest index (docs/format.md, section 18) that is not the one the
manifest gives is reported with a warning only: readers then fall back to
the whole sidecar, so it costs speed, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .._errors import (
    ArchiveError,
    CorruptArchive,
    DecryptionFailed,
    ObjectNotFound,
    StorageError,
    TruncatedArchive,
    UnsafeArchive,
)
from ..archive import BsonSplitter, parse_metadata, read_archive
from ..archive.index import MAX_INDEX_BYTES, build_index, index_key
from ..archive.manifest import (
    COMPLETE,
    MAX_MANIFEST_BYTES,
    AuthMember,
    CollectionEntry,
    Manifest,
    MemberRange,
)
from ..archive.metadata import MAX_METADATA_BYTES, CollectionMetadata
from ..archive.names import MANIFEST_MEMBER, DumpFile, collection_name, parse_member_name
from ..archive.reader import MAX_TOTAL_SIZE, TarMember
from ..catalog import ArchiveInfo, ArchiveStatus, load_manifest, read_sidecar, resolve
from ..codecs import Codec, Decompressor, GzipCodec, get_codec
from ..encryption import Keys
from ..progress import Progress, ProgressCallback, Stage, ignore
from ..storage import S3Config, Storage, opened
from . import sealed
from .engine import LEGACY_DOCUMENTS_PER_BYTE, LEGACY_FREE_DOCUMENTS, LEGACY_STEP

RANGE_CONCURRENCY = 4

log = logging.getLogger("mongosnap.verify")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an archive, and the error class it amounts to."""

    error: type[ArchiveError] | type[DecryptionFailed]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error.__name__,
            "exit_code": self.error.exit_code,
            "message": self.message,
        }


@dataclass(frozen=True)
class CollectionCheck:
    """One collection as verify found it."""

    database: str
    name: str
    documents: int
    bytes: int
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    destination: str
    archive: str
    status: ArchiveStatus
    collections: list[CollectionCheck]
    problems: list[Problem]
    bytes_read: int
    duration: float

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the first problem's error class."""
        return self.problems[0].error.exit_code if self.problems else 0

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "archive": self.archive,
            "status": self.status.value,
            "ok": self.ok,
            "collections": [vars(c) for c in self.collections],
            "documents": self.documents,
            "problems": [p.to_dict() for p in self.problems],
            "bytes_read": self.bytes_read,
            "duration": round(self.duration, 3),
        }


async def verify(
    destination: str | Storage,
    archive: str = "latest",
    *,
    s3: S3Config | None = None,
    progress: ProgressCallback | None = None,
    keys: Keys | None = None,
    decrypt: bool = True,
) -> VerifyReport:
    """Check one archive (``latest`` or a key) end to end; see the module docstring.

    An encrypted archive is decrypted with ``keys`` (NoIdentity without) and
    checked the same way, against its sealed manifest. With ``decrypt=False``
    only its ciphertext is checked: size and SHA-256 against the clear
    sidecar, no key needed (a plain archive is then verified as usual).
    """
    async with opened(destination, s3) as storage:
        info = await resolve(storage, archive)
        if info.encrypted and (not decrypt or info.status is not ArchiveStatus.COMPLETE):
            return await _check_ciphertext(storage, info)  # incomplete: nothing sealed to trust
        reader, info = await sealed.unseal(storage, info, keys)
        return await _Verifier(reader, info, progress or ignore).run()


async def _check_ciphertext(storage: Storage, info: ArchiveInfo) -> VerifyReport:
    clock = time.monotonic()
    read, errors = await sealed.check_ciphertext(storage, info)
    return VerifyReport(
        destination=storage.url,
        archive=info.key,
        status=info.status,
        collections=[],
        problems=[Problem(type(e), str(e)) for e in errors],
        bytes_read=read,
        duration=time.monotonic() - clock,
    )


# ---------------------------------------------------------------- internals


@dataclass
class _Seen:
    """What the stream showed of one ``dump/`` member."""

    name: str
    size: int
    ok: bool = True
    documents: int = 0
    sha256: str = ""
    metadata: CollectionMetadata | None = None


@dataclass
class _Tally:
    database: str
    name: str
    documents: int = 0
    bytes: int = 0
    ok: bool = True


@dataclass
class _Verifier:
    storage: Storage
    info: ArchiveInfo
    progress: ProgressCallback
    problems: list[Problem] = field(default_factory=list)
    seen: dict[str, _Seen] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    embedded: bytes | None = None
    stream_done: bool = False
    bytes_read: int = 0
    documents: int = 0
    """BSON documents the stream held so far, every member together."""
    long_names: dict[tuple[str, str], str] = field(default_factory=dict)
    """(database, stem) -> collection name, from the metadata files seen so far."""

    async def run(self) -> VerifyReport:
        clock = time.monotonic()
        sidecar, reference = await self._sidecar()
        # The ranged reads of a COMPLETE archive run beside the stream, so their
        # network time overlaps; their findings are merged once the stream is done.
        ranges = None if reference is None else asyncio.ensure_future(self._ranges(reference))
        try:
            await self._stream()
        except BaseException:
            if ranges is not None:
                ranges.cancel()
                with contextlib.suppress(BaseException):
                    await ranges
            raise
        if reference is None and self.info.status is ArchiveStatus.INCOMPLETE:
            reference = self._embedded_manifest()
        if sidecar is not None and self.embedded is not None and self.embedded != sidecar:
            self._problem(CorruptArchive, "the embedded manifest differs from the sidecar")
        if sidecar is not None and reference is not None and not self.info.encrypted:
            await self._check_index(reference, sidecar)
        tallies = self._legacy_tallies() if reference is None else self._compare(reference)
        if ranges is not None:
            self._merge_ranges(await ranges, tallies)
        return VerifyReport(
            destination=self.storage.url,
            archive=self.info.key,
            status=self.info.status,
            collections=[
                CollectionCheck(t.database, t.name, t.documents, t.bytes, t.ok)
                for t in tallies.values()
            ],
            problems=self.problems,
            bytes_read=self.bytes_read,
            duration=time.monotonic() - clock,
        )

    async def _check_index(self, manifest: Manifest, sidecar: bytes) -> None:
        """Warn when the archive's manifest index is not the one its manifest gives."""
        key = index_key(self.info.key)
        try:
            found = await self.storage.read_bytes(key, limit=MAX_INDEX_BYTES)
        except ObjectNotFound:
            return
        except StorageError as exc:
            found = f"unreadable: {exc}".encode()
        if found != build_index(manifest, sidecar):
            log.warning(
                "%s: the manifest index does not match the manifest; heal reads the whole"
                " sidecar instead (delete the index, %s, to silence this)",
                *(self.info.key, key),
            )

    def _problem(self, error: type[ArchiveError] | type[DecryptionFailed], message: str) -> None:
        self.problems.append(Problem(error, message))

    async def _sidecar(self) -> tuple[bytes | None, Manifest | None]:
        """The sidecar's bytes and manifest for a COMPLETE archive; for an
        INCOMPLETE one, the first problem says why it is not trusted."""
        if self.info.encrypted and self.info.manifest is not None:  # unsealed
            return self.info.manifest.to_json(), self.info.manifest
        if self.info.status is ArchiveStatus.COMPLETE:
            sidecar = await read_sidecar(self.storage, self.info.key)
            try:
                return sidecar, Manifest.from_json(sidecar)
            except CorruptArchive as exc:  # replaced since it was listed
                self._problem(CorruptArchive, f"the sidecar manifest is unusable: {exc}")
                return None, None
        if self.info.status is ArchiveStatus.INCOMPLETE:
            error: type[ArchiveError] = CorruptArchive
            with contextlib.suppress(ArchiveError, ObjectNotFound):
                claimed = await load_manifest(self.storage, self.info.key)
                if claimed.totals.compressed_bytes > self.info.size:
                    error = TruncatedArchive
            self._problem(error, f"archive is incomplete: {self.info.problem}")
        return None, None

    # ------------------------------------------------------------ stream

    async def _stream(self) -> None:
        source = self._counted(self.storage.read(self.info.key))
        try:
            async with contextlib.aclosing(read_archive(source)) as members:
                async for member in members:
                    await self._member(member)
            self.stream_done = True
        except (ArchiveError, DecryptionFailed) as exc:  # a chunk failed authentication
            self._problem(type(exc), str(exc))

    async def _member(self, member: TarMember) -> None:
        name = member.name
        if name in self.names:
            self._problem(CorruptArchive, f"{name} appears twice")
            return
        self.names.add(name)
        self.order.append(name)
        if name == MANIFEST_MEMBER:
            if member.size > MAX_MANIFEST_BYTES:
                self._problem(UnsafeArchive, f"{name} declares {member.size} bytes")
                return
            self.embedded = await _body(member)
            return
        parsed = parse_member_name(name)
        if parsed is None:
            return
        seen = self.seen[name] = _Seen(name, member.size)
        if parsed.kind == "metadata":
            await self._metadata(member, seen, parsed)
        else:
            await self._bson(member, seen, parsed)

    async def _metadata(self, member: TarMember, seen: _Seen, parsed: DumpFile) -> None:
        if member.size > MAX_METADATA_BYTES:
            self._fail(seen, UnsafeArchive(f"declares {member.size} bytes"))
            return
        data = await _body(member)
        seen.sha256 = hashlib.sha256(data).hexdigest()
        try:
            if parsed.compressed:  # mongodump --gzip
                data = _gunzip(data, MAX_METADATA_BYTES)
            seen.metadata = parse_metadata(data)  # the report names the member
        except ArchiveError as exc:
            self._fail(seen, exc)
            return
        real = collection_name(parsed.stem, seen.metadata.name)
        self.long_names[(parsed.database, parsed.stem)] = real

    async def _bson(self, member: TarMember, seen: _Seen, parsed: DumpFile) -> None:
        """Split and validate a data file; a gzipped one (``mongodump --gzip``) is
        gunzipped piece by piece, each piece counted against ``_bound``."""
        splitter = BsonSplitter()
        digest = hashlib.sha256()
        failed: ArchiveError | None = None
        database = parsed.database
        collection = self.long_names.get((database, parsed.stem)) or collection_name(parsed.stem)
        decoder = GzipCodec().decompressor(MAX_TOTAL_SIZE) if parsed.compressed else None
        self.progress(Progress(Stage.STARTED, database, collection))
        async for chunk in member.chunks():
            digest.update(chunk)
            pieces = iter((chunk,) if decoder is None else decoder.feed(chunk))
            while failed is None:
                try:
                    piece = next(pieces, None)
                    if piece is None:
                        break
                    splitter.feed(piece)
                except ArchiveError as exc:
                    failed = exc
                self.documents += splitter.documents - seen.documents
                seen.documents = splitter.documents
                self._bound(seen.name)
            self.progress(
                Progress(Stage.BATCH, database, collection, splitter.documents, splitter.bytes)
            )
            # Splitting and validating is CPU work: let the loop run (a signal's
            # handler, the ranged reads) between chunks.
            await asyncio.sleep(0)
        if failed is None:
            try:
                if decoder is not None:
                    decoder.close()
                splitter.close()
            except ArchiveError as exc:
                failed = exc
        seen.documents, seen.sha256 = splitter.documents, digest.hexdigest()
        if decoder is not None:
            seen.size = splitter.bytes  # the data's size, as for a plain file
        if failed is not None:
            self._fail(seen, failed)
        self.progress(Progress(Stage.DONE, database, collection, splitter.documents, seen.size))

    def _bound(self, name: str) -> None:
        """Heal's expansion bound (docs/heal.md, bounds): at most
        LEGACY_FREE_DOCUMENTS plus LEGACY_DOCUMENTS_PER_BYTE documents per
        compressed byte read so far. Beyond it the archive is a bomb of tiny
        documents: refused, and the stream (still being decompressed) ends."""
        limit = LEGACY_FREE_DOCUMENTS + LEGACY_DOCUMENTS_PER_BYTE * self.bytes_read
        if self.documents > limit:
            raise UnsafeArchive(
                f"{name}: over {self.documents} documents from {self.bytes_read} compressed"
                f" bytes (at most {LEGACY_FREE_DOCUMENTS} + {LEGACY_DOCUMENTS_PER_BYTE} per"
                " compressed byte): a decompression bomb"
            )

    def _fail(self, seen: _Seen, exc: ArchiveError) -> None:
        seen.ok = False
        self._problem(type(exc), f"{seen.name}: {exc}")

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The archive in slices of LEGACY_STEP, counted: the count of compressed
        bytes read stays close to what was decompressed, for ``_bound``."""
        try:
            async for chunk in chunks:
                for start in range(0, len(chunk), LEGACY_STEP):
                    piece = chunk[start : start + LEGACY_STEP]
                    self.bytes_read += len(piece)
                    yield piece
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    # --------------------------------------------------------- manifest

    def _embedded_manifest(self) -> Manifest | None:
        if self.embedded is None:
            return None
        try:
            return Manifest.from_json(self.embedded)
        except CorruptArchive as exc:
            self._problem(CorruptArchive, f"the embedded manifest is unusable: {exc}")
            return None

    def _compare(self, manifest: Manifest) -> dict[str, _Tally]:
        """Check every stream finding against the manifest; one tally per collection."""
        tallies: dict[str, _Tally] = {}
        expected: set[str] = set()
        for entry in manifest.collections:
            if entry.status != COMPLETE:  # members under gone/, never restored
                expected.update(r.name for r in (entry.metadata, entry.bson) if r is not None)
                continue
            tally = tallies[entry.metadata.name] = _Tally(entry.database, entry.name)
            expected.add(entry.metadata.name)
            self._check_metadata(entry, tally)
            if entry.bson is not None:
                expected.add(entry.bson.name)
                self._check_bson(entry, entry.bson, tally)
        if manifest.oplog is not None:  # backup --oplog
            expected.add(manifest.oplog.member.name)
        for auth in manifest.users:  # backup --users-and-roles
            expected.add(auth.member.name)
            self._check_auth(auth)
        if not self.stream_done:
            return tallies
        for name in self.order:
            if name not in expected and name != MANIFEST_MEMBER:
                self._problem(CorruptArchive, f"{name} is not in the manifest")
        if self.embedded is None:
            self._problem(CorruptArchive, f"the archive has no {MANIFEST_MEMBER} member")
        elif self.order[-1] != MANIFEST_MEMBER:
            self._problem(CorruptArchive, f"{self.order[-1]} follows the manifest member")
        return tallies

    def _check_metadata(self, entry: CollectionEntry, tally: _Tally) -> None:
        seen = self._expect(entry.metadata, tally)
        if seen is None or seen.metadata is None:
            return
        meta = seen.metadata
        if (meta.name and meta.name != entry.name) or meta.type != entry.type:
            tally.ok = False
            self._problem(
                CorruptArchive,
                f"{seen.name} describes {meta.type} {meta.name!r},"
                f" the manifest {entry.type} {entry.name!r}",
            )

    def _check_bson(self, entry: CollectionEntry, rng: MemberRange, tally: _Tally) -> None:
        seen = self._expect(rng, tally)
        if seen is None:
            return
        tally.documents, tally.bytes = seen.documents, seen.size
        if not seen.ok:
            return
        if seen.documents != entry.documents:
            tally.ok = False
            self._problem(
                CorruptArchive,
                f"{seen.name} holds {seen.documents} documents,"
                f" the manifest says {entry.documents}",
            )
        if seen.sha256 != entry.sha256:
            tally.ok = False
            self._problem(CorruptArchive, f"{seen.name}: sha256 differs from the manifest")

    def _check_auth(self, auth: AuthMember) -> None:
        """A users, roles or version member against its manifest entry; its
        problems are the archive's (it is no collection of the report)."""
        unreported = _Tally(auth.database, auth.member.name)
        seen = self._expect(auth.member, unreported)
        if seen is None or not seen.ok:
            return
        if seen.documents != auth.documents or seen.sha256 != auth.sha256:
            self._problem(
                CorruptArchive,
                f"{seen.name} holds {seen.documents} documents or a sha256 other than"
                f" the manifest's ({auth.documents})",
            )

    def _expect(self, rng: MemberRange, tally: _Tally) -> _Seen | None:
        """The stream's finding for a member the manifest lists, or None (a problem)."""
        seen = self.seen.get(rng.name)
        if seen is None:
            tally.ok = False
            if self.stream_done:
                self._problem(CorruptArchive, f"{rng.name} is missing")
            return None
        if not seen.ok:
            tally.ok = False
        elif seen.size != rng.size:
            tally.ok = seen.ok = False
            self._problem(
                CorruptArchive, f"{rng.name} is {seen.size} bytes, the manifest says {rng.size}"
            )
        return seen

    def _legacy_tallies(self) -> dict[str, _Tally]:
        """Collections as the member names and metadata files show them."""
        tallies: dict[str, _Tally] = {}
        for seen in self.seen.values():
            parsed = parse_member_name(seen.name)
            assert parsed is not None
            key = f"{parsed.database}/{parsed.stem}"
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = _Tally(parsed.database, collection_name(parsed.stem))
            tally.ok = tally.ok and seen.ok
            if parsed.kind == "bson":
                tally.documents, tally.bytes = seen.documents, seen.size
            elif seen.metadata is not None and seen.metadata.name:
                tally.name = seen.metadata.name
        return tallies

    # ----------------------------------------------------------- ranges

    async def _ranges(self, manifest: Manifest) -> list[_Ranged]:
        """Fetch each collection's range alone, at most RANGE_CONCURRENCY at once."""
        codec = get_codec(manifest.codec)
        limit = asyncio.Semaphore(RANGE_CONCURRENCY)

        async def one(entry: CollectionEntry) -> _Ranged:
            async with limit:
                return await self._range(entry, codec)

        # Errors come back as values, so a storage error is raised as itself.
        results = await asyncio.gather(
            *(one(entry) for entry in manifest.collections if entry.status == COMPLETE),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, _Ranged)]

    def _merge_ranges(self, checked: list[_Ranged], tallies: dict[str, _Tally]) -> None:
        """Range problems of collections the stream found sound, in manifest order
        (a collection already at fault would only repeat its problem)."""
        for ranged in checked:
            entry, problem = ranged.entry, ranged.problem
            tally = tallies[entry.metadata.name]
            if not tally.ok:
                continue
            if problem is None and ranged.metadata_sha256 != self.seen[entry.metadata.name].sha256:
                problem = Problem(CorruptArchive, f"{ranged.where}: {entry.metadata.name} differs")
            if problem is not None:
                tally.ok = False
                self.problems.append(problem)

    async def _range(self, entry: CollectionEntry, codec: Codec) -> _Ranged:
        members = [entry.metadata] if entry.bson is None else [entry.metadata, entry.bson]
        start, end = entry.metadata.offset, members[-1].end
        ranged = _Ranged(entry, f"{entry.database}.{entry.name}: range [{start}, {end})")
        source = self._counted(self.storage.read(self.info.key, start, end))
        found = 0
        try:
            async with contextlib.aclosing(
                read_archive(source, codec=codec, require_end=False)
            ) as stream:
                async for member in stream:
                    if found == len(members):
                        return ranged.fail(CorruptArchive, "holds more than its members")
                    if not await ranged.check(member, members[found]):
                        return ranged
                    found += 1
        except (ArchiveError, DecryptionFailed) as exc:
            return ranged.fail(type(exc), str(exc))
        if found != len(members):
            return ranged.fail(TruncatedArchive, f"ends after {found} of {len(members)} members")
        return ranged


@dataclass
class _Ranged:
    """What the ranged read of one collection found."""

    entry: CollectionEntry
    where: str
    problem: Problem | None = None
    metadata_sha256: str = ""

    def fail(self, error: type[ArchiveError] | type[DecryptionFailed], message: str) -> _Ranged:
        self.problem = Problem(error, f"{self.where}: {message}")
        return self

    async def check(self, member: TarMember, rng: MemberRange) -> bool:
        """Check one member of the range against the manifest; False on a problem."""
        if member.name != rng.name or member.size != rng.size:
            self.fail(
                CorruptArchive,
                f"holds {member.name} ({member.size} bytes), not {rng.name} ({rng.size})",
            )
            return False
        if rng is self.entry.metadata:
            self.metadata_sha256 = hashlib.sha256(await _body(member)).hexdigest()
            return True
        entry = self.entry  # stop at the first document or byte beyond the manifest
        splitter = BsonSplitter(max_documents=entry.documents, max_bytes=entry.bson_bytes)
        digest = hashlib.sha256()
        async for chunk in member.chunks():
            digest.update(chunk)
            splitter.feed(chunk)
        splitter.close()
        if splitter.documents != self.entry.documents or digest.hexdigest() != self.entry.sha256:
            self.fail(CorruptArchive, "documents or sha256 differ from the manifest")
            return False
        return True


async def _body(member: TarMember) -> bytes:
    return b"".join([chunk async for chunk in member.chunks()])


def _gunzip(data: bytes, limit: int) -> bytes:
    """A whole gzipped file, at most ``limit`` bytes of it."""
    decoder: Decompressor = GzipCodec().decompressor(limit)
    out = b"".join(decoder.feed(data))
    decoder.close()
    return out


__all__ = ["CollectionCheck", "Problem", "VerifyReport", "verify"]
