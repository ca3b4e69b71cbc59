"""The MongoDB side: connect, list namespaces, stream raw batches out, insert raw in.

Works with a URI, a ``host[:port]`` string, a PyMongo ``AsyncMongoClient`` or a
Motor client: both expose the same coroutine/cursor shapes for what is used here,
except that some calls return a cursor directly in Motor and a coroutine in
PyMongo, which ``_cursor`` smooths over. Documents are never decoded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import logging
import math
import re
import struct
import uuid as uuidlib
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo import AsyncMongoClient, InsertOne, MongoClient, uri_parser
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    InvalidURI,
    OperationFailure,
    ProtocolError,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.read_preferences import (
    Nearest,
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
    _ServerMode,
)

from . import _rawinsert
from ._errors import (
    AuthenticationFailed,
    ServerUnreachable,
    SourceError,
    UsageError,
)
from ._rawcursor import raw_batch_cursor
from ._redact import redact
from .clients import MongoSource

SYSTEM_DATABASES = frozenset({"admin", "config", "local"})
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 86400.0
_AUTH_FAILED_CODES = frozenset({18, 13})
NAMESPACE_NOT_FOUND = 26
NAMESPACE_EXISTS = 48
DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238
DUPLICATE_KEY = 11000
INVALID_NAMESPACE = 73
"""FerretDB 1.x answers renameCollection to or from a dotted name with it."""

READ_PREFERENCES: dict[str, _ServerMode] = {
    "primary": Primary(),
    "primaryPreferred": PrimaryPreferred(),
    "secondary": Secondary(),
    "secondaryPreferred": SecondaryPreferred(),
    "nearest": Nearest(),
}
"""The modes ``--read-preference`` takes; against a standalone server every
mode reads from it (server selection spec: a single server is always chosen)."""

log = logging.getLogger("mongosnap.source")
_INT32 = struct.Struct("<i")
_RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
_INDEXES: CodecOptions[SON[str, Any]] = CodecOptions(document_class=SON)  # as list_indexes


@dataclass(frozen=True)
class CollectionSpec:
    """One namespace as listCollections described it."""

    database: str
    name: str
    type: str = "collection"
    options: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.name}"

    @property
    def has_documents(self) -> bool:
        return self.type != "view"


def select(names: Iterable[str], include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Names matching any include pattern (all when none) and no exclude pattern."""
    chosen = []
    for name in names:
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        chosen.append(name)
    return chosen


def to_uri(source: str) -> str:
    """Accept a MongoDB URI or the legacy scripts' ``host[:port]``."""
    if "://" in source:
        return source
    if "@" in source:  # user:password@host: never echoed, it holds a credential
        raise UsageError(
            "HOST takes no credentials (user:password@host): give them in --uri "
            "mongodb://USER:PASSWORD@HOST/ (the source argument of the API)"
        )
    if not source or any(c in source for c in "/ "):
        raise UsageError(f"not a host[:port] or MongoDB URI: {source!r}")
    return f"mongodb://{source}/"


