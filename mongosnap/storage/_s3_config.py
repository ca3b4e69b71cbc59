"""S3Config: how to reach S3, and the part-size limits it is checked against."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from botocore.config import Config

from .._errors import UsageError

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024**3


@dataclass(frozen=True)
class S3Config:
    """How to reach S3. Every field is optional; the defaults suit AWS.

    endpoint_url: None means AWS, or whatever the standard AWS_ENDPOINT_URL_S3 /
        AWS_ENDPOINT_URL environment variables name (botocore reads them).
    region, profile: as in the AWS config files; None uses the usual chain.
    addressing_style: "auto", "path" (most self-hosted servers) or "virtual".
    access_key_id, secret_access_key, session_token: explicit credentials;
        None uses the standard chain (environment, profile, instance role).
        Never shown by repr().
    s3cfg: s3cmd's config file, read only when no credentials are found
        (none given here, none from the AWS chain); its keys, host_base,
        host_bucket, use_https, bucket_location, TLS, proxy and encryption
        settings then fill what is not set here or in AWS variables.
        None: $S3CMD_CONFIG, else ~/.s3cfg if it exists.
    sse: None, "AES256" or "aws:kms" (with sse_kms_key_id, or the AWS key).
    storage_class: e.g. "STANDARD_IA"; None is the bucket's default.
    checksum: "when_supported" (botocore's CRC32 on every upload) or
        "when_required" (only where an operation demands one; what many
        S3-compatible servers need). None: "when_required" when an endpoint
        is configured, here or in the environment, else "when_supported"; an
        AWS_REQUEST_CHECKSUM_CALCULATION variable is then left to botocore.
    connect_timeout, read_timeout: seconds. max_attempts: per request,
        retries included (botocore "standard" retry mode).
    part_size: first part size of a streamed upload, 5 MiB to 5 GiB; parts
        double every 1000 (see ``part_size`` in this module).
    max_concurrency: parts uploading at once, and never more than
        ``max_in_flight`` bytes of them (at least one part): a writer holds
        the parts in flight, the part it is filling, and a part held back by
        an unfilled reservation.
    max_in_flight: bytes of parts uploading at once (default 64 MiB), so the
        larger parts of a very large upload do not multiply memory.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    s3cfg: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    checksum: Literal["when_supported", "when_required"] | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    part_size: int = 8 * MiB
    max_concurrency: int = 4
    max_in_flight: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError("endpoint_url must be an http:// or https:// URL")
            if parts.username is not None or parts.password is not None:
                raise UsageError("endpoint_url must not hold credentials")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise UsageError(
                f"addressing_style must be auto, path or virtual, not {self.addressing_style!r}"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise UsageError("give both access_key_id and secret_access_key, or neither")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise UsageError(f"sse must be AES256 or aws:kms, not {self.sse!r}")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise UsageError("sse_kms_key_id needs sse='aws:kms'")
        if self.checksum not in (None, "when_supported", "when_required"):
            raise UsageError(
                f"checksum must be when_supported or when_required, not {self.checksum!r}"
            )
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise UsageError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if self.max_concurrency < 1 or self.max_attempts < 1 or self.max_in_flight < 1:
            raise UsageError("max_concurrency, max_in_flight and max_attempts must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise UsageError("timeouts must be positive")

    def checksum_mode(self) -> str | None:
        """The checksum setting to give botocore (None: leave it to botocore)."""
        if self.checksum is not None:
            return self.checksum
        if os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION"):
            return None
        custom = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        return "when_required" if custom else "when_supported"

    def botocore_config(self) -> Config:
        from botocore.config import Config  # here: botocore is slow to import

        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},
            "s3": {"addressing_style": self.addressing_style},
            "max_pool_connections": max(10, 2 * self.max_concurrency),
            "user_agent_extra": "mongosnap",
        }
        if self.region:
            options["region_name"] = self.region
        mode = self.checksum_mode()
        if mode is not None:
            options["request_checksum_calculation"] = mode
            options["response_checksum_validation"] = mode
        return Config(**options)
