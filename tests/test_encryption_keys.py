"""Where a backup's recipients and a reader's keys come from (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mongosnap import BadKey, Encryption, Keys, UsageError
from mongosnap.crypto.keys import X25519Identity


def test_recipients_from_flags_file_and_environment(tmp_path: Path) -> None:
    listed = tmp_path / "recipients.txt"
    listed.write_text("# ops\nage1aaa\n\nage1bbb\n")
    env = {"MONGOSNAP_RECIPIENTS": "age1ccc, age1ddd\tage1eee"}
    both = Encryption.of(["age1zzz"], recipients_file=listed, environ=env)
    assert both is not None and both.recipients == ("age1zzz", "age1aaa", "age1bbb")
    from_env = Encryption.of([], environ=env)
    assert from_env is not None and from_env.recipients == ("age1ccc", "age1ddd", "age1eee")
    assert Encryption.of([], environ={}) is None
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse\n")
    alone = Encryption.of([], passphrase_file=secret, environ=env)  # the variable gives way
    assert alone is not None and alone.passphrase == "correct horse" and not alone.recipients
    assert "correct horse" not in repr(alone)
    with pytest.raises(UsageError):
        Encryption.of(["age1zzz"], passphrase_file=secret, environ={})


def test_keys_from_flags_and_environment(tmp_path: Path) -> None:
    assert Keys.of([], environ={}) is None
    keys = Keys.of([], environ={"MONGOSNAP_IDENTITY": "/k.txt"})
    assert keys is not None and keys.identities == ("/k.txt",)
    secret = tmp_path / "passphrase"
    secret.write_text("")
    with pytest.raises(BadKey, match="empty"):
        Keys.of([], passphrase_file=secret, environ={})
    good = str(X25519Identity.generate().recipient)
    with pytest.raises(BadKey, match="recipient 2"):
        Encryption([good, "age1nope"]).resolved()
