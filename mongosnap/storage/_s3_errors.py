"""Translation of botocore/aiohttp failures into mongosnap's storage errors.

Messages name the bucket, the key and the endpoint host; never credentials,
and never the raw request (which botocore's debug logging would show).
"""

from __future__ import annotations

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from .._errors import (
    AccessDenied,
    BucketNotFound,
    LockUnavailable,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)

# Error codes that mean "these credentials may not do this". XAdminUserNotFound
# is what versitygw answers (with HTTP 404) for an unknown access key id.
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "XAdminUserNotFound",
    }
)

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    aiohttp.ClientError,
    TimeoutError,
)
"""Everything besides ClientError that an S3 call can raise on failure."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def is_bare_head_error(exc: BaseException) -> bool:
    """A HEAD response carries no body: its "code" is only the HTTP status."""
    return isinstance(exc, ClientError) and error_code(exc) in ("403", "404", "Forbidden")


def is_not_implemented(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and (
        error_code(exc) == "NotImplemented" or http_status(exc) == 501
    )


def translate(exc: BaseException, *, bucket: str, where: str, host: str) -> StorageError:
    """The StorageError for a failed S3 call on ``where`` (an s3:// URL)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        return _client_error(exc, bucket=bucket, where=where, host=host)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"no usable S3 credentials for {where}: configure an access key, a profile,"
            " the AWS_* environment variables or s3cmd's ~/.s3cfg"
        )
    if isinstance(
        exc,
        EndpointConnectionError
        | ConnectTimeoutError
        | ReadTimeoutError
        | ConnectionClosedError
        | ResponseStreamingError
        | aiohttp.ClientError
        | TimeoutError,
    ):
        return StorageError(f"cannot reach the S3 endpoint {host} ({type(exc).__name__})")
    return StorageError(f"S3 request for {where} at {host} failed: {exc}")


def _client_error(exc: ClientError, *, bucket: str, where: str, host: str) -> StorageError:
    code, status = error_code(exc), http_status(exc)
    if code == "NoSuchBucket":
        return BucketNotFound(f"bucket {bucket!r} does not exist at {host}")
    if code == "InvalidObjectState":  # before the 403 test: AWS answers it with 403
        tier = exc.response.get("Error", {}).get("StorageClass") or "an archive storage class"
        return ObjectArchived(f"{where} is in {tier} and cannot be read until it is restored")
    if code in DENIED_CODES or status == 403:
        return AccessDenied(f"access denied to {where} at {host} ({code or status})")
    if code in ("NoSuchKey", "NotFound") or (status == 404 and code == "404"):
        return ObjectNotFound(f"{where} does not exist")
    if code == "PreconditionFailed" or status == 412:
        return ObjectExists(f"{where} already exists")
    if code == "ConditionalRequestConflict":
        return ObjectExists(f"{where} is being created by another upload")
    message = exc.response.get("Error", {}).get("Message", "")
    if "ObjectLockConfiguration" in message:  # a locked write to a bucket without lock
        return LockUnavailable(f"{where}: bucket {bucket!r} at {host} has no Object Lock")
    return StorageError(f"S3 error on {where} at {host}: {code or status} {message}".rstrip())
