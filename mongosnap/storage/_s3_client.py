"""The S3 requests S3Storage and S3Writer share, on one client per storage.

S3Client owns the bucket, the prefix and the aiobotocore client (created on
first use, in the running loop). It names keys, gives every new object its
settings (SSE, storage class, checksums), creates objects without overwriting,
aborts multipart uploads, and translates failures into StorageErrors.
Neither the storage nor the writer imports the other's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from .._errors import (
    AccessDenied,
    LockUnavailable,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    UsageError,
)
from . import _s3cmd as s3cmd
from ._keys import check_key
from ._s3_config import S3Config
from ._s3_errors import TRANSPORT_ERRORS, error_code, is_bare_head_error, is_not_implemented
from ._s3_errors import translate as _translate
from ._s3_trace import install_trace
from ._s3cmd import S3cmdConfig
from .base import Retention

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client as BotoS3Client

log = logging.getLogger("mongosnap.storage")

ABORT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Seconds between attempts to abort a failed upload (about a minute in all,
on top of botocore's own retries): an outage that made the upload fail may
end a few seconds later, and an upload left behind stays billed."""


class S3Client:
    """One bucket and prefix on one endpoint."""

    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.config = config
        self.root = f"{prefix}/" if prefix else ""
        self._client: BotoS3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._conditional_writes = True
        self._settings_checked = False
        self._bucket_seen = False  # a probe succeeded: a bare 404 is then the key's

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def host(self) -> str:
        """The endpoint's host (and port), for messages."""
        endpoint = self._client.meta.endpoint_url if self._client else self.config.endpoint_url
        return urlsplit(endpoint).netloc if endpoint else "AWS S3"

    async def client(self) -> BotoS3Client:
        """The aiobotocore client, created on first use in the running loop."""
        async with self._lock:
            if self._client is None:
                self._client = await self._open()
            return self._client

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- names and errors ------------------------------------------------------

    def name(self, key: str) -> str:
        """The S3 key of a storage key."""
        return self.root + check_key(key)

    def where(self, key: str | None) -> str:
        return self.url if key is None else f"{self.url}/{key}"

    def error(self, exc: BaseException, key: str | None) -> StorageError:
        return _translate(exc, bucket=self.bucket, where=self.where(key), host=self.host)

    @contextlib.contextmanager
    def translating(self, key: str | None) -> Iterator[None]:
        try:
            yield
        except (ClientError, *TRANSPORT_ERRORS) as exc:
            raise self.error(exc, key) from exc

    async def probe(self) -> None:
        """Raise the precise error a bucket-level GET gives, if any (a HEAD
        response has no body to say why it failed)."""
        client = await self.client()
        with self.translating(None):
            await client.list_objects_v2(Bucket=self.bucket, Prefix=self.root, MaxKeys=1)
        self._bucket_seen = True

    async def head(self, key: str) -> dict[str, Any]:
        """HeadObject's answer; ObjectNotFound and the other StorageErrors.

        A bare 404 is told apart from a missing bucket by a probe, unless one
        already found the bucket (a backup's name check would pay a request).
        """
        client = await self.client()
        try:
            return dict(await client.head_object(Bucket=self.bucket, Key=self.name(key)))
        except ClientError as exc:
            if is_bare_head_error(exc) and not (self._bucket_seen and error_code(exc) == "404"):
                await self.probe()
            raise self.error(exc, key) from exc
        except TRANSPORT_ERRORS as exc:
            raise self.error(exc, key) from exc

    # -- new objects -------------------------------------------------------------

    def object_args(self, key: str, retention: Retention | None = None) -> dict[str, Any]:
        """Bucket, S3 key and the settings every new object gets (and its lock)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.name(key)}
        if retention is not None:
            args["ObjectLockMode"] = retention.mode
            args["ObjectLockRetainUntilDate"] = retention.until
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        if self.config.storage_class:
            args["StorageClass"] = self.config.storage_class
        return args

    def checksum_args(self) -> dict[str, Any]:
        """ChecksumAlgorithm for uploads when botocore sends CRC32 checksums."""
        return {"ChecksumAlgorithm": "CRC32"} if self.sends_checksums() else {}

    def sends_checksums(self) -> bool:
        """Whether uploads carry CRC32 checksums (botocore's when_supported)."""
        assert self._client is not None
        return bool(self._client.meta.config.request_checksum_calculation == "when_supported")

    async def create_new(self, key: str, request: Callable[..., Awaitable[Any]]) -> None:
        """Run a request that creates the object key, refusing to overwrite.

        request(**cond) is PutObject or CompleteMultipartUpload; cond is
        IfNoneMatch="*" unless the server is known not to implement it.
        """
        response = await self._create(key, request)
        await self._check_settings(key, response)

    async def _create(self, key: str, request: Callable[..., Awaitable[Any]]) -> Any:
        if self._conditional_writes:
            try:
                return await request(IfNoneMatch="*")
            except ClientError as exc:
                if not is_not_implemented(exc):
                    raise self.error(exc, key) from exc
            except TRANSPORT_ERRORS as exc:
                raise self.error(exc, key) from exc
            self._conditional_writes = False
            log.info("%s does not implement If-None-Match; checking with HEAD", self.host)
        with contextlib.suppress(ObjectNotFound):
            await self.head(key)
            raise ObjectExists(f"{self.where(key)} already exists")
        with self.translating(key):
            return await request()

    async def _check_settings(self, key: str, response: Any) -> None:
        """Warn once if the server did not apply the SSE or storage class asked for.

        SSE shows in the creating response; the storage class only in a HEAD
        (AWS leaves it out for STANDARD), made once per storage.
        """
        wanted_sse, wanted_class = self.config.sse, self.config.storage_class
        if self._settings_checked or not (wanted_sse or wanted_class):
            return
        self._settings_checked = True
        ignored: list[str] = []
        if wanted_sse and response.get("ServerSideEncryption") != wanted_sse:
            ignored.append(f"server-side encryption {wanted_sse}")
        if wanted_class:
            try:
                applied = (await self.head(key)).get("StorageClass") or "STANDARD"
            except StorageError as exc:
                log.info("cannot check the storage class of %s: %s", self.where(key), exc)
            else:
                if applied != wanted_class:
                    ignored.append(f"storage class {wanted_class} (the object is {applied})")
        if ignored:
            log.warning(
                "%s did not apply %s to %s: the server ignores the setting",
                self.host,
                " and ".join(ignored),
                self.where(key),
            )

    # -- object lock ---------------------------------------------------------------

    async def check_lock(self) -> datetime | None:
        """Raise LockUnavailable unless the bucket has Object Lock enabled; the
        server's clock (its ``Date`` header), or None when it gave none.

        Credentials that may not read the bucket's lock configuration (a policy
        without s3:GetBucketObjectLockConfiguration) get a warning instead:
        then the first locked write tells.
        """
        client = await self.client()
        try:
            answer = await client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) == "ObjectLockConfigurationNotFoundError":
                raise LockUnavailable(self._no_lock()) from exc
            error = self.error(exc, None)
            if not isinstance(error, AccessDenied) and not is_not_implemented(exc):
                raise error from exc
            log.warning("cannot read the Object Lock configuration of %s: %s", self.url, error)
            return server_date(getattr(exc, "response", {}))
        except TRANSPORT_ERRORS as exc:
            raise self.error(exc, None) from exc
        if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise LockUnavailable(self._no_lock())
        return server_date(answer)

    def _no_lock(self) -> str:
        return (
            f"bucket {self.bucket!r} at {self.host} has no Object Lock configuration:"
            " locked archives need a bucket created with Object Lock enabled"
        )

    async def ensure_locked(self, key: str, retention: Retention) -> None:
        """Lock a new object whose creation did not (some servers ignore the
        lock headers of CreateMultipartUpload); PutObjectRetention otherwise."""
        head = await self.head(key)
        if head.get("ObjectLockRetainUntilDate") is not None:
            return
        client = await self.client()
        log.info("%s ignored the lock of %s; setting its retention", self.host, self.where(key))
        with self.translating(key):
            await client.put_object_retention(
                Bucket=self.bucket,
                Key=self.name(key),
                Retention={"Mode": retention.mode, "RetainUntilDate": retention.until},
            )

    # -- multipart uploads ---------------------------------------------------------

    async def abort(self, key: str, upload_id: str, *, retry_delays: Sequence[float] = ()) -> None:
        """Abort a multipart upload; an unknown upload is not an error.

        Aborting is repeated once if parts arrived meanwhile, and after each
        of ``retry_delays`` while the request itself fails.
        """
        for delay in (*retry_delays, None):
            try:
                await self._abort_once(key, upload_id)
                return
            except StorageError as exc:
                if delay is None:
                    raise
                log.info("abort of %s failed (%s); retrying in %g s", self.where(key), exc, delay)
            await asyncio.sleep(delay)

    async def _abort_once(self, key: str, upload_id: str) -> None:
        client = await self.client()
        name = self.name(key)
        for _ in range(2):
            try:
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
                listing = await client.list_parts(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except ClientError as exc:
                if error_code(exc) == "NoSuchUpload":
                    return
                raise self.error(exc, key) from exc
            except TRANSPORT_ERRORS as exc:
                raise self.error(exc, key) from exc
            if not listing.get("Parts"):
                return
        raise StorageError(f"upload {upload_id} of {self.where(key)} still holds parts after abort")

    # -- internals -------------------------------------------------------------------

    async def _open(self) -> BotoS3Client:
        stack = AsyncExitStack()
        try:
            session = AioSession(profile=self.config.profile)
            legacy = await self._credentials(session)
            cfg = self.config  # with the s3cmd config's settings, if it was chosen
            options: dict[str, Any] = {}
            botocore_config = cfg.botocore_config()
            if legacy is not None:
                if legacy.verify is not None:
                    options["verify"] = legacy.verify
                if legacy.proxies():
                    botocore_config = botocore_config.merge(Config(proxies=legacy.proxies()))
            client: BotoS3Client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=cfg.endpoint_url,
                    aws_access_key_id=cfg.access_key_id,
                    aws_secret_access_key=cfg.secret_access_key,
                    aws_session_token=cfg.session_token,
                    config=botocore_config,
                    **options,
                )
            )
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {self.config.profile!r} not found") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot set up the S3 client for {self.url}: {exc}") from exc
        install_trace(client.meta.events)
        self._stack = stack
        return client

    async def _credentials(self, session: AioSession) -> S3cmdConfig | None:
        """Say at -v which credentials sign the requests; the s3cmd config if
        it is they (self.config then carries its settings).

        The AWS chain (environment, ~/.aws, profile, roles) keeps precedence;
        s3cmd's file is the legacy scripts' setup, read only as a fallback.
        """
        cfg = self.config
        if cfg.access_key_id is not None:
            log.info("S3 credentials: given in the S3 configuration")
            return None
        found = await session.get_credentials()
        if found is not None:
            log.info("S3 credentials: from the AWS chain (%s)", found.method)
            asked = s3cmd.locate(cfg.s3cfg)
            if asked is not None and asked[2]:
                log.warning(
                    "s3cmd config %s not used: AWS credentials (%s) take precedence",
                    asked[1],
                    found.method,
                )
            return None
        legacy = s3cmd.load(cfg.s3cfg)
        if legacy is None or not legacy.has_credentials:
            where = f"; {legacy.path} has no access_key" if legacy else ""
            log.info("S3 credentials: none found (AWS variables, ~/.aws, roles, ~/.s3cfg%s)", where)
            return None
        self.config = legacy.applied(cfg)
        log.info("S3 credentials: from %s", legacy.path)
        return legacy


def server_date(response: Mapping[str, Any]) -> datetime | None:
    """The ``Date`` header of a botocore response, as an aware datetime."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not isinstance(header, str):
        return None
    try:
        return parsedate_to_datetime(header).astimezone(UTC)
    except (TypeError, ValueError):
        return None
