"""Session fixtures: real servers for the tests (see scripts/testbed.py, docs/testbed.md).

``testbed``       the started Testbed (binaries are built first if missing)
``mongo_uri``     FerretDB's ``mongodb://`` URI
``s3_endpoint``   an S3Endpoint, parametrized over "moto" and "versitygw"
``new_bucket``    factory: ``new_bucket(endpoint) -> bucket name`` (fresh, emptied afterwards)
``new_locked_bucket`` factory: like ``new_bucket``, the bucket created with Object Lock
                  enabled (versioned); locked versions are removed bypassing governance
``new_database``  a fresh database name on FerretDB, dropped afterwards
``destination``   a local directory, then a fresh bucket on moto, then on versitygw
``mongo_oplog_uri`` a FerretDB that keeps an oplog (capped ``local.oplog.rs``)
``new_oplog_server`` factory: ``new_oplog_server(oplog_size) -> URI`` of a fresh
                  oplog FerretDB (e.g. a tiny oplog that rolls over), stopped afterwards

With $MONGOSNAP_TESTBED_STATE set (``eval "$(python scripts/testbed.py env)"``
after ``python scripts/testbed.py start``) the tests use those running servers
instead of starting their own.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import Destination, make_destination, s3_client
from pymongo import MongoClient


def _load_testbed() -> ModuleType:
    """Import scripts/testbed.py by path; ``import testbed`` works afterwards."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "testbed.py"
    spec = importlib.util.spec_from_file_location("testbed", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


testbed_module = _load_testbed()
Testbed = testbed_module.Testbed
S3Endpoint = testbed_module.S3Endpoint


@pytest.fixture(scope="session")
def testbed() -> Iterator[Any]:
    state = os.environ.get(testbed_module.STATE_ENV)
    if state:
        running = Testbed.from_state(Path(state), owned=False)
        running.check()
        yield running
        return
    testbed_module.build()
    with Testbed() as started:
        yield started


@pytest.fixture(scope="session")
def mongo_uri(testbed: Any) -> str:
    return str(testbed.mongo_uri)


@pytest.fixture(scope="session")
def mongo_auth_uri(testbed: Any) -> str:
    """A FerretDB that enforces authentication; the URI carries valid credentials."""
    return str(testbed.mongo_auth_uri)


@pytest.fixture(
    scope="session",
    params=[pytest.param("moto", id="moto"), pytest.param("versitygw", id="versitygw")],
)
def s3_endpoint(request: pytest.FixtureRequest, testbed: Any) -> Any:
    return testbed.s3[request.param]


@pytest.fixture
def new_bucket() -> Iterator[Callable[[Any], str]]:
    created: list[tuple[Any, str]] = []

    def make(endpoint: Any) -> str:
        name = f"mongosnap-test-{uuid.uuid4().hex[:16]}"
        s3_client(endpoint).create_bucket(Bucket=name)
        created.append((endpoint, name))
        return name

    yield make
    for endpoint, name in created:
        try:
            _empty_and_delete(s3_client(endpoint), name)
        except Exception as exc:  # the servers go away with the session anyway
            warnings.warn(f"could not remove bucket {name} on {endpoint.name}: {exc}", stacklevel=1)


@pytest.fixture
def new_locked_bucket() -> Iterator[Callable[[Any], str]]:
    created: list[tuple[Any, str]] = []

    def make(endpoint: Any) -> str:
        name = f"mongosnap-lock-{uuid.uuid4().hex[:16]}"
        s3_client(endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        created.append((endpoint, name))
        return name

    yield make
    for endpoint, name in created:
        try:
            _empty_locked_and_delete(s3_client(endpoint), name)
        except Exception as exc:  # the servers go away with the session anyway
            warnings.warn(f"could not remove bucket {name} on {endpoint.name}: {exc}", stacklevel=1)


def _empty_locked_and_delete(client: Any, bucket: str) -> None:
    """Every version and delete marker, GOVERNANCE locks bypassed (tests use
    no COMPLIANCE lock: nothing could remove it before it ends)."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            vid = item["VersionId"]
            version = {} if vid in (None, "null") else {"VersionId": vid}
            client.delete_object(
                Bucket=bucket, Key=item["Key"], BypassGovernanceRetention=True, **version
            )
    client.delete_bucket(Bucket=bucket)


def _empty_and_delete(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def _mongo_admin(mongo_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    yield client
    client.close()


@pytest.fixture
def new_database(_mongo_admin: MongoClient[dict[str, Any]]) -> Iterator[str]:
    name = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    yield name
    _mongo_admin.drop_database(name)


@pytest.fixture(params=["local", "moto", "versitygw"])
def destination(
    request: pytest.FixtureRequest, tmp_path: Path, testbed: Any, new_bucket: Any
) -> Destination:
    return make_destination(request.param, tmp_path, testbed, new_bucket)


@pytest.fixture(scope="session")
def mongo_oplog_uri(testbed: Any) -> str:
    """A FerretDB started with --repl-set-name and a capped local.oplog.rs."""
    if not testbed.mongo_oplog_uri:
        raise RuntimeError("this testbed has no oplog FerretDB; restart it with scripts/testbed.py")
    return str(testbed.mongo_oplog_uri)


@pytest.fixture
def new_oplog_server(testbed: Any) -> Iterator[Callable[[int], str]]:
    started: list[str] = []

    def make(oplog_size: int) -> str:
        name = f"ferretdb-oplog-{uuid.uuid4().hex[:8]}"
        uri = str(testbed.start_oplog_ferretdb(name, oplog_size))
        started.append(name)
        return uri

    yield make
    for name in started:
        testbed.stop_server(name)
