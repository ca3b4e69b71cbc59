"""A fault-injecting TCP proxy for tests: put it before FerretDB or an S3 server.

    with FaultProxy(("127.0.0.1", server_port)) as proxy:
        uri = f"mongodb://127.0.0.1:{proxy.port}/"       # or f"http://127.0.0.1:{proxy.port}"
        proxy.reset_after(down=200_000)                  # next connection: RST after 200 kB
        proxy.outage(25.0)                               # refuse and reset everything for 25 s
        proxy.stall = True                               # hold every byte until set False
        held = proxy.hold("up", b"PUT ", b".manifest.json")  # hold one request...
        held.reached.wait(30); held.release()            # ...until released

It relays bytes unchanged and knows no protocol: faults are TCP-level (a reset
is a real RST, a refusal is an accepted-then-reset connection), so the client
library under test sees exactly what a flaky network or a dying server gives.
The proxy runs its own event loop in a daemon thread, so synchronous and async
tests, and subprocesses, can all use it. Counters say what went through.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

CHUNK = 64 * 1024


@dataclass
class _Rule:
    """Reset the next ``count`` connections after this many bytes one way."""

    up: int | None
    down: int | None
    count: int


class Hold:
    """One connection's bytes held from the first chunk that contains every
    pattern (a request line, say) until ``release()``; then relayed, even if
    the client has given up meanwhile, as a slow network or a proxy would."""

    def __init__(self, way: str, patterns: tuple[bytes, ...]) -> None:
        self.way = way
        self.patterns = patterns
        self.reached = threading.Event()
        """Set once a chunk matched and is being held."""
        self.released = threading.Event()

    def matches(self, way: str, data: bytes) -> bool:
        return way == self.way and all(p in data for p in self.patterns)

    def release(self) -> None:
        self.released.set()


@dataclass
class Counters:
    connections: int = 0
    refused: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, way: str, size: int) -> None:
        if way == "up":
            self.bytes_up += size
        else:
            self.bytes_down += size


class FaultProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self.stall = False
        """While True, no byte is forwarded either way (a hung peer)."""
        self.counters = Counters()
        self._refuse_until = 0.0
        self._rules: list[_Rule] = []
        self._holds: list[Hold] = []
        self._open: set[_Pipe] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- faults

    def reset_after(
        self, *, up: int | None = None, down: int | None = None, count: int = 1
    ) -> None:
        """The next ``count`` connections are reset once they relayed ``up`` bytes
        client->server or ``down`` bytes server->client (whichever comes first)."""
        with self._lock:
            self._rules.append(_Rule(up, down, count))

    def reset_all(self) -> int:
        """Reset every open connection now; returns how many."""
        return int(self._call(self._reset_all()))

    def outage(self, seconds: float) -> None:
        """For ``seconds``: open connections are reset, new ones refused."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds
        self.reset_all()

    def hold(self, way: str, *patterns: bytes) -> Hold:
        """Hold the next chunk relayed ``way`` ("up": client->server) that holds
        every pattern, and what follows on its connection, until released."""
        held = Hold(way, patterns)
        with self._lock:
            self._holds.append(held)
        return held

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no connection is open: whatever was relayed has landed."""
        deadline = time.monotonic() + timeout
        while self._open and time.monotonic() < deadline:
            time.sleep(0.02)

    def _take_hold(self, way: str, data: bytes) -> Hold | None:
        with self._lock:
            for held in self._holds:
                if held.matches(way, data):
                    self._holds.remove(held)
                    return held
        return None

    def heal(self) -> None:
        """End every fault: no outage, no pending reset rule, no stall."""
        with self._lock:
            self._refuse_until = 0.0
            self._rules.clear()
        self.stall = False

    # -- internals

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> asyncio.AbstractServer:
        server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._reset_all()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:  # connection handlers: end them before the loop stops
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()

    async def _reset_all(self) -> int:
        pipes = list(self._open)
        for pipe in pipes:
            pipe.reset()
        self.counters.resets += len(pipes)
        return len(pipes)

    def _take_rule(self) -> _Rule | None:
        with self._lock:
            if not self._rules:
                return None
            rule = self._rules[0]
            rule.count -= 1
            if rule.count <= 0:
                self._rules.pop(0)
            return _Rule(rule.up, rule.down, 1)

    def _refusing(self) -> bool:
        with self._lock:
            return time.monotonic() < self._refuse_until

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        if self._refusing():
            self.counters.refused += 1
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            self.counters.errors.append(f"connect: {exc}")
            _rst(writer)
            return
        pipe = _Pipe(self, (reader, writer), (up_reader, up_writer), self._take_rule())
        self._open.add(pipe)
        try:
            await pipe.run()
        finally:
            self._open.discard(pipe)


class _Pipe:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        rule: _Rule | None,
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.rule = rule
        self.sent = {"up": 0, "down": 0}
        self.dead = False

    async def run(self) -> None:
        # Each way ends on its own EOF (half-close passes through) or on a reset,
        # which aborts both transports and so ends the other way too.
        await asyncio.gather(
            self._relay(self.client[0], self.server[1], "up"),
            self._relay(self.server[0], self.client[1], "down"),
            return_exceptions=True,
        )
        for _, writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.close()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str
    ) -> None:
        limit = None if self.rule is None else getattr(self.rule, way)
        try:
            while not self.dead:
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                while self.proxy.stall and not self.dead:
                    await asyncio.sleep(0.01)
                held = self.proxy._take_hold(way, data) if self.proxy._holds else None
                if held is not None:
                    held.reached.set()
                    while not held.released.is_set() and not self.dead:
                        await asyncio.sleep(0.01)
                if limit is not None and self.sent[way] + len(data) >= limit:
                    writer.write(data[: max(0, limit - self.sent[way])])
                    with contextlib.suppress(Exception):
                        await writer.drain()
                    self.proxy.counters.resets += 1
                    self.reset()
                    return
                self.sent[way] += len(data)
                counter = "bytes_up" if way == "up" else "bytes_down"
                setattr(
                    self.proxy.counters, counter, getattr(self.proxy.counters, counter) + len(data)
                )
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            self.reset()

    def reset(self) -> None:
        if not self.dead:
            self.dead = True
            _rst(self.client[1])
            _rst(self.server[1])


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
