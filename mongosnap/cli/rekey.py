"""``mongosnap rekey DEST [ARCHIVE...|--all]``: change who can open encrypted archives."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .._errors import UsageError
from ._common import add_key_flags, add_output_flags, add_s3_flags, keys, s3_config, write_json


def register(commands: Any) -> None:
    p = commands.add_parser(
        "rekey",
        help="add or remove recipients of encrypted archives",
        description="Give encrypted archives (and their sealed sidecars) new recipients, or "
        "take some away, without re-encrypting them: only the age header changes (on S3 the "
        "rest is copied by the server). The old archive is replaced only once the new one "
        "reads back as written; an interrupted swap is finished by the next rekey.",
    )
    p.add_argument("dest", metavar="DEST", help="s3://bucket[/prefix] or a directory")
    p.add_argument("archives", metavar="ARCHIVE", nargs="*", help="archive keys, or 'latest'")
    p.add_argument("--all", action="store_true", help="every complete encrypted archive")
    add_key_flags(p)
    p.add_argument(
        "--encrypt-to",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="add this age recipient (age1...; repeatable)",
    )
    p.add_argument("--recipients-file", metavar="FILE", help="add the recipients in FILE")
    p.add_argument(
        "--kms-key-id", action="append", default=[], metavar="KEYID", help="add this AWS KMS key"
    )
    p.add_argument(
        "--remove-recipient",
        action="append",
        default=[],
        metavar="R",
        help="remove this recipient: an age1... whose identity is given with --identity, or a"
        " KMS key id (repeatable)",
    )
    p.add_argument(
        "--break-lock",
        action="store_true",
        help="remove another rekey's lock first (only when no other rekey of DEST is running:"
        " a killed rekey's lock goes stale by itself after 45 minutes)",
    )
    add_s3_flags(p)
    add_output_flags(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.extra:
        raise UsageError(f"unexpected arguments: {' '.join(args.extra)}")
    from ..encryption import Encryption
    from ..pipelines.rekey import rekey

    add = Encryption.of(
        args.encrypt_to,
        recipients_file=args.recipients_file,
        kms_key_ids=args.kms_key_id,
        environ={},  # $MONGOSNAP_RECIPIENTS is whom backups encrypt to, not whom to add
    )
    report = await rekey(
        args.dest,
        args.archives,
        every=args.all,
        keys=keys(args),
        add=add,
        remove=args.remove_recipient,
        s3=s3_config(args),
        break_lock=args.break_lock,
    )
    if args.json:
        write_json(report.to_dict(), out)
    elif not args.quiet:
        for archive in report.finished:
            out.write(f"finished the interrupted rekey of {archive}\n")
        for done in report.archives:
            out.write(
                f"rekeyed {done.key}: {done.stanzas} recipient(s)"
                f" (+{done.added}, -{done.removed})\n"
            )
    return 0
