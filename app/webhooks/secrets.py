"""Webhook signing secrets: made in Standard Webhooks form (`whsec_` + base64 of random bytes),
stored only encrypted (AES-256-GCM under a key derived from `SIMWIRE_SECRET_KEY`)."""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = "v1:"


def new_signing_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key a Standard Webhooks signature uses: the base64 after `whsec_`, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


class SecretBox:
    """Encrypts signing secrets for storage. Each ciphertext is bound to the id of the row it
    belongs to, so a secret copied onto another endpoint's row does not decrypt."""

    def __init__(self, operator_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"simwire webhook secrets v1"
        ).derive(operator_key.encode())
        self._aead = AESGCM(key)

    def seal(self, secret: str, owner_id: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), owner_id.encode())
        return _FORMAT + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, owner_id: str) -> str:
        """The secret, or ValueError when `stored` was not sealed by this key for `owner_id`."""
        if not stored.startswith(_FORMAT):
            raise ValueError("not a sealed secret")
        raw = base64.b64decode(stored.removeprefix(_FORMAT))
        try:
            opened = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], owner_id.encode())
        except InvalidTag:
            raise ValueError("the sealed secret does not open with this key") from None
        return opened.decode()
