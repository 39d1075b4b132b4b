"""Key material: virtual keys, their hashes, and encryption of provider secrets.

Virtual keys carry 256 bits of randomness, so a plain SHA-256 is a sound at-rest hash
(no salt or slow KDF is needed against guessing) and does not tie keys to a server
secret that could be rotated. Provider credentials are encrypted with a Fernet key
derived from CONDUIT_SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "condt_"
MASTER_PREFIX = "condt_master_"
VISIBLE_CHARS = 12  # "condt_" plus six characters: enough to tell keys apart in a list.


def new_virtual_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_master_key() -> str:
    return MASTER_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_CHARS]


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


class SecretBox:
    """Encrypts and decrypts short secrets (provider API keys, header values)."""

    def __init__(self, secret: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"conduit-tornado/credentials"
        ).derive(secret.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise CredentialError(
                "stored provider credentials cannot be decrypted with the current "
                "CONDUIT_SECRET_KEY; set the key they were stored with or re-enter them"
            ) from exc


class CredentialError(Exception):
    pass
