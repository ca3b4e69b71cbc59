#!/usr/bin/env python3
"""Local servers that mongosnap's tests run against.

* FerretDB speaks the MongoDB wire protocol, with its embedded SQLite backend.
* moto (Python) and versitygw (Go, POSIX backend) speak the S3 API.
* age and age-keygen (built, never started) are the reference implementation
  the encryption tests interoperate with.

Usage::

    python scripts/testbed.py build              # build missing Go binaries (and age)
    python scripts/testbed.py start [--state F]  # start all servers, write state F
    python scripts/testbed.py env   [--state F]  # print `export` lines for a shell
    python scripts/testbed.py stop  [--state F]  # stop them, remove their data

The same module is the Python API of the test fixtures (``tests/conftest.py``)::

    with Testbed() as tb:
        tb.mongo_uri, tb.s3["moto"], tb.s3["versitygw"]

Standard library only: it must run before any dependency is installed.
See docs/testbed.md for versions, flags and quirks.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import http.client
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "MONGOSNAP_TESTBED_CACHE"
STATE_ENV = "MONGOSNAP_TESTBED_STATE"
DEFAULT_STATE = REPO_ROOT / ".cache" / "testbed" / "state.json"
TEMP_PREFIX = "mongosnap-testbed-"
HOST = "127.0.0.1"
AUTH_USER = "admin"

# The oplog FerretDB: replica set name and capped local.oplog.rs size (bytes).
OPLOG_REPL_SET = "rs0"
OPLOG_SIZE = 16 << 20
# FerretDB trims capped collections on a timer (default 1 min, 10% of the
# documents at a time); a short one lets a test see its oplog roll over.
OPLOG_CLEANUP = "1s"

# Bump when the build recipe changes, so that cached binaries get rebuilt.
BUILD_RECIPE = 1


class TestbedError(RuntimeError):
    """A binary is missing or failed to build, or a server did not come up."""

    __test__ = False  # not a pytest test class, despite the name


# --------------------------------------------------------------------------- build


@dataclasses.dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    package: str
    version: str

    @property
    def stamp(self) -> str:
        return f"{self.module}/{self.package}@{self.version} recipe={BUILD_RECIPE}\n"


FERRETDB = GoTool("ferretdb", "github.com/FerretDB/FerretDB", "cmd/ferretdb", "v1.24.2")
VERSITYGW = GoTool("versitygw", "github.com/versity/versitygw", "cmd/versitygw", "v1.8.0")
SERVERS = (FERRETDB, VERSITYGW)
# The reference age implementation, for the encryption interoperability tests.
AGE = GoTool("age", "filippo.io/age", "cmd/age", "v1.3.2")
AGE_KEYGEN = GoTool("age-keygen", "filippo.io/age", "cmd/age-keygen", "v1.3.2")
# Non-interactive passphrases for age (-j batchpass, AGE_PASSPHRASE).
AGE_BATCHPASS = GoTool(
    "age-plugin-batchpass", "filippo.io/age", "cmd/age-plugin-batchpass", "v1.3.2"
)
AGE_TOOLS = (AGE, AGE_KEYGEN, AGE_BATCHPASS)
TOOLS = (*SERVERS, *AGE_TOOLS)


def bin_dir() -> Path:
    """Where built binaries live: $MONGOSNAP_TESTBED_CACHE or <repo>/.cache/testbed/bin."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).resolve() if override else REPO_ROOT / ".cache" / "testbed" / "bin"


