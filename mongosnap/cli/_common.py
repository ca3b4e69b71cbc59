"""Flags and helpers that several commands share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..storage import S3Config


def add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3 (standard AWS variables and profiles also apply)")
    group.add_argument("--endpoint-url", help="S3-compatible endpoint (or AWS_ENDPOINT_URL_S3)")
    group.add_argument("--region", help="bucket region")
    group.add_argument("--profile", help="AWS profile from the shared config files")
    group.add_argument(
        "--addressing-style", choices=["auto", "path", "virtual"], help="bucket addressing"
    )
    group.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
    group.add_argument("--sse-kms-key-id", help="KMS key for --sse aws:kms")
    group.add_argument("--storage-class", help="e.g. STANDARD_IA, GLACIER_IR")
    group.add_argument(
        "--checksum",
        choices=["when_supported", "when_required"],
        help="request checksums; default when_required with --endpoint-url, else when_supported",
    )
    group.add_argument("--part-size", type=mebibytes, help="first multipart part size in MiB")


def mebibytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of MiB: {text!r}") from None
    if value < 5:
        raise argparse.ArgumentTypeError("S3 parts are at least 5 MiB")
    return value * 1024 * 1024


def s3_config(args: argparse.Namespace) -> S3Config:
    """The S3Config the flags describe; unset flags keep S3Config's defaults."""
    fields: dict[str, Any] = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "profile": args.profile,
        "addressing_style": args.addressing_style,
        "sse": args.sse,
        "sse_kms_key_id": args.sse_kms_key_id,
        "storage_class": args.storage_class,
        "checksum": args.checksum,
        "part_size": args.part_size,
    }
    return S3Config(**{k: v for k, v in fields.items() if v is not None})


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help="MongoDB URI (credentials, TLS, replica sets); replaces HOST")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable server after this long (default 10)",
    )


def interactive(args: argparse.Namespace) -> bool:
    """Draw live progress only for a person at a terminal."""
    return not (args.quiet or args.json) and sys.stderr.isatty()
