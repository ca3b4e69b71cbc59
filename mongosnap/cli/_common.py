"""Flags and helpers that several commands share."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import UsageError

if TYPE_CHECKING:
    from ..encryption import Encryption, Keys
    from ..metrics import Metrics
    from ..pipelines.engine import CollectionOutcome
    from ..storage import S3Config, Storage

URI_ENV = "MONGOSNAP_URI"

log = logging.getLogger("mongosnap.cli")

MAX_SECONDS = 86400.0
MAX_PART_MIB = 5 * 1024
MAX_WORKERS = 256
_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_STORAGE_CLASS = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_FLAGS = {
    "endpoint_url": "--endpoint-url",
    "region": "--region",
    "profile": "--profile",
    "addressing_style": "--addressing-style",
    "sse_kms_key_id": "--sse-kms-key-id",
    "sse": "--sse",
    "storage_class": "--storage-class",
    "checksum": "--checksum",
    "part_size": "--part-size",
}


def add_s3_flags(parser: argparse.ArgumentParser, *, writes: bool = True) -> None:
    """S3 flags; ``writes=False`` (commands that only read or delete) leaves out
    the ones that only shape new objects: --sse, --sse-kms-key-id, --storage-class,
    --part-size."""
    group = parser.add_argument_group("S3 (standard AWS variables and profiles also apply)")
    group.add_argument("--endpoint-url", help="S3-compatible endpoint (or AWS_ENDPOINT_URL_S3)")
    group.add_argument("--region", type=region, help="bucket region")
    group.add_argument("--profile", type=nonempty, help="AWS profile from the shared config files")
    group.add_argument(
        "--s3cfg",
        metavar="PATH",
        type=nonempty,
        help="s3cmd config, used when no AWS credentials are found"
        " (default $S3CMD_CONFIG, else ~/.s3cfg)",
    )
    group.add_argument(
        "--addressing-style", choices=["auto", "path", "virtual"], help="bucket addressing"
    )
    if writes:
        group.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
        group.add_argument("--sse-kms-key-id", help="KMS key for --sse aws:kms")
        group.add_argument(
            "--storage-class", type=storage_class, help="e.g. STANDARD_IA, GLACIER_IR"
        )
    group.add_argument(
        "--checksum",
        choices=["when_supported", "when_required"],
        help="request checksums; default when_required with --endpoint-url, else when_supported",
    )
    if writes:
        group.add_argument(
            "--part-size",
            type=mebibytes,
            help=f"first multipart part size in MiB (5 to {MAX_PART_MIB})",
        )


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``)."""
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, not {text!r}")
        return value

    return parse


READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
"""source.READ_PREFERENCES' names, repeated so --help need not import the driver."""


def add_read_preference_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--read-preference",
        choices=READ_PREFERENCES,
        metavar="MODE",
        help="replica set member the documents are read from: "
        + ", ".join(READ_PREFERENCES)
        + " (default: the URI's, else primary)",
    )


def megabytes_per_second(text: str) -> float:
    """An argparse type: a rate in MB/s, more than 0 (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1e6):
        raise argparse.ArgumentTypeError(f"expected MB/s, more than 0, not {text!r}")
    return value


def seconds(text: str) -> float:
    """An argparse type: seconds, more than 0 and at most a day (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"expected seconds, more than 0 and at most {MAX_SECONDS:g}, not {text!r}"
        )
    return value


def mebibytes(text: str) -> int:
    """An argparse type: an S3 part size in MiB, 5 to 5120, as bytes."""
    try:
        return whole(5, MAX_PART_MIB)(text) * 1024 * 1024
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"S3 parts are 5 to {MAX_PART_MIB} MiB (5 GiB); not {text!r}"
        ) from None


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("may not be empty")
    return text


def region(text: str) -> str:
    if not _REGION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a region name such as eu-west-1: {text!r}")
    return text


def storage_class(text: str) -> str:
    if not _STORAGE_CLASS.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a storage class name such as STANDARD_IA (upper case): {text!r}"
        )
    return text