def _log(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def _stamp_path(directory: Path, tool: GoTool) -> Path:
    return directory / f"{tool.name}.version"


def is_built(tool: GoTool, directory: Path | None = None) -> bool:
    directory = directory or bin_dir()
    stamp = _stamp_path(directory, tool)
    return (
        (directory / tool.name).is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8") == tool.stamp
    )


def build(directory: Path | None = None) -> Path:
    """Build every binary that is missing or stale; quick when nothing is. Returns the dir."""
    directory = directory or bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if all(is_built(tool, directory) for tool in TOOLS):
        return directory
    with _locked(directory / ".build.lock"):  # another process may be building too
        for tool in TOOLS:
            if is_built(tool, directory):
                _log(f"{tool.name} {tool.version} is up to date")
                continue
            _build_tool(tool, directory)
    return directory


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go_env(gobin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["GOWORK"] = "off"
    # Never stamp the repository's own git state into a server binary.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -buildvcs=false").strip()
    if gobin is not None:
        env["GOBIN"] = str(gobin)
    return env


def _go(args: list[str], *, env: dict[str, str], cwd: Path | None = None) -> str:
    go = shutil.which("go")
    if go is None:
        raise TestbedError("`go` is not on PATH; the test servers are built with Go >= 1.25")
    # go's own progress and errors go straight to stderr
    proc = subprocess.run([go, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise TestbedError(f"`go {shlex.join(args)}` failed ({proc.returncode}), see stderr")
    return proc.stdout


def _build_tool(tool: GoTool, directory: Path) -> None:
    started = time.monotonic()
    _log(f"building {tool.name} {tool.version} into {directory} (minutes the first time)")
    staging = Path(tempfile.mkdtemp(prefix=f".{tool.name}-", dir=directory))
    try:
        if tool is FERRETDB:
            _build_ferretdb(tool, staging)
        else:
            _go_install(tool, staging)
        built = staging / tool.name
        _check_runs(built)
        os.replace(built, directory / tool.name)
        _stamp_path(directory, tool).write_text(tool.stamp, encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _log(f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f}s")


def _go_install(tool: GoTool, gobin: Path) -> None:
    ldflags = f"-X=main.Version={tool.version}"
    target = f"{tool.module}/{tool.package}@{tool.version}"
    _go(["install", "-trimpath", f"-ldflags={ldflags}", target], env=_go_env(gobin))


def _build_ferretdb(tool: GoTool, out: Path) -> None:
    """`go install` of FerretDB gives a binary that panics at start-up.

    Its build/version package embeds version.txt, which release builds generate
    and the module zip lacks; without it the binary panics unless it is embedded
    in another main module. The module cache is read-only (and `-overlay` may not
    touch it), so build from a copy of the module source with that file written.
    """
    env = _go_env()
    info = json.loads(_go(["mod", "download", "-json", f"{tool.module}@{tool.version}"], env=env))
    with tempfile.TemporaryDirectory(prefix="ferretdb-src-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(info["Dir"], src)
        for root, dirs, _files in os.walk(src):  # module cache files are read-only
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        (src / "build" / "version" / "version.txt").write_text(f"{tool.version}\n")
        output = out / tool.name
        _go(["build", "-trimpath", "-o", str(output), f"./{tool.package}"], env=env, cwd=src)


def _check_runs(binary: Path) -> None:
    proc = subprocess.run(
        [str(binary), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
    )
    if proc.returncode != 0:
        output = proc.stdout.decode(errors="replace")
        raise TestbedError(f"{binary.name} --version failed after building:\n{output}")


# --------------------------------------------------------------------------- mongo-tools

# The real mongodump, mongorestore and bsondump cannot be built from the
# registries these machines reach; prebuilt ones sit beside the clone.
MONGO_TOOLS_ENV = "MONGOSNAP_MONGO_TOOLS"
MONGO_TOOLS = ("mongodump", "mongorestore", "bsondump")


def mongo_tools_dir(override: Path | None = None) -> Path:
    """Where the mongo-tools are: ``override``, $MONGOSNAP_MONGO_TOOLS, or
    ``../shared/mongo-tools/bin`` beside the clone. TestbedError names any missing."""
    default = REPO_ROOT.parent / "shared" / "mongo-tools" / "bin"
    found = override or Path(os.environ.get(MONGO_TOOLS_ENV) or default)
    missing = [t for t in MONGO_TOOLS if not (found / t).is_file()]
    if missing:
        raise TestbedError(
            f"mongo-tools missing in {found}: {', '.join(missing)} (set ${MONGO_TOOLS_ENV})"
        )
    return found


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for boto3 / aiobotocore ``create_client("s3", ...)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }


@dataclasses.dataclass
class _Process:
    name: str
    argv: list[str]
    pid: int
    log: str
    popen: subprocess.Popen[bytes] | None = dataclasses.field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv, "pid": self.pid, "log": self.log}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def mongo_ping(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Send a wire-protocol OP_MSG ``{ping: 1}``; True if the server answers ok: 1."""
    body = _bson_element(0x10, "ping", struct.pack("<i", 1))
    body += _bson_element(0x02, "$db", _bson_string("admin"))
    return _mongo_command(body, port, host, timeout)


def mongo_create_capped(
    port: int, database: str, collection: str, size: int, host: str = HOST, timeout: float = 5.0
) -> bool:
    """Send ``{create: collection, capped: true, size: size}``; True if the server answers ok: 1.

    Used to give an oplog FerretDB its ``local.oplog.rs`` before any write.
    """
    body = _bson_element(0x02, "create", _bson_string(collection))
    body += _bson_element(0x08, "capped", b"\1")
    body += _bson_element(0x12, "size", struct.pack("<q", size))
    body += _bson_element(0x02, "$db", _bson_string(database))
    return _mongo_command(body, port, host, timeout)


def _bson_element(kind: int, key: str, value: bytes) -> bytes:
    return bytes([kind]) + key.encode() + b"\0" + value


def _bson_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<i", len(raw)) + raw


def _mongo_command(body: bytes, port: int, host: str, timeout: float) -> bool:
    """One OP_MSG command (``body``: its BSON elements) on a fresh connection; True if ok: 1.

    Standard library only: the test bed starts before any driver is installed.
    """
    doc = struct.pack("<i", len(body) + 5) + body + b"\0"
    payload = struct.pack("<I", 0) + b"\0" + doc  # flagBits, section kind 0
    message = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(message)
        reply = b""
        while len(reply) < 4 or len(reply) < struct.unpack("<i", reply[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            reply += chunk
    marker = b"\x01ok\0"
    at = reply.find(marker)
    return at >= 0 and struct.unpack("<d", reply[at + 4 : at + 12])[0] == 1.0


def http_answers(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """True once anything answers HTTP on the port (any status will do)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    finally:
        conn.close()


def _set_parent_death_signal() -> Callable[[], None]:
    """A preexec_fn: the server gets SIGTERM if the thread that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, called after
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def _xattrs_work(directory: Path) -> bool:
    try:
        os.setxattr(directory, "user.mongosnap-testbed", b"1")
        os.removexattr(directory, "user.mongosnap-testbed")
    except OSError:
        return False
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead, whoever has to reap it
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_process(pid: int, argv: list[str]) -> bool:
    """Guard against pid reuse: the pid must still run the command we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _process_alive(pid)
    except OSError:
        return False
    return bool(cmdline) and cmdline[0] == os.fsencode(argv[0])


def _terminate(proc: _Process, timeout: float = 10.0) -> None:
    if proc.popen is not None:
        if proc.popen.poll() is not None:
            return
    elif not (_process_alive(proc.pid) and _is_our_process(proc.pid, proc.argv)):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # each server leads its own session
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen is not None:
                if proc.popen.poll() is not None:
                    return
            elif not _process_alive(proc.pid):
                return
            time.sleep(0.05)
    raise TestbedError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")


class Testbed:
    """FerretDB, moto and versitygw on free loopback ports, data in one temp dir.

    ``start()`` raises TestbedError if a binary is missing (run ``build()``
    first) or a server does not come up; ``stop()`` ends the servers and
    removes their data. Usable as a context manager.
    """

    __test__ = False

    def __init__(
        self,
        *,
        binaries: Path | None = None,
        base_dir: Path | None = None,
        startup_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> None:
        self.binaries = binaries or bin_dir()
        self.base_dir = base_dir
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self.root: Path | None = None
        self.mongo_uri = ""
        self.mongo_auth_uri = ""
        self.mongo_oplog_uri = ""
        self.s3: dict[str, S3Endpoint] = {}
        self.processes: dict[str, _Process] = {}
        self.owned = True

    # -- lifecycle

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Testbed:
        if self.root is not None:
            raise TestbedError("testbed already started")
        missing = [t.name for t in SERVERS if not (self.binaries / t.name).is_file()]
        if missing:
            raise TestbedError(
                f"missing {', '.join(missing)} in {self.binaries}; "
                "run `python scripts/testbed.py build`"
            )
        self.root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.base_dir))
        atexit.register(self.stop)
        try:
            self._start_ferretdbs()
            self._start_moto()
            self._start_versitygw()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server and remove the data directory. Idempotent."""
        atexit.unregister(self.stop)
        errors = []
        for proc in reversed(list(self.processes.values())):
            try:
                _terminate(proc)
            except TestbedError as exc:
                errors.append(str(exc))
        self.processes.clear()
        if self.owned and self.root is not None and self.root.name.startswith(TEMP_PREFIX):
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        if errors:
            raise TestbedError("; ".join(errors))

    # -- servers

    def _start_ferretdb(self, name: str = "ferretdb", extra: tuple[str, ...] = ()) -> int:
        assert self.root is not None
        data, state = self.root / f"{name}-data", self.root / f"{name}-state"
        data.mkdir()
        state.mkdir()

        def argv(port: int) -> list[str]:
            return [
                str(self.binaries / "ferretdb"),
                f"--listen-addr={HOST}:{port}",
                "--handler=sqlite",
                f"--sqlite-url=file:{data}/",
                f"--state-dir={state}",
                "--telemetry=disable",
                "--debug-addr=-",
                "--log-level=warn",
                *extra,
            ]

        return self._spawn(name, argv, mongo_ping)

    def _start_ferretdbs(self) -> None:
        """One open FerretDB, and one that enforces authentication."""
        self.mongo_uri = f"mongodb://{HOST}:{self._start_ferretdb()}/"
        password = secrets.token_hex(8)
        auth = (
            "--test-enable-new-auth",
            "--setup-database=admin",
            f"--setup-username={AUTH_USER}",
            f"--setup-password={password}",
        )
        port = self._start_ferretdb("ferretdb-auth", auth)
        self.mongo_auth_uri = f"mongodb://{AUTH_USER}:{password}@{HOST}:{port}/"
        self.mongo_oplog_uri = self.start_oplog_ferretdb("ferretdb-oplog", OPLOG_SIZE)

    def start_oplog_ferretdb(self, name: str, oplog_size: int, *, oplog: bool = True) -> str:
        """A FerretDB that keeps an oplog: started with ``--repl-set-name`` and a
        capped ``local.oplog.rs`` of ``oplog_size`` bytes created before any write,
        trimmed every OPLOG_CLEANUP.

        Returns its URI. It is stopped with the rest of the testbed; a small
        ``oplog_size`` lets a test make the oplog roll over. ``oplog`` False:
        no ``local.oplog.rs`` yet (FerretDB logs nothing until it exists), so a
        benchmark can seed data the oplog never holds, then call
        ``mongo_create_capped`` itself.
        """
        if name in self.processes:
            raise TestbedError(f"a server named {name} is already running")
        flags = (
            f"--repl-set-name={OPLOG_REPL_SET}",
            f"--test-capped-cleanup-interval={OPLOG_CLEANUP}",
        )
        port = self._start_ferretdb(name, flags)
        if oplog and not mongo_create_capped(port, "local", "oplog.rs", oplog_size):
            raise TestbedError(f"{name}: could not create the capped local.oplog.rs")
        return f"mongodb://{HOST}:{port}/"

    def stop_server(self, name: str) -> None:
        """Stop one server this testbed started (e.g. a tiny-oplog FerretDB)."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            _terminate(proc)

    def _start_moto(self) -> None:
        def argv(port: int) -> list[str]:
            return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]

        port = self._spawn("moto", argv, http_answers)
        self.s3["moto"] = S3Endpoint("moto", f"http://{HOST}:{port}", "testing", "testing")

    def _start_versitygw(self) -> None:
        assert self.root is not None
        data = self.root / "versitygw-data"
        data.mkdir()
        backend = ["posix"]
        if not _xattrs_work(data):  # the POSIX backend keeps metadata in xattrs
            sidecar = self.root / "versitygw-meta"
            sidecar.mkdir()
            backend.append(f"--sidecar={sidecar}")
        access, secret = "mongosnap", secrets.token_hex(16)

        def argv(port: int) -> list[str]:
            return [
                str(self.binaries / "versitygw"),
                f"--port={HOST}:{port}",
                f"--access={access}",
                f"--secret={secret}",
                "--region=us-east-1",
                "--quiet",
                *backend,
                str(data),
            ]

        port = self._spawn("versitygw", argv, http_answers)
        self.s3["versitygw"] = S3Endpoint("versitygw", f"http://{HOST}:{port}", access, secret)

    def _spawn(
        self, name: str, argv: Callable[[int], list[str]], ready: Callable[[int], bool]
    ) -> int:
        """Start a server on a free port and wait until it answers; return the port.

        A free port can be taken by someone else before the server binds it, so
        a server that exits complaining of an address in use is retried.
        """
        assert self.root is not None
        log = self.root / f"{name}.log"
        for attempt in range(3):
            port = free_port()
            command = argv(port)
            with open(log, "ab") as out:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal() if self.die_with_parent else None,
                )
            self.processes[name] = _Process(name, command, popen.pid, str(log), popen)
            try:
                self._wait_ready(name, command, popen, functools.partial(ready, port), log)
                return port
            except TestbedError:
                if popen.poll() is None or attempt == 2:
                    raise
                if "already in use" not in _log_tail(log).lower():
                    raise
                del self.processes[name]
        raise AssertionError("unreachable")

    def _wait_ready(
        self,
        name: str,
        command: list[str],
        popen: subprocess.Popen[bytes],
        ready: Callable[[], bool],
        log: Path,
    ) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = popen.poll()
            if code is not None:
                raise TestbedError(
                    f"{name} exited with code {code} while starting: {shlex.join(command)}"
                    f"\n--- {log} (tail) ---\n{_log_tail(log)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{name} did not answer within {self.startup_timeout:.0f}s"
                    f"\n--- {log} (tail) ---\n{_log_tail(log)}"
                )
            time.sleep(0.1)

    # -- state file

    def state(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "mongo_uri": self.mongo_uri,
            "mongo_auth_uri": self.mongo_auth_uri,
            "mongo_oplog_uri": self.mongo_oplog_uri,
            "s3": {name: dataclasses.asdict(ep) for name, ep in self.s3.items()},
            "processes": {name: proc.to_json() for name, proc in self.processes.items()},
        }

    def write_state(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_state(cls, path: Path, *, owned: bool = True) -> Testbed:
        """A handle on servers started elsewhere (``start`` command) from their state file.

        ``owned=False`` makes ``stop()`` leave them running (used by the fixtures
        when $MONGOSNAP_TESTBED_STATE points at a testbed started by hand).
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TestbedError(f"cannot read testbed state {path}: {exc}") from exc
        tb = cls()
        tb.root = Path(raw["root"])
        tb.mongo_uri = raw["mongo_uri"]
        tb.mongo_auth_uri = raw["mongo_auth_uri"]
        tb.mongo_oplog_uri = raw.get("mongo_oplog_uri", "")
        tb.s3 = {name: S3Endpoint(**ep) for name, ep in raw["s3"].items()}
        tb.processes = {name: _Process(**proc) for name, proc in raw["processes"].items()}
        tb.owned = owned
        if not owned:
            tb.processes = {}
        return tb

    def check(self) -> None:
        """Raise TestbedError unless every server answers now."""
        port = int(self.mongo_uri.rstrip("/").rsplit(":", 1)[1])
        probes = [("ferretdb", functools.partial(mongo_ping, port))]
        for ep in self.s3.values():
            s3_port = int(ep.endpoint_url.rsplit(":", 1)[1])
            probes.append((ep.name, functools.partial(http_answers, s3_port)))
        for name, probe in probes:
            try:
                ok = probe()
            except (OSError, http.client.HTTPException) as exc:
                raise TestbedError(f"{name} does not answer: {exc}") from exc
            if not ok:
                raise TestbedError(f"{name} answered, but not as expected")

    def env(self) -> dict[str, str]:
        """Environment variables describing the servers (``env`` command)."""
        out = {"MONGOSNAP_TEST_MONGO_URI": self.mongo_uri}
        if self.mongo_oplog_uri:
            out["MONGOSNAP_TEST_MONGO_OPLOG_URI"] = self.mongo_oplog_uri
        for name, ep in self.s3.items():
            prefix = f"MONGOSNAP_TEST_S3_{name.upper()}_"
            out[prefix + "ENDPOINT_URL"] = ep.endpoint_url
            out[prefix + "ACCESS_KEY"] = ep.access_key
            out[prefix + "SECRET_KEY"] = ep.secret_key
            out[prefix + "REGION"] = ep.region
        return out


# --------------------------------------------------------------------------- CLI


def _cmd_build(_args: argparse.Namespace, _out: TextIO) -> None:
    build()


def _cmd_start(args: argparse.Namespace, out: TextIO) -> None:
    state: Path = args.state
    if state.exists():
        old = Testbed.from_state(state)
        if any(_process_alive(p.pid) for p in old.processes.values()):
            raise TestbedError(f"{state} describes a running testbed; stop it first")
    tb = Testbed(die_with_parent=False).start()
    try:
        tb.write_state(state)
    except BaseException:
        tb.stop()
        raise
    atexit.unregister(tb.stop)  # the servers outlive this command
    print(f"testbed started; state in {state}", file=out)


def _cmd_stop(args: argparse.Namespace, out: TextIO) -> None:
    state: Path = args.state
    if not state.exists():
        raise TestbedError(f"no testbed state at {state}")
    Testbed.from_state(state).stop()
    state.unlink()
    print("testbed stopped", file=out)


def _cmd_env(args: argparse.Namespace, out: TextIO) -> None:
    tb = Testbed.from_state(args.state)
    for key, value in {**tb.env(), STATE_ENV: str(args.state)}.items():
        print(f"export {key}={shlex.quote(value)}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build missing or stale server binaries")
    for name, text in [
        ("start", "start the servers and write a state file"),
        ("stop", "stop the servers of a state file and remove their data"),
        ("env", "print shell export lines for a running testbed"),
    ]:
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state file (JSON)")
    args = parser.parse_args(argv)
    handler = {"build": _cmd_build, "start": _cmd_start, "stop": _cmd_stop, "env": _cmd_env}
    try:
        handler[args.command](args, sys.stdout)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
