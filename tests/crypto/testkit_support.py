"""Reading the C2SP CCTV age test vectors (testkit/README.md)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from mongosnap.crypto import ScryptIdentity, X25519Identity
from mongosnap.crypto.keys import Identity

TESTKIT = Path(__file__).parent / "testkit"
PQ_PREFIX = "AGE-SECRET-KEY-PQ-1"


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: list[str]
    passphrases: list[str]
    armored: bool
    data: bytes

    def decryptors(self) -> list[Identity]:
        """Its X25519 identities and passphrases (max work factor as age's: 22)."""
        found: list[Identity] = [
            X25519Identity.parse(i) for i in self.identities if not i.startswith(PQ_PREFIX)
        ]
        found += [ScryptIdentity(p) for p in self.passphrases]
        return found

    @property
    def needs_pq(self) -> bool:
        """Only a post-quantum (mlkem768x25519) identity is given to open it."""
        return bool(self.identities) and all(i.startswith(PQ_PREFIX) for i in self.identities)


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload=fields.get("payload", [None])[0],
        identities=fields.get("identity", []),
        passphrases=fields.get("passphrase", []),
        armored=fields.get("armored") == ["yes"],
        data=body,
    )


def vectors() -> list[Vector]:
    return [load(p) for p in sorted(TESTKIT.iterdir()) if p.name != "README.md"]