def s3_config(args: argparse.Namespace) -> S3Config:
    """The S3Config the flags describe; unset flags keep S3Config's defaults."""
    from ..storage import S3Config  # here, not above: aiobotocore is slow to import

    fields: dict[str, Any] = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "profile": args.profile,
        "s3cfg": args.s3cfg,
        "addressing_style": args.addressing_style,
        "checksum": args.checksum,
    }
    for name in ("sse", "sse_kms_key_id", "storage_class", "part_size"):
        fields[name] = getattr(args, name, None)  # absent where add_s3_flags(writes=False)
    if fields["sse_kms_key_id"] is not None and fields["sse"] != "aws:kms":
        raise UsageError("--sse-kms-key-id needs --sse aws:kms")
    if args.s3cfg or str(getattr(args, "dest", "")).startswith("s3://"):
        check_s3cfg(args.s3cfg)
    try:
        return S3Config(**{k: v for k, v in fields.items() if v is not None})
    except UsageError as exc:  # S3Config speaks of its fields: name the flags
        raise UsageError(flag_names(str(exc))) from None


def check_s3cfg(path: str | None) -> None:
    """Read an s3cmd config asked for (--s3cfg, $S3CMD_CONFIG) before any
    work: a missing or malformed one is exit 2 now, not after a dump. The
    default ~/.s3cfg is read only if it is needed."""
    from ..storage import _s3cmd

    found = _s3cmd.locate(path)
    if found is not None and found[2]:
        _s3cmd.load(path)


def flag_names(message: str) -> str:
    """A message about S3Config fields, with the CLI flags' names instead."""
    message = message.replace("sse='aws:kms'", "--sse aws:kms")
    return re.sub(r"\b(" + "|".join(_FLAGS) + r")\b", lambda m: _FLAGS[m.group(1)], message)


def add_file_mode_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file-mode",
        type=file_mode,
        metavar="OCTAL",
        help="mode of the files written to a directory DEST, e.g. 0640 for a monitoring "
        "group (default 0600: the owner only)",
    )


def file_mode(text: str) -> int:
    """An argparse type: a file mode in octal that lets the owner read and write
    and nobody else write (archives are never rewritten in place)."""
    try:
        mode = int(text.strip().removeprefix("0o"), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600 or mode & 0o022:
        raise argparse.ArgumentTypeError(
            "expected an octal mode from 0600 to 0755 giving the owner read and write "
            f"and nobody else write, such as 0640; not {text!r}"
        )
    return mode


def destination(args: argparse.Namespace) -> str | Storage:
    """DEST, or with --file-mode the directory storage writing files of that mode."""
    mode = getattr(args, "file_mode", None)
    if mode is None:
        return str(args.dest)
    from ..storage import open_storage
    from ..storage.local import LocalStorage

    storage = None if args.dest.startswith("s3://") else open_storage(args.dest)
    if not isinstance(storage, LocalStorage):
        raise UsageError("--file-mode applies to a directory DEST (S3 objects have no mode)")
    return LocalStorage(storage.root, file_mode=mode)


MAX_LOCK_DAYS = 36500


def add_lock_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """--lock-days and --lock-mode: S3 Object Lock on what the command writes."""
    group = parser.add_argument_group("S3 Object Lock (docs/operations.md, Locked archives)")
    group.add_argument(
        "--lock-days",
        type=whole(1, MAX_LOCK_DAYS),
        metavar="N",
        help=f"lock {what} for N days: nobody can delete it earlier"
        " (a bucket created with Object Lock enabled)",
    )
    group.add_argument(
        "--lock-mode",
        choices=["governance", "compliance"],
        default="governance",
        help="governance (default): users with s3:BypassGovernanceRetention may still"
        " delete; compliance: nobody can, not even the root user",
    )


def lock_options(args: argparse.Namespace) -> dict[str, Any]:
    """The lock_for and lock_mode a pipeline takes; a directory DEST refuses a lock."""
    if args.lock_days is None:
        return {}
    if not str(args.dest).startswith("s3://"):
        raise UsageError("--lock-days needs an s3:// DEST (a directory cannot lock files)")
    return {"lock_for": timedelta(days=args.lock_days), "lock_mode": args.lock_mode}


def add_pattern_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    """--include and --exclude, shared by backup and restore."""
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help=f"{verb} only collections matching PATTERN (shell-style, repeatable; default: all)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out collections matching PATTERN (shell-style, repeatable; default: none)",
    )


