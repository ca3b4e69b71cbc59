"""--uri-file's permission warning, run as a non-root user against real files.

The tests run as root; the CLI runs as uid 10001 (the container image's user)
with its own group and a supplementary group, reading files chowned and
chmod'ed as Kubernetes and an operator leave them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import seed

from mongosnap.cli import _logging, main
from mongosnap.cli._common import read_uri_file

UID = GID = 10001  # the image's user and the pod's runAsGroup/fsGroup
SUPPLEMENTARY = 10003  # another group of the process
STRANGER = 10002  # a group the process is not in
WARNING = "is readable by group or others; chmod 600 it"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 10001 can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="mongosnap-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_pod_user(work: Callable[[], int]) -> tuple[int, str]:
    """(exit code, stderr) of ``work()`` in a forked child that became uid
    10001 with the pod's groups, as a container's process is. A fork, not a
    new interpreter: this one lives under /root, which uid 10001 cannot read;
    what ``work`` needs is imported before the fork."""
    assert os.geteuid() == 0, "these tests chown files and switch users: run them as root"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.dup2(write_end, 2)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (pytest had replaced it)
            os.setgroups([GID, SUPPLEMENTARY])
            os.setgid(GID)
            os.setuid(UID)
            os.environ["HOME"] = "/nonexistent"
            code = work()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        stderr = pipe.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), stderr


def kubernetes_secret(root: Path, uri: str) -> Path:
    """A Secret volume as the kubelet writes it with fsGroup: the file in a
    timestamped directory, ``..data`` and the key as symlinks; root-owned,
    the pod's group, 0440."""
    stamped = root / "..2024_05_01_03_30_00.000000001"
    stamped.mkdir()
    (stamped / "uri").write_text(uri + "\n")
    os.chown(stamped / "uri", 0, GID)
    (stamped / "uri").chmod(0o440)
    os.chown(stamped, 0, GID)
    stamped.chmod(0o755)
    (root / "..data").symlink_to(stamped.name)
    (root / "uri").symlink_to("..data/uri")
    return root / "uri"


def test_a_kubernetes_secret_with_fsgroup_is_read_without_warning(
    shared_dir: Path, mongo_uri: str, new_database: str
) -> None:
    """The manifests' pod: a backup as uid 10001 reads its Secret silently."""
    seed(mongo_uri, new_database, {"apps": 5})
    secret = shared_dir / "etc-mongosnap"
    secret.mkdir(mode=0o755)
    path = kubernetes_secret(secret, mongo_uri)
    warm_up = shared_dir / "warm-up"  # as root first: every module loaded before the fork
    assert main(["backup", str(warm_up), "--uri", mongo_uri, new_database, "-q"]) == 0
    out = shared_dir / "out"
    out.mkdir()
    os.chown(out, UID, GID)
    argv = ["backup", str(out), "--uri-file", str(path), new_database]
    code, stderr = as_pod_user(lambda: main(argv))
    assert (code, stderr) == (0, "")
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in written if p.name.endswith(".tar.gz")]
    assert {p.stat().st_uid for p in written} == {UID}


# (owner, group, mode, warned?)
CASES = [
    pytest.param(0, GID, 0o440, False, id="root:own-group-0440"),
    pytest.param(0, GID, 0o640, False, id="root:own-group-0640"),
    pytest.param(0, SUPPLEMENTARY, 0o440, False, id="root:supplementary-group-0440"),
    pytest.param(UID, GID, 0o600, False, id="own-file-0600"),
    pytest.param(UID, GID, 0o400, False, id="own-file-0400"),
    pytest.param(UID, GID, 0o640, True, id="own-file-group-readable"),
    pytest.param(UID, STRANGER, 0o640, True, id="own-file-foreign-group"),
    pytest.param(0, GID, 0o444, True, id="root:own-group-world-readable"),
    pytest.param(0, STRANGER, 0o444, True, id="world-readable-only"),
    pytest.param(UID, GID, 0o604, True, id="own-file-world-readable"),
]


@pytest.fixture(scope="module")
def warnings_by_case() -> Iterator[dict[str, str]]:
    """Each case's file read with read_uri_file as uid 10001, all in one child."""
    root = Path(tempfile.mkdtemp(prefix="mongosnap-perm-"))
    root.chmod(0o755)
    for case in CASES:
        owner, group, mode, _ = case.values
        path = root / str(case.id)
        path.write_text("mongodb://h/\n")
        os.chown(path, owner, group)
        path.chmod(mode)

    def read_all() -> int:
        _logging.configure()
        read = [read_uri_file(str(root / str(case.id))) for case in CASES]
        return 0 if read == ["mongodb://h/"] * len(CASES) else 1

    try:
        code, stderr = as_pod_user(read_all)
    finally:
        shutil.rmtree(root)
    assert code == 0, stderr
    yield {
        str(case.id): line for case in CASES for line in stderr.splitlines() if str(case.id) in line
    }


@pytest.mark.parametrize(("owner", "group", "mode", "warned"), CASES)
def test_the_group_may_read_only_when_that_is_how_the_process_reads(
    warnings_by_case: dict[str, str],
    request: pytest.FixtureRequest,
    owner: int,
    group: int,
    mode: int,
    warned: bool,
) -> None:
    line = warnings_by_case.get(request.node.callspec.id)
    if warned:
        assert line is not None and line.endswith(WARNING), line
    else:
        assert line is None
