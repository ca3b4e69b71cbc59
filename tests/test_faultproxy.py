"""The fault proxy itself: relays bytes, resets where told, refuses during an outage."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest
from faultproxy import FaultProxy
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address  # type: ignore[misc]
    server.shutdown()
    server.server_close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def test_relays_bytes_unchanged(echo: tuple[str, int]) -> None:
    payload = bytes(range(256)) * 4000
    with FaultProxy(echo) as proxy:
        assert _roundtrip(proxy.port, payload) == payload
        assert proxy.counters.bytes_down == len(payload)


def test_reset_after_cuts_the_next_connection_only(echo: tuple[str, int]) -> None:
    payload = b"x" * 500_000
    with FaultProxy(echo) as proxy:
        proxy.reset_after(down=100_000)
        with pytest.raises(ConnectionResetError):
            _roundtrip(proxy.port, payload)
        assert _roundtrip(proxy.port, payload) == payload
        assert proxy.counters.resets == 1


def _wait_for_reset(port: int) -> None:
    """Connect and wait for the proxy's answer without sending anything.

    The kernel completes the handshake before the proxy accepts, so a client
    that sends first races the reset: on a loaded machine its send lands in
    the buffers, the reset comes after, and its next call fails with whatever
    that call reports (ENOTCONN from shutdown, EPIPE, ECONNRESET). Waiting in
    recv, the first call after the reset, always reports ECONNRESET.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.recv(1)


def test_outage_refuses_then_recovers(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:
        proxy.outage(60)
        with pytest.raises(ConnectionResetError):
            _wait_for_reset(proxy.port)
        assert proxy.counters.refused == 1
        proxy.heal()
        assert _roundtrip(proxy.port, b"hello" * 100_000) == b"hello" * 100_000
        assert proxy.counters.refused == 1


def test_before_ferretdb(testbed: object, mongo_uri: str) -> None:
    port = int(mongo_uri.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(("127.0.0.1", port)) as proxy:
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{proxy.port}/", serverSelectionTimeoutMS=1500
        )
        try:
            assert client.admin.command("ping")["ok"] == 1
            proxy.outage(60)
            with pytest.raises((AutoReconnect, ServerSelectionTimeoutError)):
                client.admin.command("ping")
            proxy.heal()
            assert client.admin.command("ping")["ok"] == 1
        finally:
            client.close()