def add_codec_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codec", choices=["gzip", "zstd"], default="gzip", help="compression (default gzip)"
    )


def add_encrypt_flags(parser: argparse.ArgumentParser) -> None:
    """backup: whom the archive is encrypted to (docs/encryption.md)."""
    parser.add_argument(
        "--encrypt-to",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="encrypt the archive to this age recipient (age1...; repeatable;"
        " default $MONGOSNAP_RECIPIENTS)",
    )
    parser.add_argument(
        "--recipients-file", metavar="FILE", help="age recipients, one per line ('#' comments)"
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="encrypt with the passphrase in FILE (scrypt) instead of recipients",
    )
    parser.add_argument(
        "--kms-key-id",
        action="append",
        default=[],
        metavar="KEYID",
        help="also wrap the archive's key with this AWS KMS key (id, ARN or alias/NAME;"
        " repeatable; read with --kms)",
    )


def add_key_flags(parser: argparse.ArgumentParser) -> None:
    """heal, restore, verify: what opens an encrypted archive."""
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="FILE",
        help="age identity file for encrypted archives (repeatable; default $MONGOSNAP_IDENTITY)",
    )
    parser.add_argument(
        "--passphrase-file", metavar="FILE", help="the passphrase of encrypted archives"
    )
    parser.add_argument(
        "--kms",
        action="store_true",
        help="unwrap AWS KMS-encrypted archive keys with the AWS credentials (kms:Decrypt)",
    )


def encryption(args: argparse.Namespace) -> Encryption | None:
    from ..encryption import Encryption

    return Encryption.of(
        args.encrypt_to,
        recipients_file=args.recipients_file,
        passphrase_file=args.passphrase_file,
        kms_key_ids=args.kms_key_id,
    )


def keys(args: argparse.Namespace) -> Keys | None:
    from ..encryption import Keys

    return Keys.of(args.identity, passphrase_file=args.passphrase_file, kms=args.kms)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display; log errors only"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log steps to stderr (-vv: detail)"
    )
    add_log_format_flag(parser)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help="MongoDB URI (credentials, TLS, replica sets); replaces HOST")
    parser.add_argument(
        "--uri-file",
        metavar="PATH",
        help=f"read the MongoDB URI from PATH (mode 600); replaces HOST; else ${URI_ENV}",
    )
    parser.add_argument(
        "--connect-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable server after this long (default 10, at most a day)",
    )


def database_name(text: str) -> str:
    """A MongoDB database name, checked before any server is asked."""
    bad = sorted(set(text) & set('/\\. "$\0'))
    if not text or bad or len(text.encode()) > 63:
        raise UsageError(
            f'{text!r} is not a database name (1 to 63 bytes, none of / \\ . space " $)'
        )
    return text


def collection_name(text: str) -> str:
    if not text or "\0" in text or text.startswith("$"):
        raise UsageError(f"{text!r} is not a collection name")
    return text


def interactive(args: argparse.Namespace) -> bool:
    """Draw live progress only for a person at a terminal."""
    quiet = getattr(args, "quiet", False)  # not every command has -q
    return not (quiet or args.json) and sys.stderr.isatty()


