"""The documented crontab lines, run as cron runs them, from a wheel installed
in a venv outside the clone (docs/operations.md, sections 1 and 3).

The lines are read from examples/deploy/crontab and the docs, never retyped:
only the deployment's names (paths, bucket, host, database) are swapped for
the test bed's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import make_destination, seed, server_documents
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
CRONTAB = ROOT / "examples" / "deploy" / "crontab"
OPERATIONS = ROOT / "docs" / "operations.md"
LEGACY = re.compile(r"^(?:# )?((?:\S+[ \t]+){5}mongosnap-(?:backup|healer)[ \t].*)$", re.MULTILINE)
SIZES = {"repositories": 30, "users": 12}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """An installation step; without PYTHONPATH, which may name the clone, where
    pip would find mongosnap "already installed" (its egg-info) and skip it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding opt/mongosnap: a venv with only the wheel built from this
    checkout in it; its dependencies come from this interpreter's site-packages
    (offline), added as a plain path so that no editable install of mongosnap
    there is picked up."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "src"  # a copy: building in the clone would leave build/ there
    shutil.copytree(
        ROOT / "mongosnap", source / "mongosnap", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(root),
            str(source),
        ]
    )
    [wheel] = root.glob("mongosnap-*.whl")
    venv = root / "opt" / "mongosnap"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return root


@dataclass
class Deployment:
    """The names the docs use, and what they stand for here."""

    root: Path
    names: dict[str, str] = field(default_factory=dict)

    def localize(self, text: str) -> str:
        for name in sorted(self.names, key=len, reverse=True):  # db.internal:27017 first
            text = text.replace(name, self.names[name])
        return text


def crontab_variables(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines if "=" in line.split()[0])


def crontab_lines(text: str) -> dict[str, str]:
    """Each active line's command (after the five time fields), by its subcommand."""
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]:
            command = line.split(None, 5)[5]
            found[shlex.split(command)[1]] = command
    return found


def legacy_lines(text: str) -> dict[str, str]:
    """The legacy scripts' lines (commented out in the crontab), by command name."""
    commands = [match.split(None, 5)[5] for match in LEGACY.findall(text)]
    return {command.split()[0]: command for command in commands}


def documented_install() -> str:
    """Section 1's command that puts the commands on cron's PATH."""
    section = OPERATIONS.read_text().split("## 1. Install", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"^ln -s .*?[^\\]$", section, re.MULTILINE | re.DOTALL)
    assert command is not None, "section 1 links no command into /usr/local/bin"
    return command.group(0)


@pytest.fixture
def deployment(
    installed: Path,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    mongo_uri: str,
    new_database: str,
) -> Iterator[Deployment]:
    destination = make_destination("moto", tmp_path, testbed, new_bucket)
    endpoint = destination.endpoint
    etc, prom, bin_dir = tmp_path / "etc", tmp_path / "textfile", tmp_path / "usr-local-bin"
    for directory in (etc, prom, bin_dir):
        directory.mkdir()
    (etc / "uri").write_text(mongo_uri + "\n")
    (etc / "uri").chmod(0o600)
    # S3 as the crontab says: through AWS_CONFIG_FILE, no AWS variable.
    (etc / "aws-config").write_text(
        "[default]\n"
        f"region = {endpoint.region}\n"
        f"aws_access_key_id = {endpoint.access_key}\n"
        f"aws_secret_access_key = {endpoint.secret_key}\n"
        f"endpoint_url = {endpoint.endpoint_url}\n"
        "s3 =\n    addressing_style = path\n"
    )
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    deployment = Deployment(
        tmp_path,
        {
            "/opt/mongosnap": str(installed / "opt" / "mongosnap"),
            "/usr/local/bin": str(bin_dir),
            "/etc/mongosnap": str(etc),
            "/var/lib/node_exporter/textfile": str(prom),
            "s3://backups/nightly": destination.url,
            "db.internal:27017": host,
            "db.internal": host,
            "tsuru": new_database,
        },
    )
    yield deployment


