"""AWS KMS as an age recipient: the file key wrapped by KMS Encrypt.

The stanza is ``-> mongosnap-kms <base64 key id>`` with the KMS ciphertext
blob as its body (docs/encryption.md, "Format"). KMS binds the blob to
ENCRYPTION_CONTEXT, so a blob copied out of another KMS use does not open
here, nor ours there. The age CLI knows no such stanza: an archive encrypted
to KMS alone opens only with mongosnap.

The calls are synchronous botocore (the Recipient and Identity protocols
are): wrapping and unwrapping run in a worker thread, as scrypt's work
does, never on the event loop. Credentials, region and endpoint come from
the standard AWS chain (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_KMS`` ...). The plaintext file key never leaves this
module except as the return value of unwrap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from .._errors import DecryptionFailed, KmsError
from .header import FILE_KEY_SIZE, Stanza, b64decode, b64encode

STANZA_TYPE = "mongosnap-kms"
ENCRYPTION_CONTEXT = {"mongosnap:purpose": "age-file-key"}
"""What KMS binds every wrapped file key to (and CloudTrail shows)."""

log = logging.getLogger("mongosnap.crypto")
_REFUSALS = {
    "NotFoundException": "not found",
    "DisabledException": "disabled",
    "KMSInvalidStateException": "not usable (disabled or pending deletion)",
    "AccessDeniedException": "refused: access denied",
    "InvalidKeyUsageException": "not an encryption key",
}


class KmsClient:
    """One botocore KMS client, made on first use (from any thread), with the
    state of each key id checked once per run."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()
        self._checked: set[str] = set()

    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                import botocore.session
                from botocore.exceptions import BotoCoreError

                try:
                    self._client = botocore.session.get_session().create_client("kms")
                except BotoCoreError as exc:
                    raise KmsError(f"cannot set up AWS KMS: {exc}") from None
            return self._client

    def call(self, operation: str, key_id: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        kms = self._kms()
        try:
            result: dict[str, Any] = getattr(kms, operation)(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidCiphertextException":
                raise DecryptionFailed(
                    f"KMS key {key_id} does not open the file key: the stanza was altered"
                    " or made for another use"
                ) from None
            why = _REFUSALS.get(code, f"refused ({code or 'unknown error'})")
            error = KmsError(f"KMS key {key_id}: {why}")
            error.code = code
            raise error from None
        except BotoCoreError as exc:
            raise KmsError(f"AWS KMS is unreachable or not configured: {exc}") from None
        return result

    def check_enabled(self, key_id: str) -> None:
        """KmsError unless key_id is an enabled key. Some KMS servers still use a
        disabled key, so this does not rely on Encrypt/Decrypt refusing; a
        caller not allowed kms:DescribeKey is let through to the real call."""
        if key_id in self._checked:
            return
        try:
            state = self.call("describe_key", key_id, KeyId=key_id)["KeyMetadata"]["KeyState"]
        except KmsError as exc:
            if exc.code != "AccessDeniedException":
                raise
            log.debug("no kms:DescribeKey on %s: its state is left to Encrypt/Decrypt", key_id)
            state = "Enabled"
        if state != "Enabled":
            raise KmsError(f"KMS key {key_id} is {state.lower()}")
        self._checked.add(key_id)


class KmsRecipient:
    """Wrap file keys with the KMS key ``key_id`` (an id, ARN or alias)."""

    def __init__(self, key_id: str, client: KmsClient | None = None) -> None:
        if not key_id or not key_id.isprintable() or " " in key_id:
            raise KmsError("a KMS key id must be a non-empty id, ARN or alias/NAME")
        self.key_id = key_id
        self._client = client or KmsClient()

    def __repr__(self) -> str:
        return f"KmsRecipient({self.key_id})"

    __str__ = __repr__

    def check(self) -> None:
        """Before any work: the key exists and is enabled (a network call)."""
        self._client.check_enabled(self.key_id)

    def wrap(self, file_key: bytes) -> Stanza:
        self._client.check_enabled(self.key_id)
        blob = self._client.call(
            "encrypt",
            self.key_id,
            KeyId=self.key_id,
            Plaintext=file_key,
            EncryptionContext=ENCRYPTION_CONTEXT,
        )["CiphertextBlob"]
        return Stanza(STANZA_TYPE, (b64encode(self.key_id.encode()).decode(),), blob)


class KmsIdentity:
    """Unwrap ``mongosnap-kms`` stanzas with KMS Decrypt, as the caller's AWS
    credentials allow."""

    def __init__(self, client: KmsClient | None = None) -> None:
        self._client = client or KmsClient()

    def __repr__(self) -> str:
        return "KmsIdentity()"

    __str__ = __repr__

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            if len(stanza.args) != 1 or not stanza.body:
                raise DecryptionFailed("a mongosnap-kms stanza must have one argument and a body")
            try:
                key_id = b64decode(stanza.args[0]).decode("utf-8")
            except UnicodeDecodeError:
                raise DecryptionFailed("a mongosnap-kms stanza names no key") from None
            self._client.check_enabled(key_id)
            file_key = self._client.call(
                "decrypt",
                key_id,
                KeyId=key_id,
                CiphertextBlob=stanza.body,
                EncryptionContext=ENCRYPTION_CONTEXT,
            )["Plaintext"]
            if len(file_key) != FILE_KEY_SIZE:
                raise DecryptionFailed(f"KMS key {key_id} unwrapped a key of the wrong size")
            return bytes(file_key)
        return None