def resolve_uri(args: argparse.Namespace, environ: Any = os.environ) -> None:
    """Fill ``args.uri``: --uri, else --uri-file, else $MONGOSNAP_URI (docs/cli.md).

    Whichever gives the URI replaces the HOST positional, as --uri always did.
    """
    if getattr(args, "uri", None):
        args.uri_origin = "--uri"
        return
    path = getattr(args, "uri_file", None)
    if path:
        args.uri_origin = f"--uri-file {path}"
        args.uri = _mongodb_uri(read_uri_file(path), args.uri_origin)
    elif environ.get(URI_ENV):
        args.uri_origin = f"${URI_ENV}"
        args.uri = _mongodb_uri(environ[URI_ENV].strip(), args.uri_origin)


def host_and_uri(args: argparse.Namespace) -> UsageError:
    """HOST given while a URI is too: the error names where the URI came from,
    which may be the environment the user forgot about."""
    origin = getattr(args, "uri_origin", "--uri")
    hint = f" (unset {URI_ENV} to give HOST)" if origin == f"${URI_ENV}" else ""
    return UsageError(f"give either HOST or {origin}, not both{hint}")


URI_SCHEMES = ("mongodb://", "mongodb+srv://")


def _mongodb_uri(text: str, where: str) -> str:
    """``text`` if it is a MongoDB URI. A file or variable meant to hold one
    may hold a bare password instead: refused without being echoed, never
    taken for a host name."""
    if not text.startswith(URI_SCHEMES):
        raise UsageError(f"{where} holds no mongodb:// or mongodb+srv:// URI (content not shown)")
    return text


def read_uri_file(path: str) -> str:
    """The URI in ``path`` (surrounding whitespace dropped); warns if others may read it."""
    try:
        status = os.stat(path)  # through symlinks: Kubernetes' ..data layout
        with open(path, encoding="utf-8") as handle:
            uri = handle.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read --uri-file {path}: {exc.strerror}") from None
    if not uri:
        raise UsageError(f"--uri-file {path} is empty")
    if too_readable(status):
        log.warning("%s is readable by group or others; chmod 600 it", path)
    return uri


def too_readable(status: os.stat_result) -> bool:
    """Whether a secret file is readable by more than this process needs.

    Others may never read it. The group may only when that is how this
    process reads it: the file belongs to another user and to one of this
    process's groups, as a Kubernetes Secret volume with ``fsGroup`` is
    (root, the pod's group, 0440) or a root-owned ``root:mongosnap 0640``.
    A group-readable file this process owns needs no group bit: warned.
    """
    if status.st_mode & stat.S_IROTH:
        return True
    if not status.st_mode & stat.S_IRGRP:
        return False
    ours = {os.getegid(), *os.getgroups()}
    return status.st_uid == os.geteuid() or status.st_gid not in ours


def add_log_format_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="stderr log lines as text or one JSON object per line",
    )


def add_metrics_flags(parser: argparse.ArgumentParser, *, serve: bool = False) -> None:
    group = parser.add_argument_group("Prometheus metrics")
    group.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write metrics to PATH after the run (node_exporter textfile; atomic)",
    )
    if serve:
        group.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve /metrics on PORT while watching (with --interval)",
        )
        group.add_argument(
            "--metrics-bind",
            default="127.0.0.1",
            metavar="ADDR",
            help="address for --metrics-port (default 127.0.0.1)",
        )


class Unobserved:
    """What observed() hands out when no --metrics-file asks for the figures:
    the same record calls, kept nowhere (prometheus_client is not imported)."""

    def record_backup(self, result: Any) -> None:
        return None

    def record_heal(self, report: Any) -> None:
        return None

    def record_restore(self, report: Any) -> None:
        return None

    def record_prune(self, report: Any) -> None:
        return None

    def record_drill(self, report: Any) -> None:
        return None

    def record_undo(self, report: Any) -> None:
        return None


