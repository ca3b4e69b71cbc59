"""examples/deploy/: every mongosnap command line uses real flags; systemd units verify."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from mongosnap.cli import build_parser, main

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"
UNITS = sorted(p.name for p in DEPLOY.iterdir() if p.suffix in (".service", ".timer"))
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def crontab_commands(text: str) -> list[list[str]]:
    """The command of each active crontab line (after the five time fields)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    schedules = [line for line in lines if "=" not in line.split()[0]]
    return [shlex.split(line)[5:] for line in schedules]


def unit_commands(text: str) -> list[list[str]]:
    execs = [line for line in text.splitlines() if line.startswith("Exec")]
    return [shlex.split(line.split("=", 1)[1]) for line in execs]


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a CronJob or a Deployment."""
    spec = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def manifest_commands(text: str) -> list[list[str]]:
    pod = pod_spec(yaml.safe_load(text))
    return [container["command"] for container in pod["containers"]]


def all_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path in sorted(p for p in DEPLOY.iterdir() if p.is_file()):  # not iam/
        text = path.read_text()
        if path.name == "crontab":
            commands = crontab_commands(text)
        elif path.suffix == ".yaml":
            commands = manifest_commands(text)
        else:
            commands = unit_commands(text)
        found += [(path.name, argv) for argv in commands]
    return found


def flag_problems(argv: list[str]) -> list[str]:
    """What is wrong with a ``mongosnap ...`` command line, by the CLI's own parser."""
    if Path(argv[0]).name != "mongosnap":
        return [f"not a mongosnap command: {argv[0]}"]
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices.get(argv[1])
    if sub is None:
        return [f"no command {argv[1]!r}"]
    known = sub._option_string_actions
    # Exact names only: argparse would also accept abbreviations.
    problems = [f"unknown flag {w}" for w in argv[2:] if w.startswith("-") and w not in known]
    try:
        extra = parser.parse_known_args(argv[1:])[1]
    except Exception as exc:  # the CLI's parser raises instead of exiting
        return [*problems, str(exc)]
    problems += [f"unknown flag {w}" for w in extra if w.startswith("-")]
    return problems


def test_each_deploy_file_holds_mongosnap_commands() -> None:
    files = {name for name, _ in all_commands()}
    assert files == {
        p.name for p in DEPLOY.iterdir() if p.is_file() and p.name != "mongosnap-backup.timer"
    }
    assert {argv[1] for _, argv in all_commands()} == {"backup", "heal", "prune", "oplog"}


def test_the_oplog_archiver_restarts_and_never_runs_twice() -> None:
    """One archiver per destination; it is restarted whenever it exits."""
    deployment = yaml.safe_load((DEPLOY / "oplog-deployment.yaml").read_text())
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_spec(deployment)["restartPolicy"] == "Always"
    unit = (DEPLOY / "mongosnap-oplog.service").read_text().splitlines()
    assert "Restart=always" in unit and "SuccessExitStatus=143" in unit
    [argv] = unit_commands("\n".join(unit))
    assert argv[1] == "oplog" and "--list" not in argv


@pytest.mark.parametrize(("name", "argv"), all_commands(), ids=lambda v: str(v)[:40])
def test_every_flag_is_a_real_flag(name: str, argv: list[str]) -> None:
    assert flag_problems(argv) == [], f"{name}: {shlex.join(argv)}"
    assert "--uri" not in argv, "the URI (and its password) would show in ps"


@pytest.mark.parametrize(
    "line",
    [
        "mongosnap backup s3://b h db --metrics-fil x",  # an abbreviation
        "mongosnap heal s3://b h db c --no-such-flag",
        "mongosnap prune s3://b --interval 5",  # a flag of another command
        "mongosnap backups s3://b h db",
    ],
)
def test_the_flag_check_catches_mistakes(line: str) -> None:
    assert flag_problems(shlex.split(line))


def test_unit_commands_expand_as_systemd_does() -> None:
    """${CREDENTIALS_DIRECTORY} stays one word after systemd's expansion."""
    for name, argv in all_commands():
        if "${CREDENTIALS_DIRECTORY}/mongodb-uri" in argv:
            assert name.endswith(".service")
            assert argv[argv.index("${CREDENTIALS_DIRECTORY}/mongodb-uri") - 1] == "--uri-file"


def systemd_root(tmp_path: Path) -> Path:
    """A file-system root holding the system's units, ours, and an installed mongosnap."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(DEPLOY / unit, root / "etc/systemd/system" / unit)
    (root / "usr/local/bin").mkdir(parents=True)
    installed = Path(sysconfig.get_path("scripts")) / "mongosnap"  # this environment's
    shutil.copy(installed, root / "usr/local/bin/mongosnap")
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup installs it (package systemd)"
    return subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", str(root / "etc/systemd/system" / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    done = verify(systemd_root(tmp_path), unit)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_systemd_verify_rejects_a_broken_unit(tmp_path: Path) -> None:
    root = systemd_root(tmp_path)
    broken = (DEPLOY / "mongosnap-backup.timer").read_text().replace("03:30:00", "27:30:00")
    (root / "etc/systemd/system/mongosnap-backup.timer").write_text(broken)
    done = verify(root, "mongosnap-backup.timer")
    assert done.returncode != 0 or done.stderr.strip()


def test_the_crontab_heal_line_runs(tmp_path: Path) -> None:
    """A deploy line parses all the way into a run: an unreadable URI file is a usage error."""
    _, argv = next((n, a) for n, a in all_commands() if n == "crontab" and a[1] == "heal")
    argv = [str(tmp_path / "missing") if w == "/etc/mongosnap/uri" else w for w in argv]
    argv = [w for w in argv if not w.endswith(".prom")]
    argv.remove("--metrics-file")
    assert main(argv[1:]) == 2


def test_install_from_a_clone(tmp_path: Path) -> None:
    """README's `pip install .` builds the package with every module and the command."""
    root = Path(__file__).resolve().parent.parent
    target = tmp_path / "site"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--target", str(target), str(root)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "bin" / "mongosnap").exists()
    for module in ("metrics.py", "cli/check.py", "cli/_logging.py", "py.typed"):
        assert (target / "mongosnap" / module).exists(), module
    code = "import mongosnap.cli; print(mongosnap.__file__, mongosnap.__version__)"
    where = subprocess.run(
        [sys.executable, "-S", "-c", code],  # -S: without this venv's editable install
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(target)), where.stderr
