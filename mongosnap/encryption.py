"""Who may read an archive: recipients for a backup, keys for its readers.

``Encryption`` says whom a backup encrypts to (age recipients: X25519 public
keys ``age1…``, or a passphrase, scrypt); ``Keys`` holds what heal, restore
and verify decrypt with (age identity files ``AGE-SECRET-KEY-1…``, or the
passphrase). docs/encryption.md describes the format and the threat model.

Secrets stay out of sight: a passphrase and an identity's contents are never
in a repr, a log line or an error message (tests/test_secrets.py).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BadKey, UsageError

if TYPE_CHECKING:  # the age code loads only when a key is used
    from .crypto.keys import Identity, Recipient

RECIPIENTS_ENV = "MONGOSNAP_RECIPIENTS"
IDENTITY_ENV = "MONGOSNAP_IDENTITY"
MAX_KEY_FILE = 1 << 20
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class Encryption:
    """The recipients a backup encrypts to: public keys, AWS KMS keys and/or a passphrase.

    ``recipients`` are age recipient strings (``age1…``); ``kms_key_ids``
    wrap the file key with AWS KMS (an id, ARN or ``alias/NAME``);
    ``passphrase`` encrypts with scrypt instead (age allows a passphrase
    only on its own).
    """

    recipients: Sequence[str] = ()
    passphrase: str | None = field(default=None, repr=False)
    kms_key_ids: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", tuple(self.recipients))
        object.__setattr__(self, "kms_key_ids", tuple(self.kms_key_ids))
        if not self.recipients and not self.kms_key_ids and not self.passphrase:
            raise UsageError(
                "encryption needs a recipient (--encrypt-to, --kms-key-id) or a passphrase"
            )
        if (self.recipients or self.kms_key_ids) and self.passphrase:
            raise UsageError(
                "a passphrase cannot be combined with recipients (age allows it only alone)"
            )

    @classmethod
    def of(
        cls,
        encrypt_to: Iterable[str] = (),
        *,
        recipients_file: str | os.PathLike[str] | None = None,
        passphrase_file: str | os.PathLike[str] | None = None,
        kms_key_ids: Iterable[str] = (),
        environ: dict[str, str] | None = None,
    ) -> Encryption | None:
        """From the CLI's sources; None when none of them names a recipient.

        ``$MONGOSNAP_RECIPIENTS`` (whitespace or comma separated) is used only
        when no other source is given.
        """
        found = [r for r in encrypt_to if r]
        kms = [k for k in kms_key_ids if k]
        if recipients_file is not None:
            found += _recipient_lines(_read_key_file(recipients_file, "recipients file"))
        passphrase = _passphrase(passphrase_file) if passphrase_file is not None else None
        if not found and not kms and passphrase is None:
            env = (os.environ if environ is None else environ).get(RECIPIENTS_ENV, "")
            found = [r for r in _SEPARATORS.split(env) if r]
        if not found and not kms and passphrase is None:
            return None
        return cls(found, passphrase, kms)

    def resolved(self) -> list[Recipient]:
        """The age recipients; BadKey numbers a recipient that does not parse."""
        from .crypto.keys import ScryptRecipient, X25519Recipient

        if self.passphrase:
            return [ScryptRecipient(self.passphrase)]
        found: list[Recipient] = []
        for number, text in enumerate(self.recipients, 1):
            try:
                found.append(X25519Recipient.parse(text))
            except BadKey:
                raise BadKey(f"recipient {number}: not an age1... X25519 recipient") from None
        if self.kms_key_ids:
            from .crypto.kms import KmsClient, KmsRecipient

            client = KmsClient()
            found += [KmsRecipient(key_id, client) for key_id in self.kms_key_ids]
        return found


async def check_recipients(recipients: Sequence[Recipient]) -> None:
    """Before any work: every KMS key exists and is enabled (KmsError otherwise).
    In a thread: KMS is a network call and botocore's client is synchronous."""
    from .crypto.kms import KmsRecipient

    kms = [r for r in recipients if isinstance(r, KmsRecipient)]
    for recipient in kms:
        await asyncio.to_thread(recipient.check)


@dataclass(frozen=True)
class Keys:
    """What encrypted archives are read with: identity files, a passphrase,
    and/or AWS KMS (``kms``: the caller's AWS credentials unwrap KMS stanzas)."""

    identities: Sequence[str | os.PathLike[str]] = ()
    """Paths of age identity files (``age-keygen`` output)."""
    passphrase: str | None = field(default=None, repr=False)
    kms: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "identities", tuple(self.identities))

    @classmethod
    def of(
        cls,
        identity: Iterable[str | os.PathLike[str]] = (),
        *,
        passphrase_file: str | os.PathLike[str] | None = None,
        kms: bool = False,
        environ: dict[str, str] | None = None,
    ) -> Keys | None:
        """From the CLI's sources (``$MONGOSNAP_IDENTITY``: a file, when no
        ``--identity`` is given); None when there is none."""
        files = list(identity)
        if not files:
            env = (os.environ if environ is None else environ).get(IDENTITY_ENV, "")
            files = [env] if env else []
        passphrase = _passphrase(passphrase_file) if passphrase_file is not None else None
        if not files and passphrase is None and not kms:
            return None
        return cls(files, passphrase, kms)

    @property
    def empty(self) -> bool:
        return not self.identities and not self.passphrase and not self.kms

    def resolved(self) -> list[Identity]:
        """The age identities, files read now; BadKey for an unusable file."""
        from .crypto.keys import ScryptIdentity, read_identities

        found: list[Any] = []
        for path in self.identities:
            found += read_identities(path)
        if self.passphrase:
            found.append(ScryptIdentity(self.passphrase))
        if self.kms:  # last: a KMS refusal stops the search, so local keys go first
            from .crypto.kms import KmsIdentity

            found.append(KmsIdentity())
        return found


NO_KEY_HINT = (
    "give its key with --identity FILE (or $MONGOSNAP_IDENTITY), --passphrase-file FILE or --kms"
)
"""What a reader of an encrypted archive without a key is told to do."""


def _recipient_lines(text: str) -> list[str]:
    """age's recipients file: one per line; blank lines and ``#`` comments ignored."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _passphrase(path: str | os.PathLike[str]) -> str:
    """A passphrase file's text less one trailing newline (as ScryptIdentity.from_file)."""
    text = _read_key_file(path, "passphrase file")
    passphrase = text.removesuffix("\n").removesuffix("\r")
    if not passphrase:
        raise BadKey(f"the passphrase file {os.fspath(path)} is empty")
    return passphrase


def _read_key_file(path: str | os.PathLike[str], what: str) -> str:
    """A key file's text; the error names the file, never its contents."""
    where = os.fspath(path)
    try:
        data = Path(where).read_bytes()[: MAX_KEY_FILE + 1]
    except OSError as exc:
        raise BadKey(f"cannot read the {what} {where}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise BadKey(f"the {what} {where} is larger than {MAX_KEY_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadKey(f"the {what} {where} is not UTF-8 text") from None


__all__ = ["IDENTITY_ENV", "RECIPIENTS_ENV", "Encryption", "Keys", "check_recipients"]
