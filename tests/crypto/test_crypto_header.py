"""The age header: build/parse round trips, strictness, keys, hostile input."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from mongosnap import BadKey, DecryptionFailed, EncryptionError, NoIdentity
from mongosnap.crypto import (
    ScryptIdentity,
    ScryptRecipient,
    Stanza,
    X25519Identity,
    X25519Recipient,
    decrypt,
    encrypt,
    read_identities,
    read_recipients,
)
from mongosnap.crypto.header import Header, IncompleteHeader, b64decode

# A key pair from age-keygen v1.3.2 (test material only).
SECRET = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"


def test_header_round_trips_with_wrapped_bodies() -> None:
    stanzas = [
        Stanza("X25519", ("arg",), os.urandom(32)),
        Stanza("grease-x", ("a", "b", "c"), os.urandom(48)),  # exactly one full line
        Stanza("empty", ("z",), b""),
        Stanza("long", (), os.urandom(200)),
    ]
    key = os.urandom(16)
    header = Header.build(stanzas, key)
    raw = header.to_bytes()
    assert b"\n\n" in raw  # the 48-byte body ends with an empty short line
    parsed, length = Header.parse(raw + b"payload")
    assert length == len(raw)
    assert parsed.stanzas == tuple(stanzas)
    parsed.verify(key)
    with pytest.raises(DecryptionFailed):
        parsed.verify(os.urandom(16))


def test_a_header_cut_anywhere_is_incomplete_not_malformed() -> None:
    raw = Header.build([Stanza("X25519", ("a",), os.urandom(32))], os.urandom(16)).to_bytes()
    for cut in range(len(raw)):
        with pytest.raises(IncompleteHeader):
            Header.parse(raw[:cut])


@pytest.mark.parametrize(
    "text",
    [b"YQ==", b"YR", b"Y", b"YQ\n", b"Y Q", b"YQ-_"],  # padded, non-canonical bits, bad chars
)
def test_base64_must_be_canonical_and_unpadded(text: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        b64decode(text)


def test_age_keygen_key_parses_and_prints_back() -> None:
    identity = X25519Identity.parse(SECRET)
    assert identity.export() == SECRET
    text = str(identity.recipient)
    assert text.startswith("age1") and X25519Recipient.parse(text) == identity.recipient
    assert SECRET not in repr(identity) and SECRET not in str(identity)


@pytest.mark.parametrize(
    "text",
    [
        SECRET[:-1] + ("q" if SECRET[-1] != "Q" else "p"),  # checksum
        SECRET.lower()[:20] + SECRET[20:],  # mixed case
        "age1qqqq",
        "",
        "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG",
    ],
)
def test_malformed_keys_are_bad_keys_without_the_text(text: str) -> None:
    with pytest.raises(BadKey) as caught:
        X25519Identity.parse(text)
    assert not text or text not in str(caught.value)


def test_key_files_skip_comments_and_name_the_bad_line(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    good = tmp_path / "keys.txt"
    good.write_text(f"# created: now\n# public key: {identity.recipient}\n\n{identity.export()}\n")
    assert [i.recipient for i in read_identities(good)] == [identity.recipient]
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# backup key\n{identity.recipient}\n")
    assert read_recipients(recipients) == [identity.recipient]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# comment\n{identity.export()[:-2]}\n")
    with pytest.raises(BadKey, match="line 2") as caught:
        read_identities(bad)
    assert identity.export()[:-2] not in str(caught.value)
    for path in [tmp_path / "missing", tmp_path / "empty"]:
        if path.name == "empty":
            path.write_text("# nothing\n")
        with pytest.raises(BadKey):
            read_identities(path)


def test_passphrase_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    data = encrypt(b"secret", [ScryptRecipient("pass\n", work_factor=2)])
    path = tmp_path / "pass"
    path.write_bytes(b"pass\n\n")
    assert decrypt(data, [ScryptIdentity.from_file(path)]) == b"secret"
    path.write_bytes(b"pass\n")
    with pytest.raises(NoIdentity):
        decrypt(data, [ScryptIdentity.from_file(path)])


def test_scrypt_must_be_alone_and_within_the_work_factor() -> None:
    with pytest.raises(BadKey):
        encrypt(b"x", [ScryptRecipient("p", work_factor=2), X25519Identity.generate().recipient])
    data = encrypt(b"x", [ScryptRecipient("p", work_factor=12)])
    with pytest.raises(DecryptionFailed, match="work factor"):
        decrypt(data, [ScryptIdentity("p", max_work_factor=11)])
    assert decrypt(data, [ScryptIdentity("p", max_work_factor=12)]) == b"x"


def test_identity_failures_are_typed() -> None:
    alice, bob = X25519Identity.generate(), X25519Identity.generate()
    data = encrypt(b"hello", [alice.recipient])
    with pytest.raises(NoIdentity):
        decrypt(data, [bob])
    with pytest.raises(NoIdentity):
        decrypt(data, [])
    assert decrypt(data, [bob, alice]) == b"hello"
    assert decrypt(encrypt(b"hi", [bob.recipient, alice.recipient]), [alice]) == b"hi"


def test_a_swapped_header_fails_authentication() -> None:
    """Two files to the same recipient: one's header on the other's payload."""
    identity = X25519Identity.generate()
    one = encrypt(b"a" * 1000, [identity.recipient])
    two = encrypt(b"b" * 1000, [identity.recipient])
    cut = one.index(b"\n---") + len(b"\n--- ") + 44  # header end (the nonce follows)
    with pytest.raises(DecryptionFailed):
        decrypt(one[:cut] + two[cut:], [identity])


def test_a_changed_stanza_fails_the_mac() -> None:
    identity = X25519Identity.generate()
    data = encrypt(b"x", [identity.recipient])
    grease = b"-> grease\n\n"
    at = data.index(b"---")
    with pytest.raises(DecryptionFailed, match="MAC"):
        decrypt(data[:at] + grease + data[at:], [identity])


def test_hostile_mutations_raise_only_typed_errors() -> None:
    """Random byte flips, cuts and insertions (fixed seed) of a valid file."""
    rng = random.Random(1729)
    identity = X25519Identity.generate()
    good = encrypt(
        bytes(range(256)) * 300, [identity.recipient, X25519Identity.generate().recipient]
    )
    outcomes: dict[str, int] = {}
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            action = rng.random()
            if action < 0.5:
                data[at] = rng.randrange(256)
            elif action < 0.75:
                del data[at : at + rng.randint(1, 80)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            decrypt(bytes(data), [identity])
            assert data == good  # only a mutation that changed nothing may succeed
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except EncryptionError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
    assert outcomes.get("DecryptionFailed", 0) > 2000, outcomes