def describe_uri(uri: str) -> str:
    """The hosts of a URI, never its credentials."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the client warns when it is built, if at all
            nodes = uri_parser.parse_uri(uri, validate=False, warn=True)["nodelist"]
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise UsageError(f"malformed MongoDB URI: {redact(str(exc), uri)}") from None
    return ",".join(f"{h}:{p}" for h, p in nodes) or "mongodb"


_scrub = redact  # the older name


async def _cursor(call: Any) -> AsyncIterator[Any]:
    """Iterate a Motor or PyMongo cursor, whether returned or awaited."""
    cursor = await call if inspect.isawaitable(call) else call
    async for item in cursor:
        yield item


class Source:
    """A MongoDB deployment to read from or restore into."""

    def __init__(
        self, client: Any, hosts: str, *, owned: bool, read_preference: str | None = None
    ) -> None:
        self._client = client
        self.hosts = hosts
        self._owned = owned
        self._databases: dict[str, Any] = {}
        self.read_preference = read_preference
        """The mode documents are read with (None: the client's own, primary by default)."""

    @classmethod
    async def connect(
        cls,
        source: MongoSource,
        *,
        connect_timeout: float = DEFAULT_TIMEOUT,
        read_preference: str | None = None,
    ) -> Source:
        """Connect and ping; ServerUnreachable within ``connect_timeout`` seconds.

        ``source``: a URI, ``host[:port]``, an AsyncMongoClient or a Motor
        client; anything else, or a timeout that is not a positive number of
        seconds, is a UsageError. ``read_preference`` (a READ_PREFERENCES
        name) applies to the document reads (finds), not to commands.
        """
        _check_timeout(connect_timeout)
        check_read_preference(read_preference)
        if isinstance(source, str):
            client = _open_client(source, connect_timeout)
            found = cls(client, describe_uri(to_uri(source)), owned=True)
        else:
            found = cls(_check_client(source), _client_hosts(source), owned=False)
        found.read_preference = read_preference
        try:
            await found.ping()
        except BaseException:
            await found.aclose()
            raise
        return found

    @classmethod
    async def connect_pinned(
        cls, source: MongoSource, read_preference: str, *, connect_timeout: float = DEFAULT_TIMEOUT
    ) -> Source:
        """A Source connected directly to one member that ``read_preference``
        chooses, so that every command reaches it: a cursor driven by raw
        find/getMore commands (the oplog reader) must stay on the member that
        opened it, which a per-command read preference does not promise.

        The member is chosen once, by a ping under that read preference (which
        waits up to ``connect_timeout`` for one: ServerUnreachable if none
        matches). Needs a ``mongodb://`` URI or host (the direct connection is
        built from it); a client object or a ``mongodb+srv://`` URI is a UsageError.
        """
        check_read_preference(read_preference)
        if not isinstance(source, str):
            raise UsageError("a read preference for the oplog needs a URI or host, not a client")
        uri = to_uri(source)
        if not uri.startswith("mongodb://"):
            raise UsageError(
                "a read preference for the oplog needs a mongodb:// URI naming the hosts"
            )
        async with await cls.connect(source, connect_timeout=connect_timeout) as seed:
            host, port = await seed._member(read_preference)
        log.info("reading from %s:%d, chosen by read preference %s", host, port, read_preference)
        return await cls.connect(_direct_uri(uri, host, port), connect_timeout=connect_timeout)

    async def _member(self, read_preference: str) -> tuple[str, int]:
        mode = READ_PREFERENCES[read_preference]
        with self._translate("admin"):  # waits until a member matches, or times out
            await self._client.admin.command("ping", read_preference=mode)
        members = self._client.topology_description.apply_selector(mode)
        if not members:
            raise ServerUnreachable(f"no member of {self.hosts} matches {read_preference}")
        return members[0].address  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._owned:
            await self._client.close()

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        await self._command("admin", {"ping": 1})

    async def server_version(self) -> str:
        info = await self._command("admin", {"buildInfo": 1})
        return str(info.get("version", ""))

    async def server_time(self) -> datetime | None:
        """The server's clock (``hello``'s ``localTime``), or None if it does not say."""
        reply = await self._command("admin", {"hello": 1})
        when = reply.get("localTime")
        if not isinstance(when, datetime):
            return None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    async def _command(self, database: str, command: dict[str, Any]) -> Any:
        with self._translate(database):
            return await self._client[database].command(command)

    def _database(self, name: str) -> Any:
        """The client's database object, made once: a backup asks for it several
        times per collection, and each one costs more than a small collection's read."""
        found = self._databases.get(name)
        if found is None:
            mode = READ_PREFERENCES.get(self.read_preference or "")
            chosen = (
                self._client[name]
                if mode is None
                else self._client.get_database(name, read_preference=mode)
            )
            found = self._databases[name] = chosen
        return found

    def _translate(self, database: str) -> _Translate:
        return _Translate(self.hosts, database)

    async def database_names(self) -> list[str]:
        with self._translate("admin"):
            names = await self._client.list_database_names()
        return sorted(n for n in names if n not in SYSTEM_DATABASES)

    async def collections(
        self,
        database: str,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> list[CollectionSpec]:
        """Collections and views of a database, sorted by name, system ones left out."""
        found: dict[str, CollectionSpec] = {}
        with self._translate(database):
            async for entry in _cursor(self._client[database].list_collections()):
                spec = _spec(database, _plain(entry))
                if not spec.name.startswith("system."):
                    found[spec.name] = spec
        return [found[n] for n in select(sorted(found), include, exclude)]

    async def collection(self, database: str, name: str) -> CollectionSpec | None:
        """One namespace as listCollections describes it now, or None if it is gone."""
        return (await self.collections_named(database, [name])).get(name)

    async def collections_named(
        self, database: str, names: Sequence[str]
    ) -> dict[str, CollectionSpec]:
        """Those of ``names`` that exist now, as one listCollections describes them.

        One command for all of them: the backup's existence checks share it.
        """
        wanted = list(dict.fromkeys(names))
        chosen = {"name": wanted[0]} if len(wanted) == 1 else {"name": {"$in": wanted}}
        with self._translate(database):
            call = self._database(database).list_collections(filter=chosen)
            found = [_spec(database, _plain(entry)) async for entry in _cursor(call)]
        return {spec.name: spec for spec in found if spec.name in wanted}

    async def estimated_count(self, database: str, name: str) -> int | None:
        """The server's estimate of a collection's documents (collStats ``count``,
        from metadata, as estimatedDocumentCount), or None when it will not say."""
        try:
            stats = await self._command(database, {"collStats": name})
        except (ServerUnreachable, AuthenticationFailed):
            raise
        except SourceError:  # not allowed, not supported, gone: no estimate
            return None
        count = stats.get("count")
        return int(count) if isinstance(count, int | float) and count >= 0 else None

    async def collection_names(self, database: str) -> set[str]:
        with self._translate(database):
            return set(await self._client[database].list_collection_names())

    async def indexes(self, database: str, collection: str) -> list[dict[str, Any]]:
        """The collection's index specs, decoded as PyMongo's list_indexes does.

        One listIndexes command, without PyMongo's cursor machinery, which
        costs about as much as a small collection's whole read (the backup
        asks once per collection; docs/benchmarks.md). A collection that does
        not exist has none, as with list_indexes. A server that leaves indexes
        for a getMore (not MongoDB: a first batch holds 101, a collection at
        most 64; not FerretDB: it sends all) is read through the cursor.
        """
        command = {"listIndexes": collection, "cursor": {}}
        db = self._database(database)
        with self._translate(database):
            try:
                reply = await db.command(command, codec_options=_INDEXES)
            except OperationFailure as exc:
                if exc.code != NAMESPACE_NOT_FOUND:
                    raise
                return []
            cursor = reply["cursor"]
            if not cursor.get("id"):
                return [_plain(ix) for ix in cursor["firstBatch"]]
            await db.command({"killCursors": collection, "cursors": [cursor["id"]]})
            return [_plain(ix) async for ix in _cursor(db[collection].list_indexes())]

    async def raw_batches(
        self, database: str, collection: str, *, batch_size: int = 1000
    ) -> AsyncGenerator[bytes, None]:
        """Concatenated BSON documents in natural order: counted_batches without counts."""
        async with contextlib.aclosing(
            self.counted_batches(database, collection, batch_size=batch_size)
        ) as batches:
            async for batch, _ in batches:
                yield batch

    async def counted_batches(
        self,
        database: str,
        collection: str,
        *,
        batch_size: int = 1000,
        filter: dict[str, Any] | None = None,
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """(concatenated BSON documents, how many) in natural order, batches as the
        server sent them; each batch's length prefixes are walked once, here.

        MongoDB caps a reply at 16 MiB; FerretDB does not, and answers a batch
        of three ~16 MB documents with a ~48 MB reply the driver refuses
        (ProtocolError). Then the batch size is halved for the rest of this
        collection, down to one document, and the find is re-issued: in
        natural order (the order stays the server's), skipping all documents
        already yielded but the last one, which must come back first with the
        same _id and is dropped. A shifted order (a concurrent delete before
        that point) is thus detected rather than turned into a gap or a
        duplicate. Sorting by _id would resume without that check, but it
        would change the order of every dump and of capped collections.

        ``filter``: only the documents it matches (the backup's ``_id``
        ranges, pipelines/ranges.py); the resume above works the same.
        """
        coll = self._database(database)[collection]
        size = max(1, batch_size)
        done = 0  # documents yielded so far
        last = b""  # the batch holding the last of them
        last_at = 0  # and where that document starts in it
        while True:
            resuming = done > 0
            cursor = raw_batch_cursor(
                coll, filter=filter, batch_size=size, skip=done - 1 if resuming else 0
            )
            with self._translate(database):
                try:
                    async for raw in cursor:
                        batch = bytes(raw)
                        if resuming:
                            batch = _resumed(batch, last[last_at:], f"{database}.{collection}")
                            resuming = False
                        if batch:
                            count, last_at = scan_batch(batch)
                            done += count
                            last = batch
                            yield batch, count
                    if resuming:
                        raise SourceError(_shifted(f"{database}.{collection}"))
                    return
                except ProtocolError as exc:
                    if not _reply_too_large(exc) or size == 1:
                        raise
                finally:
                    await cursor.close()
            _log_shrink(f"{database}.{collection}", size, done, first=size == max(1, batch_size))
            size //= 2

    async def create_collection(self, database: str, name: str, options: dict[str, Any]) -> None:
        with self._translate(database):
            await self._client[database].command({"create": name, **options})

    async def create_new(self, database: str, name: str, options: dict[str, Any]) -> bool:
        """Create ``name``; False (and nothing changed) if it exists already."""
        try:
            await self.create_collection(database, name, options)
        except SourceError as exc:
            if error_code(exc) == NAMESPACE_EXISTS:
                return False
            raise
        return True

    async def insert_raw(self, database: str, name: str, documents: list[bytes]) -> int:
        """Insert documents as the bytes they are (no decode, no re-encode).

        Returns how many the server acknowledged. A PyMongo client sends the
        bytes as one insert's document sequence (_rawinsert.py); others go
        through ``bulk_write``. Both raise the same BulkWriteError.
        """
        coll = self._client[database][name]
        with self._translate(database):
            if _rawinsert.supports(coll):
                return await _rawinsert.insert(coll, documents)
            # bulk_write, not insert_many: its result carries the server's count,
            # while insert_many only lists the _ids it generated (none for raw documents).
            requests = [InsertOne(RawBSONDocument(d)) for d in documents]
            result = await coll.bulk_write(requests, ordered=True)
        return int(result.inserted_count)

    async def count(self, database: str, name: str) -> int:
        """The exact number of documents (countDocuments, not the metadata estimate)."""
        with self._translate(database):
            return int(await self._client[database][name].count_documents({}))

    async def insert_absent(self, database: str, name: str, documents: list[bytes]) -> int:
        """Insert the documents whose ``_id`` the collection lacks, as their bytes.

        Never overwrites: the ones present are left out, and one inserted by
        someone else meanwhile is a duplicate key the unordered insert skips.
        Returns how many were inserted.
        """
        coll = self._client[database][name]
        ids = [_document_id(d) for d in documents]
        with self._translate(database):
            found = coll.find({"_id": {"$in": ids}}, {"_id": 1})
            present = {_id_key(d["_id"]) async for d in found}
            absent = [
                RawBSONDocument(d)
                for d, i in zip(documents, ids, strict=True)
                if _id_key(i) not in present
            ]
            if not absent:
                return 0
            try:
                result = await coll.bulk_write([InsertOne(d) for d in absent], ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                return int(exc.details.get("nInserted", 0))
        return int(result.inserted_count)

    async def create_indexes(self, database: str, name: str, specs: list[dict[str, Any]]) -> None:
        if specs:
            with self._translate(database):
                await self._client[database].command({"createIndexes": name, "indexes": specs})

    async def rename(self, database: str, source: str, target: str, *, replace: bool) -> bool:
        """Rename within a database; False if the target exists and replace is off."""
        try:
            await self._rename(database, source, target, replace)
        except SourceError as exc:
            code = getattr(exc.__cause__, "code", None)
            if code == NAMESPACE_EXISTS:
                return False
            if code != NOT_IMPLEMENTED or not replace:
                raise
            # Servers without dropTarget (FerretDB 1.x): drop, then rename. The
            # target is absent for that moment; docs/cli.md says so for --drop.
            log.warning("%s lacks renameCollection dropTarget; dropping first", self.hosts)
            await self.drop(database, target)
            await self._rename(database, source, target, False)
        return True

    async def _rename(self, database: str, source: str, target: str, replace: bool) -> None:
        command = {
            "renameCollection": f"{database}.{source}",
            "to": f"{database}.{target}",
            "dropTarget": replace,
        }
        with self._translate(database):
            await self._client.admin.command(command)

    async def drop(self, database: str, name: str) -> None:
        with self._translate(database):
            await self._client[database].drop_collection(name)

    async def admin_documents(self, collection: str, filter: dict[str, Any]) -> list[bytes]:
        """The raw documents of ``admin.<collection>`` that ``filter`` matches, in _id order.

        For users and roles (few, small): read whole, never decoded.
        """
        coll = self._client.get_database("admin", codec_options=_RAW)[collection]
        with self._translate("admin"):
            cursor = coll.find(filter, sort=[("_id", 1)])
            return [bytes(doc.raw) async for doc in _cursor(cursor)]

    async def admin_has(self, collection: str, document_id: Any) -> bool:
        """Whether ``admin.<collection>`` holds a document with this ``_id``."""
        coll = self._client.admin[collection]
        with self._translate("admin"):
            return await coll.find_one({"_id": document_id}, projection={"_id": 1}) is not None

    async def admin_insert(self, collection: str, document: bytes) -> bool:
        """Insert one raw document into ``admin.<collection>``; False if its _id exists."""
        coll = self._client.admin[collection]
        try:
            with self._translate("admin"):
                await coll.insert_one(RawBSONDocument(document))
        except SourceError as exc:
            if error_code(exc) == DUPLICATE_KEY:
                return False
            raise
        return True

    async def drop_database(self, name: str) -> None:
        with self._translate(name):
            await self._client.drop_database(name)

    async def raw_command(self, database: str, command: dict[str, Any]) -> RawBSONDocument:
        """Run a command; the reply's documents stay raw BSON (the oplog reader's need)."""
        with self._translate(database):
            reply = await self._client[database].command(command, codec_options=_RAW)
        return reply  # type: ignore[no-any-return]


class _Translate:
    """Map PyMongo errors to mongosnap's tree, naming the host, never the URI."""

    def __init__(self, hosts: str, database: str) -> None:
        self.hosts = hosts
        self.database = database

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or not isinstance(exc, PyMongoError):
            return
        if isinstance(exc, OperationFailure) and exc.code in _AUTH_FAILED_CODES:
            raise AuthenticationFailed(
                f"authentication failed or not authorized on {self.hosts} "
                f"(database {self.database!r})"
            ) from None
        if isinstance(exc, ServerSelectionTimeoutError) and "match selector" in str(exc):
            raise ServerUnreachable(
                f"no member of {self.hosts} matches the read preference (a secondary"
                " was asked for and none is up)"
            ) from None
        if isinstance(exc, ConnectionFailure):
            message = f"cannot reach MongoDB at {self.hosts}: {unreachable_reason(exc)}"
            raise ServerUnreachable(message) from None
        raise SourceError(f"MongoDB error on {self.hosts}: {_short(exc)}") from exc


def error_code(exc: BaseException) -> int | None:
    """The server's error code behind a translated SourceError, if it gave one."""
    code = getattr(exc.__cause__, "code", None)
    return code if isinstance(code, int) else None


_CONFIGURED = re.compile(r"\s*\(configured timeouts:[^)]*\)")
_SERVER = re.compile(r"(?:^|(?<=,))\s*[^\s,]+:\d+: ")
_REFUSED = re.compile(r"\[Errno 111\] Connect call failed \([^)]*\)")
_ERRNO = re.compile(r"\[Errno -?\d+\] ")


def unreachable_reason(exc: BaseException) -> str:
    """Why no server answered, in a few words: each distinct socket error once,
    without the host (already named), the driver's timeouts or its topology dump."""
    text = _CONFIGURED.sub("", str(exc).split(", Timeout:")[0].split(" Topology Description")[0])
    text = _ERRNO.sub("", _REFUSED.sub("connection refused", _SERVER.sub("", text)))
    reasons = list(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    reason = "; ".join(reasons) or type(exc).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc).split(", Timeout:")[0].split(" Topology Description")[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _plain(doc: Any) -> dict[str, Any]:
    """A document from any client's document_class as an ordered dict."""
    if isinstance(doc, RawBSONDocument):
        return dict(bson.decode(doc.raw))
    return dict(doc)


def _spec(database: str, entry: dict[str, Any]) -> CollectionSpec:
    info = dict(entry.get("info") or {})
    uuid = info.get("uuid")
    if isinstance(uuid, uuidlib.UUID):
        uuid = uuid.bytes
    return CollectionSpec(
        database=database,
        name=str(entry["name"]),
        type=str(entry.get("type", "collection")),
        options=dict(entry.get("options") or {}),
        uuid=uuid.hex() if isinstance(uuid, Binary | bytes) else "",
        info=info,
    )


def check_read_preference(mode: str | None) -> None:
    if mode is not None and mode not in READ_PREFERENCES:
        raise UsageError(f"read preference is one of {', '.join(READ_PREFERENCES)}, not {mode!r}")


def _check_timeout(seconds: object) -> None:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT)
    ):
        raise UsageError(
            f"connect_timeout must be seconds, more than 0 and at most {MAX_TIMEOUT:g}"
        )


def _direct_uri(uri: str, host: str, port: int) -> str:
    """``uri`` with its host list replaced by one member and directConnection=true."""
    scheme, rest = uri.split("://", 1)
    authority, _, tail = rest.partition("/")
    userinfo, at, _hosts = authority.rpartition("@")
    path, _, query = tail.partition("?")
    options = [o for o in query.split("&") if o and not o.lower().startswith("directconnection=")]
    member = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{scheme}://{userinfo}{at}{member}/{path}?" + "&".join(
        [*options, "directConnection=true"]
    )


def _open_client(source: str, connect_timeout: float) -> Any:
    """A PyMongo client for a URI or host; UsageError (credentials removed) if
    the URI or a file it names (TLS) cannot be used."""
    uri = to_uri(source)
    hosts = describe_uri(uri)
    ms = int(connect_timeout * 1000)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client: Any = AsyncMongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms)
    except OSError as exc:  # a TLS file that does not exist or cannot be read
        message = f"a file the MongoDB URI for {hosts} names cannot be read: {exc.strerror or exc}"
        raise UsageError(redact(message, uri)) from None
    except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
        raise UsageError(f"bad MongoDB URI for {hosts}: {redact(str(exc), uri)}") from None
    for warning in caught:  # they may quote an option's value
        log.warning("MongoDB URI for %s: %s", hosts, redact(str(warning.message), uri))
    return client


def _check_client(source: Any) -> Any:
    """A client object given by the caller, if it is one mongosnap can drive."""
    if isinstance(source, MongoClient):  # (Motor wraps one, but is no MongoClient itself)
        raise TypeError(
            "a synchronous pymongo MongoClient cannot be used (it would block the event"
            " loop): pass a pymongo AsyncMongoClient, a Motor client, or a URI"
        )
    if not callable(getattr(source, "list_database_names", None)):
        raise UsageError(
            "the source is a MongoDB URI, host[:port], AsyncMongoClient or Motor client,"
            f" not {type(source).__name__}"
        )
    return source


def _client_hosts(client: Any) -> str:
    """Seed hosts of a user's client (PyMongo or Motor), for messages."""
    inner = getattr(client, "delegate", client)
    try:
        seeds = inner.topology_description.server_descriptions().keys()
    except Exception:
        return "mongodb"
    return ",".join(f"{h}:{p}" for h, p in sorted(seeds)) or "mongodb"


def _reply_too_large(exc: ProtocolError) -> bool:
    """PyMongo's refusal of a reply over maxMessageSizeBytes (network_layer.py)."""
    return "larger than server max message size" in str(exc)


def _resumed(batch: bytes, last: bytes, namespace: str) -> bytes:
    """The first batch of a re-issued find, without the document already yielded."""
    size = int.from_bytes(batch[:4], "little")
    if size < 5 or _document_id(batch[:size]) != _document_id(last):
        raise SourceError(_shifted(namespace))
    return batch[size:]


def _log_shrink(namespace: str, size: int, done: int, *, first: bool) -> None:
    """A warning for a collection's first shrink, the further halvings at INFO."""
    log.log(
        logging.WARNING if first else logging.INFO,
        "%s: a batch of %d documents made a reply larger than the driver accepts;"
        " continuing after document %d with batches of %d",
        namespace,
        size,
        done,
        size // 2,
    )


def _shifted(namespace: str) -> str:
    return f"{namespace} changed while its dump was resumed after a too large reply; run again"


def _id_key(value: Any) -> bytes:
    """An _id as its BSON bytes: 1, 1.0 and True stay apart, a document _id is hashable
    (one the server holds under an equal but different form is a duplicate key later)."""
    return bson.encode({"": value})


def _document_id(document: bytes) -> Any:
    return RawBSONDocument(document).get("_id")


def count_documents(batch: bytes) -> int:
    """Documents in a batch of concatenated BSON, walking the length prefixes."""
    return scan_batch(batch)[0]


def scan_batch(batch: bytes) -> tuple[int, int]:
    """(documents, offset of the last one) in a batch of concatenated BSON.

    One walk over the length prefixes: the backup's only per-document work.
    """
    count = offset = last = 0
    end = len(batch)
    unpack = _INT32.unpack_from
    try:
        while offset < end:
            size = unpack(batch, offset)[0]
            if size < 5 or offset + size > end:
                break
            last = offset
            offset += size
            count += 1
        else:
            return count, last
    except struct.error:
        size = end - offset
    raise SourceError(f"server sent a malformed batch (document length {size})")
