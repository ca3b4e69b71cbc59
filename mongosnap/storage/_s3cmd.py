"""s3cmd's config file (``~/.s3cfg``), the legacy scripts' S3 settings.

Read only when no AWS credentials are found (S3Client decides): a user moving
from the scripts has ``s3cmd --configure``'s file and no AWS variables. The
file is INI with a ``[default]`` section; like s3cmd, a value may be quoted
("...") or name an environment variable ($NAME). Secrets never reach a
message: a malformed line is named by its number only.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .._errors import UsageError
from ._s3_config import S3Config

ENV = "S3CMD_CONFIG"
DEFAULT = "~/.s3cfg"
AWS_HOST = "s3.amazonaws.com"  # s3cmd's default host_base: botocore's own AWS endpoint
LOCATIONS = {"US": "us-east-1", "EU": "eu-west-1", "": None}
_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class S3cmdConfig:
    """What mongosnap takes from an s3cmd config; ``path`` as shown in messages."""

    path: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    addressing_style: Literal["path", "virtual"] = "virtual"
    region: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    verify: bool | str | None = None  # False, a CA bundle's path, or botocore's default
    proxy: str | None = None

    @property
    def has_credentials(self) -> bool:
        return self.access_key is not None

    def applied(self, config: S3Config, environ: Any = os.environ) -> S3Config:
        """``config`` with this file's credentials, and its settings where
        neither ``config`` nor the AWS variables give one."""
        fields: dict[str, Any] = {
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "session_token": self.access_token,
        }
        if config.endpoint_url is None and not _aws_endpoint(environ):
            fields["endpoint_url"] = self.endpoint_url
        if config.addressing_style == "auto":
            fields["addressing_style"] = self.addressing_style
        if config.region is None and not _aws_region(environ):
            fields["region"] = self.region
        if config.sse is None:
            fields["sse"], fields["sse_kms_key_id"] = self.sse, self.sse_kms_key_id
        return replace(config, **fields)

    def proxies(self) -> dict[str, str] | None:
        return {"http": self.proxy, "https": self.proxy} if self.proxy else None


def _aws_endpoint(environ: Any) -> bool:
    return bool(environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"))


def _aws_region(environ: Any) -> bool:
    return bool(environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"))


def locate(path: str | None, environ: Any = os.environ) -> tuple[str, str, bool] | None:
    """(path to open, path to show, whether it was asked for) of the s3cmd
    config to read: ``path``, else $S3CMD_CONFIG, else ~/.s3cfg if it exists."""
    if path:
        return path, path, True
    if environ.get(ENV):
        return environ[ENV], f"${ENV} ({environ[ENV]})", True
    default = os.path.expanduser(DEFAULT)
    return (default, DEFAULT, False) if os.path.exists(default) else None


def load(path: str | None = None, environ: Any = os.environ) -> S3cmdConfig | None:
    """The s3cmd config ``locate`` finds, parsed; None if there is none.

    UsageError (exit 2) names the file when it cannot be read or is malformed.
    """
    found = locate(path, environ)
    if found is None:
        return None
    real, shown, _ = found
    try:
        with open(real, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read s3cmd config {shown}: {reason}") from None
    return parse(text, shown, environ)


def parse(text: str, shown: str, environ: Any = os.environ) -> S3cmdConfig:
    """The settings of an s3cmd config's [default] section."""
    values = _section(text, shown)

    def get(name: str) -> str:
        value = values.get(name, "").strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if value.startswith("$"):  # s3cmd: the value of an environment variable
            value = environ.get(value[1:], "")
        return value

    def flag(name: str, default: bool) -> bool:
        value = get(name).lower()
        if not value:
            return default
        if value in ("1", "yes", "true", "on"):
            return True
        if value in ("0", "no", "false", "off"):
            return False
        raise UsageError(f"{name} in s3cmd config {shown} is not yes or no: {value!r}")

    access, secret = get("access_key") or None, get("secret_key") or None
    if (access is None) != (secret is None):
        raise UsageError(f"s3cmd config {shown} has one of access_key and secret_key, not both")
    kms_key = get("kms_key") or None
    sse: Literal["AES256", "aws:kms"] | None = None
    if kms_key:  # s3cmd: a KMS key wins over server_side_encryption
        sse = "aws:kms"
    elif flag("server_side_encryption", False):
        sse = "AES256"
    return S3cmdConfig(
        path=shown,
        access_key=access,
        secret_key=secret,
        access_token=get("access_token") or None,
        endpoint_url=_endpoint(get("host_base"), flag("use_https", True), shown),
        addressing_style="virtual" if "%(bucket)s" in get("host_bucket") else "path",
        region=_region(get("bucket_location"), shown),
        sse=sse,
        sse_kms_key_id=kms_key,
        verify=False if not flag("check_ssl_certificate", True) else get("ca_certs_file") or None,
        proxy=_proxy(get("proxy_host"), get("proxy_port"), shown),
    )


def _section(text: str, shown: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=shown)
    except configparser.MissingSectionHeaderError as exc:
        raise UsageError(
            f"s3cmd config {shown} is malformed: line {exc.lineno} comes before"
            " the [default] section"
        ) from None
    except configparser.ParsingError as exc:  # its message quotes the line: never shown
        lines = ", ".join(str(number) for number, _ in exc.errors)
        raise UsageError(
            f"s3cmd config {shown} is malformed: line {lines} is not 'name = value'"
            " (content not shown)"
        ) from None
    except configparser.Error as exc:
        raise UsageError(f"s3cmd config {shown} is malformed: {type(exc).__name__}") from None
    if not parser.has_section("default"):
        raise UsageError(f"s3cmd config {shown} has no [default] section")
    return dict(parser.items("default"))


def _endpoint(host: str, https: bool, shown: str) -> str | None:
    """The endpoint URL of host_base; None for s3cmd's default, AWS (botocore
    then picks the bucket's regional endpoint)."""
    host = re.sub(r"^https?://", "", host).rstrip("/")
    if not host or host == AWS_HOST:
        return None
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
        raise UsageError(f"host_base in s3cmd config {shown} is not HOST[:PORT]: {host!r}")
    return f"{'https' if https else 'http'}://{host}"


def _region(location: str, shown: str) -> str | None:
    """s3cmd's bucket_location: a region, or the legacy names US and EU."""
    if location in LOCATIONS:
        return LOCATIONS[location]
    if not _REGION.fullmatch(location):
        raise UsageError(
            f"bucket_location in s3cmd config {shown} is not a region name: {location!r}"
        )
    return location


def _proxy(host: str, port: str, shown: str) -> str | None:
    if not host:
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"proxy_port in s3cmd config {shown} is not a port number: {port!r}")
    host = re.sub(r"^https?://", "", host).rstrip("/")
    return f"http://{host}:{port}"
