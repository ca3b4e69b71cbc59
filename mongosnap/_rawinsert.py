"""An ordered insert of raw BSON documents without a Python object per document.

PyMongo's ``bulk_write([InsertOne(RawBSONDocument(d)) ...])`` builds two
objects and an operation entry per document, then encodes each one back into
the message: about 8 µs per document, most of a restore's client CPU. An
``insert`` sent as OP_MSG carries its documents in a kind-1 section, which is
nothing but the documents end to end: exactly what an archive member holds.
So the message is built here from the bytes as they are (one join), and
everything around it stays PyMongo's: server selection, the implicit session,
retryable writes (``_retryable_write``, one per command, as ``insert_one``),
``$clusterTime`` gossip, the stable API, timeouts, compression, reauthentication
and command events (``run_bulk_write_command``, as its bulk writes use).

Splitting follows PyMongo's bulk writes: a command holds at most the
connection's ``maxWriteBatchSize`` documents and fits its
``maxMessageSizeBytes``. A writeError ends the insert (it is ordered) with the
same BulkWriteError, counts and ``op`` as ``bulk_write`` raises.

``supports`` says which collections this can drive: a PyMongo
``AsyncCollection`` of a client without automatic encryption (which must see
each document) and with an acknowledged write concern, when the installed
PyMongo has the private hooks used here (4.20's); the caller keeps
``bulk_write`` for the others (Motor, older PyMongo).
"""

from __future__ import annotations

import copy
import logging
import struct
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import _dict_to_bson
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.read_preferences import ReadPreference

try:  # PyMongo's private hooks, as of 4.20; without them every insert uses bulk_write
    from pymongo import _csot
    from pymongo.asynchronous.command_runner import run_bulk_write_command
    from pymongo.asynchronous.helpers import _handle_reauth
    from pymongo.bulk_shared import _raise_bulk_write_error
    from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES, _get_wce_doc
    from pymongo.message import (
        _INSERT,
        _BulkWriteContext,
        _compress,
        _raise_document_too_large,
        _randint,
    )
except ImportError:  # pragma: no cover - depends on the installed PyMongo
    HOOKED = False
else:
    HOOKED = True

OP_MSG = 2013
_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
_FLAGS_KIND_0 = b"\x00\x00\x00\x00\x00"  # no flag bits; section 0 (the command) follows
_INT32 = struct.Struct("<i")
_IDENTIFIER = b"documents\x00"
_FIXED = _HEADER.size + 4 + 1 + 1 + 4 + len(_IDENTIFIER)
"""Bytes of a message besides its command document and its documents."""
_COMMAND_LOG = logging.getLogger("pymongo.command")


def supports(collection: Any) -> bool:
    """Whether ``insert`` can drive this collection (else use ``bulk_write``)."""
    if not HOOKED or not isinstance(collection, AsyncCollection):
        return False
    client = collection.database.client
    return getattr(client, "_encrypter", None) is None and collection.write_concern.acknowledged


