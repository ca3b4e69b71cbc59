"""Interoperability both ways with two independent age implementations:
the age CLI (Go, the reference) and pyrage (rage, in Rust)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyrage
import pytest
from age_cli import AgeCli

from mongosnap.crypto import (
    DecryptedView,
    EncryptingWriter,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    decrypt,
    read_identities,
    stream,
)
from mongosnap.crypto.keys import Recipient
from mongosnap.storage import open_storage

CHUNK = stream.CHUNK
SIZES = [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK - 1]
BIG = 5 * (1 << 20) + 12345  # several MiB, ending inside a chunk


@pytest.fixture(scope="module")
def keys(age_cli: AgeCli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("age") / "key.txt"
    age_cli.run("age-keygen", "-o", str(path))
    return path


@pytest.fixture(scope="module")
def big_plaintext() -> bytes:
    return random.Random(7).randbytes(BIG)


async def _encrypt(tmp_path: Path, plaintext: bytes, recipients: list[Recipient]) -> Path:
    """Through EncryptingWriter into a local directory, in uneven writes."""
    storage = open_storage(tmp_path)
    writer = EncryptingWriter(storage.open_writer("out.age"), recipients)
    for at in range(0, len(plaintext), 100_000):
        await writer.write(plaintext[at : at + 100_000])
    await writer.commit()
    return tmp_path / "out.age"


@pytest.mark.parametrize("size", [*SIZES, BIG])
async def test_age_cli_decrypts_what_mongosnap_writes(
    age_cli: AgeCli, keys: Path, tmp_path: Path, size: int, big_plaintext: bytes
) -> None:
    plaintext = big_plaintext[:size]
    (identity,) = read_identities(keys)
    path = await _encrypt(tmp_path, plaintext, [identity.recipient])
    assert age_cli.run("age", "-d", "-i", str(keys), str(path)) == plaintext


async def test_age_cli_decrypts_a_mongosnap_passphrase(age_cli: AgeCli, tmp_path: Path) -> None:
    plaintext = os.urandom(CHUNK + 10)
    path = await _encrypt(tmp_path, plaintext, [ScryptRecipient("correct horse", work_factor=10)])
    out = age_cli.run("age", "-d", "-j", "batchpass", str(path), passphrase="correct horse")
    assert out == plaintext


def test_age_keygen_keys_match_mongosnap_bech32(age_cli: AgeCli, keys: Path) -> None:
    (identity,) = read_identities(keys)
    public = age_cli.run("age-keygen", "-y", str(keys)).decode().strip()
    assert str(identity.recipient) == public
    assert X25519Recipient.parse(public) == identity.recipient
    assert identity.export() in keys.read_text()


@pytest.mark.parametrize("size", SIZES)
def test_mongosnap_decrypts_what_age_cli_writes(age_cli: AgeCli, keys: Path, size: int) -> None:
    plaintext = os.urandom(size)
    public = age_cli.run("age-keygen", "-y", str(keys)).decode().strip()
    data = age_cli.run("age", "-e", "-r", public, data=plaintext)
    assert decrypt(data, read_identities(keys)) == plaintext


def test_mongosnap_decrypts_an_age_cli_passphrase(age_cli: AgeCli) -> None:
    plaintext = os.urandom(1000)
    data = age_cli.run("age", "-e", "-j", "batchpass", data=plaintext, passphrase="pw pw")
    assert decrypt(data, [ScryptIdentity("pw pw")]) == plaintext


async def test_ranged_reads_of_an_age_cli_file(
    age_cli: AgeCli, keys: Path, tmp_path: Path, big_plaintext: bytes
) -> None:
    """A several-MiB file written by age, read in ranges through DecryptedView."""
    public = age_cli.run("age-keygen", "-y", str(keys)).decode().strip()
    (tmp_path / "f.age").write_bytes(age_cli.run("age", "-e", "-r", public, data=big_plaintext))
    view = DecryptedView(open_storage(tmp_path), read_identities(keys))
    assert (await view.stat("f.age")).size == BIG
    rng = random.Random(11)
    ranges = [(0, BIG), (BIG - 1, BIG), (CHUNK - 1, CHUNK + 1), (3 * CHUNK, 4 * CHUNK)]
    ranges += [tuple(sorted(rng.sample(range(BIG + 1), 2))) for _ in range(20)]
    for start, end in ranges:
        got = b"".join([piece async for piece in view.read("f.age", start, end)])
        assert got == big_plaintext[start:end], (start, end)


@pytest.mark.parametrize("size", [*SIZES, BIG])
async def test_rage_decrypts_what_mongosnap_writes(
    tmp_path: Path, size: int, big_plaintext: bytes
) -> None:
    plaintext = big_plaintext[:size]
    theirs = pyrage.x25519.Identity.generate()
    ours = X25519Recipient.parse(str(theirs.to_public()))
    path = await _encrypt(tmp_path, plaintext, [ours])
    assert pyrage.decrypt(path.read_bytes(), [theirs]) == plaintext


async def test_rage_decrypts_a_mongosnap_passphrase(tmp_path: Path) -> None:
    plaintext = os.urandom(CHUNK)
    path = await _encrypt(tmp_path, plaintext, [ScryptRecipient("s3cret", work_factor=10)])
    assert pyrage.passphrase.decrypt(path.read_bytes(), "s3cret") == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_mongosnap_decrypts_what_rage_writes(size: int) -> None:
    plaintext = os.urandom(size)
    ours = X25519Identity.generate()
    recipient = pyrage.x25519.Recipient.from_str(str(ours.recipient))
    assert decrypt(pyrage.encrypt(plaintext, [recipient]), [ours]) == plaintext
    theirs = pyrage.x25519.Identity.generate()
    data = pyrage.encrypt(plaintext, [pyrage.x25519.Recipient.from_str(str(theirs.to_public()))])
    assert decrypt(data, [X25519Identity.parse(str(theirs))]) == plaintext


def test_mongosnap_decrypts_a_rage_passphrase() -> None:
    """rage picks its own work factor (about a second of scrypt): within 22."""
    plaintext = os.urandom(5000)
    assert (
        decrypt(pyrage.passphrase.encrypt(plaintext, "pass"), [ScryptIdentity("pass")]) == plaintext
    )