@contextlib.contextmanager
def observed(args: argparse.Namespace, command: str) -> Iterator[Metrics | Unobserved]:
    """Metrics for one run: timed, success or failure by kind, then --metrics-file written."""
    path = getattr(args, "metrics_file", None)
    if not path:
        yield Unobserved()  # nobody reads them: a run saves importing prometheus_client
        return
    metrics = prepared_metrics(command, path)
    failed = True
    try:
        with metrics.run():
            yield metrics
        failed = False
    finally:
        write_metrics(metrics, path, raising=not failed)


def prepared_metrics(command: str, path: str | None) -> Metrics:
    """The metrics of a command that writes ``path``: checked writable before any
    work (a usage error, exit 2), then continued from the file's previous figures."""
    from ..metrics import Metrics  # prometheus_client only when a command runs

    metrics = Metrics(command)
    if not path:
        return metrics
    check_writable(path)
    try:
        with open(path, encoding="utf-8") as handle:
            previous = handle.read()
    except FileNotFoundError:
        return metrics  # the first run: counters start at 0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read --metrics-file %s (%s); counting from 0", path, exc)
        return metrics
    try:
        metrics.carry_over(previous)
    except ValueError as exc:
        log.warning("--metrics-file %s is not Prometheus text (%s); counting from 0", path, exc)
    return metrics


def check_writable(path: str) -> None:
    """What writing ``path`` atomically needs: a file created beside it, then
    renamed over it. Probed, since permission bits do not bind root."""
    if os.path.isdir(path):
        raise UsageError(f"cannot write --metrics-file {path}: it is a directory")
    try:
        # A dot name: node_exporter reads only *.prom, should this ever outlive us.
        handle, probe = tempfile.mkstemp(
            prefix=".mongosnap-probe-", dir=os.path.dirname(path) or "."
        )
    except OSError as exc:
        raise UsageError(f"cannot write --metrics-file {path}: {exc.strerror}") from None
    os.close(handle)
    os.unlink(probe)


def write_metrics(metrics: Metrics, path: str | None, *, raising: bool = True) -> None:
    if not path:
        return
    try:
        metrics.write_textfile(path)
    except OSError as exc:
        if raising:
            raise UsageError(f"cannot write --metrics-file {path}: {exc.strerror}") from None
        log.error("cannot write --metrics-file %s: %s", path, exc.strerror)


def log_outcomes(logger: logging.Logger, outcomes: Iterable[CollectionOutcome]) -> None:
    """One ``-v`` line per collection heal or restore handled: what, from where."""
    from ..units import plural

    for outcome in outcomes:
        logger.info(
            "%s.%s: %s from %s (%s, %s)",
            outcome.database,
            outcome.name,
            outcome.status,
            outcome.archive,
            plural(outcome.documents, "document"),
            plural(outcome.indexes, "index", "indexes"),
        )


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


def rfc3339_times(data: Any) -> Any:
    """``data`` with every time string written as units.iso_utc writes it
    (RFC 3339, UTC, ``Z``, milliseconds), recursively: one format whatever
    part of the library produced the time."""
    if isinstance(data, dict):
        return {k: rfc3339_times(v) for k, v in data.items()}
    if isinstance(data, list):
        return [rfc3339_times(v) for v in data]
    if isinstance(data, str) and _TIME.fullmatch(data):
        from datetime import datetime

        from ..units import iso_utc

        return iso_utc(datetime.fromisoformat(data.replace("Z", "+00:00")))
    return data


def write_json(data: Any, out: TextIO) -> None:
    """The --json output: one compact line (an error object may follow it on
    the next), times as units.iso_utc writes them."""
    json.dump(rfc3339_times(data), out, separators=(",", ":"))
    out.write("\n")


def freeze_loaded() -> None:
    """Leave what is loaded so far (modules, parsers, clients' models) to
    reference counting alone: the cyclic garbage collector stops walking it.

    Restore and heal allocate containers for every document (validation,
    insert batches), and each full collection they trigger walked every
    object the imports had left: a fifth of a 30 MB restore's client CPU.
    Frozen objects are still freed when their count drops to zero; only a
    cycle among them would outlive the run.
    """
    import gc

    gc.freeze()