def cron(deployment: Deployment, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as cron runs it: the crontab's variables, a minimal environment."""
    variables = crontab_variables(CRONTAB.read_text())
    env = {"HOME": str(deployment.root), "LOGNAME": "mongosnap"}
    env |= {name: deployment.localize(value) for name, value in variables.items()}
    return subprocess.run(
        [env["SHELL"], "-c", deployment.localize(command)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=deployment.root,
    )


def assert_installed_from(deployment: Deployment, venv: Path) -> None:
    """The linked commands run the venv's Python, which imports the wheel's mongosnap."""
    for command in ("mongosnap", "mongosnap-backup", "mongosnap-healer"):
        script = (deployment.root / "usr-local-bin" / command).resolve()
        assert script.parent == venv / "bin", command
    python = (venv / "bin" / "mongosnap-backup").read_text().splitlines()[0].removeprefix("#!")
    code = "import mongosnap.legacy; print(mongosnap.__file__)"
    where = subprocess.run([python, "-c", code], capture_output=True, text=True, env={}, cwd="/")
    assert where.stdout.startswith(str(venv / "lib")), where


def documents(uri: str, database: str, name: str) -> list[bytes]:
    return sorted(server_documents(uri, database, name))


def drop(uri: str, database: str, name: str) -> None:
    with MongoClient(uri) as client:
        client[database].drop_collection(name)


def test_the_docs_and_the_crontab_give_the_same_legacy_lines() -> None:
    in_docs = legacy_lines(OPERATIONS.read_text())
    assert set(in_docs) == {"mongosnap-backup", "mongosnap-healer"}
    assert in_docs == legacy_lines(CRONTAB.read_text())


def test_the_documented_crontab_runs_from_an_installed_wheel(
    deployment: Deployment, installed: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, SIZES)
    before = {name: documents(mongo_uri, new_database, name) for name in SIZES}
    linked = cron(deployment, documented_install())
    assert linked.returncode == 0, linked.stderr
    assert_installed_from(deployment, installed / "opt" / "mongosnap")

    lines, legacy = crontab_lines(CRONTAB.read_text()), legacy_lines(CRONTAB.read_text())
    quiet = cron(deployment, lines["backup"])
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    done = cron(deployment, legacy["mongosnap-backup"])
    assert done.returncode == 0, done.stderr
    assert re.search(r"Uploaded \S+-mongodb-dump\.tar\.gz to s3://", done.stdout), done.stdout

    drop(mongo_uri, new_database, "users")
    quiet = cron(deployment, lines["heal"])
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert documents(mongo_uri, new_database, "users") == before["users"]

    drop(mongo_uri, new_database, "repositories")
    healed = cron(deployment, legacy["mongosnap-healer"])
    assert healed.returncode == 0, healed.stderr
    assert f"Healed {new_database}.repositories from " in healed.stdout
    assert documents(mongo_uri, new_database, "repositories") == before["repositories"]
    healthy = cron(deployment, legacy["mongosnap-healer"])
    assert healthy.returncode == 0 and healthy.stdout.startswith("Nothing to heal"), healthy

    quiet = cron(deployment, lines["prune"])
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    written = sorted(p.name for p in (deployment.root / "textfile").iterdir())
    assert written == ["mongosnap_backup.prom", "mongosnap_heal.prom", "mongosnap_prune.prom"]


def test_the_legacy_lines_fail_as_the_scripts_did(
    deployment: Deployment, installed: Path, new_database: str
) -> None:
    """Exit 1 and a FATAL line: no archive, no such database; usage for too few words."""
    assert cron(deployment, documented_install()).returncode == 0
    legacy = legacy_lines(CRONTAB.read_text())
    empty = deployment.root / "empty"
    empty.mkdir()
    deployment.names["s3://backups/nightly"] = str(empty)

    nothing = cron(deployment, legacy["mongosnap-healer"])
    assert (nothing.returncode, nothing.stderr) == (1, "FATAL: no backups found!\n")

    deployment.names["tsuru"] = f"{new_database}_none"
    missing = cron(deployment, legacy["mongosnap-backup"])
    assert missing.returncode == 1 and missing.stdout.startswith("Backing up ")
    assert missing.stderr.startswith("FATAL: ") and missing.stderr.count("\n") == 1, missing

    for command in ("mongosnap-backup", "mongosnap-healer"):
        usage = cron(deployment, shlex.join(legacy[command].split()[:3]))
        assert usage.returncode == 1 and usage.stdout.startswith(f"Usage: {command} <bucket-path>")
