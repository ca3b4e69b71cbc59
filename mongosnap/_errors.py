"""Every error mongosnap raises, with the exit code the CLI maps it to.

    MongosnapError                      1
    ├── UsageError                      2   bad arguments or a malformed destination
    ├── SourceError                     10  MongoDB side
    │   ├── ServerUnreachable           11
    │   ├── AuthenticationFailed        12
    │   ├── DatabaseNotFound            13  database missing or holds no collection
    │   ├── CollectionExists            14  a restore would overwrite (use --drop)
    │   └── CollectionBusy              15  another run is restoring the collection
    ├── StorageError                    20  storage side
    │   ├── BucketNotFound              21
    │   ├── AccessDenied                22
    │   ├── ObjectNotFound              23
    │   ├── ObjectExists                24  a writer never overwrites
    │   ├── ObjectArchived              25  in an archive tier (Glacier): restore it first
    │   ├── LockUnavailable             26  objects cannot be locked there (no S3 Object Lock)
    │   └── DestinationBusy             27  another run holds the destination (a rekey)
    ├── ArchiveError                    30  an archive fails its checks
    │   ├── CorruptArchive              31  bad checksum, count, gzip/zstd or tar data
    │   ├── TruncatedArchive            32
    │   ├── UnsafeArchive               33  hostile member names, absurd lengths
    │   └── ForeignArchive              34  an encrypted archive's sealed manifest is another's
    ├── NoBackupsFound                  40  no archive at the destination
    │   └── DatabaseNotArchived         44  archives exist, none holds the database (a typo?)
    ├── HealIncomplete                  41  collections still missing after the search
    ├── PartialFailure                  42  some collections, or a backup --also copy, failed
    ├── NothingMatched                  43  restore's database or selection matches nothing
    ├── DrillFailed                     45  a restore drill's checks found a mismatch
    ├── Differs                         46  diff: the two sides differ
    ├── ReplayError                     50  an oplog entry cannot be replayed (named in the message)
    ├── PointInTimeUnavailable          51  no archive and oplog chunks reach the target instant
    ├── EncryptionError                 60  an encrypted (age) object cannot be read or written
    │   ├── NoIdentity                  61  no identity given, or none opens the file
    │   ├── DecryptionFailed            62  tampered, truncated or malformed: authentication failed
    │   ├── BadKey                      63  a malformed key, recipient, passphrase or key file
    │   └── KmsError                    64  AWS KMS refused or could not be reached
    └── Interrupted                     130 Ctrl-C
        └── Terminated                  143 SIGTERM
            └── HungUp                  129 SIGHUP (a terminal closed, an ssh session dropped)

The CLI adds 70 for an internal error (a bug), printed as one line.
Messages never carry credentials: URIs are redacted before they reach one.
Lower-layer exceptions are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterable


class MongosnapError(Exception):
    """Base of every error raised by mongosnap."""

    exit_code = 1


class UsageError(MongosnapError):
    exit_code = 2


class SourceError(MongosnapError):
    exit_code = 10


class ServerUnreachable(SourceError):
    exit_code = 11


class AuthenticationFailed(SourceError):
    exit_code = 12


class DatabaseNotFound(SourceError):
    exit_code = 13


class CollectionExists(SourceError):
    exit_code = 14


class CollectionBusy(SourceError):
    """Another run (heal, restore) holds the collection's lease: it is being
    restored now, and this run left it alone (docs/heal.md, concurrent runs)."""

    exit_code = 15


class StorageError(MongosnapError):
    exit_code = 20


class BucketNotFound(StorageError):
    exit_code = 21


class AccessDenied(StorageError):
    exit_code = 22


class ObjectNotFound(StorageError):
    exit_code = 23


class ObjectExists(StorageError):
    exit_code = 24


class ObjectArchived(StorageError):
    """The object exists but cannot be read now (S3 ``InvalidObjectState``: a
    Glacier or Deep Archive storage class); it must be restored first."""

    exit_code = 25


class LockUnavailable(StorageError):
    """A locked write was asked for where objects cannot be locked: a bucket
    without S3 Object Lock configuration (it can only be enabled when the
    bucket is created, or by AWS support), or a server refusing the lock."""

    exit_code = 26


class DestinationBusy(StorageError):
    """Another run holds the destination for work that must not run twice at
    once (a rekey): its lock object under ``locks/`` is fresh."""

    exit_code = 27


class ArchiveError(MongosnapError):
    exit_code = 30


class CorruptArchive(ArchiveError):
    exit_code = 31


class TruncatedArchive(ArchiveError):
    exit_code = 32


class UnsafeArchive(ArchiveError):
    exit_code = 33


class ForeignArchive(ArchiveError):
    """An encrypted archive's sealed manifest names another archive, other
    ciphertext or other databases than its name and clear sidecar: a swapped
    sidecar, or an archive put under another's name (docs/encryption.md)."""

    exit_code = 34