@dataclass
class _Progress:
    """What an insert has done so far, across its commands and their retries."""

    documents: Sequence[bytes]
    offset: int = 0
    result: dict[str, Any] = field(
        default_factory=lambda: {
            "writeErrors": [],
            "writeConcernErrors": [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
    )


async def insert(collection: AsyncCollection[Any], documents: Sequence[bytes]) -> int:
    """Insert ``documents`` (each one whole BSON document) in order; how many were.

    Raises BulkWriteError as ``bulk_write(ordered=True)`` does.
    """
    progress = _Progress(documents)
    client = collection.database.client
    while progress.offset < len(documents):

        async def command(session: Any, conn: Any, retryable: bool) -> None:
            await _command(collection, progress, session, conn, retryable)

        await client._retryable_write(True, command, None, "insert")
        if progress.result["writeErrors"]:
            break
    result = progress.result
    if result["writeErrors"] or result["writeConcernErrors"]:
        _raise_bulk_write_error(result)
    return int(result["nInserted"])


def batch_end(sizes: Sequence[int], start: int, room: int, max_count: int) -> int:
    """The end of the longest run of documents from ``start`` that fits ``room``
    bytes and ``max_count`` documents; at least one (the server judges its size)."""
    end = start
    limit = min(len(sizes), start + max_count)
    used = 0
    while end < limit and (end == start or used + sizes[end] <= room):
        used += sizes[end]
        end += 1
    return end


async def _command(
    collection: AsyncCollection[Any],
    progress: _Progress,
    session: Any,
    conn: Any,
    retryable: bool,
) -> None:
    """Send one insert command on ``conn`` with as many documents as it takes."""
    client = collection.database.client
    conn.validate_session(client, session)
    cmd: dict[str, Any] = {"insert": collection.name, "ordered": True}
    _csot.apply_write_concern(cmd, collection.write_concern)
    if session:
        session._apply_to(cmd, retryable, ReadPreference.PRIMARY, conn)
    conn.send_cluster_time(cmd, session, client)
    conn.add_server_api(cmd)
    conn.apply_timeout(cmd)
    cmd["$db"] = collection.database.name
    encoded = _dict_to_bson(cmd, False, collection.codec_options)

    documents = progress.documents
    start = progress.offset
    compressed = conn.compression_context is not None
    room = conn.max_message_size - (16 if compressed else 0) - _FIXED - len(encoded)
    sizes = [len(d) for d in documents[start : start + conn.max_write_batch_size]]
    if sizes[0] > room:  # as PyMongo: a first document that cannot fit is refused here
        _raise_document_too_large("insert", sizes[0], conn.max_bson_size)
    end = start + batch_end(sizes, 0, room, conn.max_write_batch_size)
    body = b"".join(documents[start:end])
    request_id, message = _message(encoded, body, conn.compression_context)

    context = _BulkWriteContext(
        collection.database.name,
        "insert",
        conn,
        None,
        client._event_listeners,  # type: ignore[arg-type]  # None: no listeners, as bulk passes it
        session,
        _INSERT,
        collection.codec_options,
    )
    orig = _published(client, cmd, documents[start:end])
    reply = await _send(context, cmd, request_id, message, client, orig)
    _merge(progress, reply, start, end)


def _message(command: bytes, body: bytes, compression: Any) -> tuple[int, bytes]:
    """The OP_MSG (compressed if the connection compresses): flags 0, the command
    as section 0, the documents as the kind-1 section ``documents``."""
    size = _INT32.pack(4 + len(_IDENTIFIER) + len(body))
    sections = b"".join([_FLAGS_KIND_0, command, b"\x01", size, _IDENTIFIER, body])
    if compression is not None:
        return _compress(OP_MSG, sections, compression)
    request_id = _randint()
    return request_id, _HEADER.pack(16 + len(sections), request_id, 0, OP_MSG) + sections


def _published(
    client: Any, cmd: dict[str, Any], documents: Sequence[bytes]
) -> dict[str, Any] | None:
    """The command as command events and logs show it (documents included), built
    only when someone listens: it is the per-document work this module avoids."""
    listeners = client._event_listeners
    listened = listeners is not None and listeners.enabled_for_commands
    if not listened and not _COMMAND_LOG.isEnabledFor(logging.DEBUG):
        return None
    return {**cmd, "documents": [RawBSONDocument(d) for d in documents]}


@_handle_reauth
async def _send(
    context: _BulkWriteContext,
    cmd: MutableMapping[str, Any],
    request_id: int,
    message: bytes,
    client: Any,
    orig: dict[str, Any] | None,
) -> dict[str, Any]:
    docs, _, _ = await run_bulk_write_command(
        context, cmd, request_id, message, client=client, orig=orig
    )
    return docs[0]


def _merge(progress: _Progress, reply: dict[str, Any], start: int, end: int) -> None:
    """Add one command's reply to the insert's result, as bulk_write merges it."""
    wce = _get_wce_doc(reply)
    if wce and wce.get("code", 0) in _RETRYABLE_ERROR_CODES:
        # Retried by the caller's machinery: the result so far stays as it was.
        full = copy.deepcopy(progress.result)
        full["writeConcernErrors"].append(wce)
        _raise_bulk_write_error(full)
    result = progress.result
    result["nInserted"] += reply.get("n", 0)
    for error in reply.get("writeErrors") or ():
        index = start + error["index"]
        result["writeErrors"].append(
            {**error, "index": index, "op": RawBSONDocument(progress.documents[index])}
        )
    if wce:
        result["writeConcernErrors"].append(wce)
    progress.offset = end
