"""MONGOSNAP_S3_TRACE: record every S3 operation a process makes, for audits.

When the variable names a file, each S3 API call (PutObject, UploadPart,
ListObjectsV2...) appends one JSON line ``{"operation", "bucket", "key",
"prefix", "range", "source"}`` (``source``: what a server-side copy reads)
to it before the request is sent, retries counted once. It shows which
operations, hence which IAM actions, a command needs (docs/operations.md,
"Least privilege"); the policy test reads it. Nothing secret is written: no
header, no body, no credential.
"""

from __future__ import annotations

import json
import os
from typing import Any

TRACE_ENV = "MONGOSNAP_S3_TRACE"


class _Recorder:
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, *, model: Any, params: dict[str, Any], **_: Any) -> None:
        record = {
            "operation": model.name,
            "bucket": params.get("Bucket"),
            "key": params.get("Key"),
            "prefix": params.get("Prefix"),
            "range": params.get("Range"),
            "source": _source(params.get("CopySource")),
        }
        # Opened per call: a trace is for audits, and this keeps no handle open.
        with open(self.path, "a", encoding="utf-8") as trace:
            trace.write(json.dumps(record) + "\n")


def _source(copied: Any) -> str | None:
    """``bucket/key`` a server-side copy reads (it needs GetObject there)."""
    if isinstance(copied, dict):
        return f"{copied.get('Bucket')}/{copied.get('Key')}"
    return copied if isinstance(copied, str) else None


def install_trace(events: Any) -> None:
    """Register the recorder on a client's event system if MONGOSNAP_S3_TRACE is set."""
    path = os.environ.get(TRACE_ENV)
    if path:
        events.register("before-parameter-build.s3", _Recorder(path))