class NoBackupsFound(MongosnapError):
    exit_code = 40


class DatabaseNotArchived(NoBackupsFound):
    """The destination holds archives, but none of them holds the database
    (most often a typo); the message names the databases they do hold."""

    exit_code = 44


class HealIncomplete(MongosnapError):
    exit_code = 41


class ReplayError(MongosnapError):
    exit_code = 50


class PointInTimeUnavailable(MongosnapError):
    """A restore to a point in time cannot reach its target: no archive is
    consistent before it, or a gap or the chunks' end lies on the way."""

    exit_code = 51


class EncryptionError(MongosnapError):
    exit_code = 60


class NoIdentity(EncryptionError):
    """No identity was given, or none of them opens any stanza of the header."""

    exit_code = 61


class DecryptionFailed(EncryptionError):
    """The object is not an age file this code can trust: a malformed header,
    a header MAC or a payload chunk that does not authenticate, a truncation."""

    exit_code = 62


class BadKey(EncryptionError):
    """A recipient, identity or passphrase (or the file holding it) is malformed.
    The message names the file or line, never the key itself."""

    exit_code = 63


class KmsError(EncryptionError):
    """AWS KMS did not wrap or unwrap a file key: the key is unknown, disabled
    or not allowed to the caller, or KMS could not be reached."""

    exit_code = 64
    code = ""
    """KMS's error code, when KMS answered."""


class Interrupted(MongosnapError):
    exit_code = 130


class Terminated(Interrupted):
    exit_code = 143


class HungUp(Terminated):
    """SIGHUP, handled as SIGTERM is: cleanup runs, then exit 128 + 1."""

    exit_code = 129


class PartialFailure(MongosnapError):
    """Some collections could not be restored (the others were, and each is
    reported), or a ``backup --also`` destination failed (the archive at the
    main destination is complete)."""

    exit_code = 42


class NothingMatched(MongosnapError):
    """A restore whose database, collections or patterns match nothing in the
    archive; the message names what the archive holds. Nothing was written."""

    exit_code = 43


class DrillFailed(MongosnapError):
    """A restore drill ran, and what it restored did not match the archive (or a
    collection could not be restored, or the oplog not replayed); the report
    names each failure. The scratch database was dropped."""

    exit_code = 45


class Differs(MongosnapError):
    """``diff``: the two sides differ (as diff(1) exits 1); the report says where."""

    exit_code = 46


def listing(names: Iterable[str], limit: int = 10) -> str:
    """``a, b, c and 412 more``: names for a message, sorted, the long tail counted."""
    ordered = sorted(names)
    if not ordered:
        return "nothing"
    shown = ", ".join(ordered[:limit])
    rest = len(ordered) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def all_errors() -> list[type[MongosnapError]]:
    """Every public error class, base first; the CLI docs and a test use it.

    Only this module's: a private refinement elsewhere (oplog's Unreplayable,
    a ReplayError) shares its parent's exit code and is not listed, whether or
    not its module happens to be imported yet.
    """
    found: list[type[MongosnapError]] = []
    pending: list[type[MongosnapError]] = [MongosnapError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(c for c in cls.__subclasses__() if c.__module__ == __name__)
    return found
