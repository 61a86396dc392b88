"""Tokens encrypted at rest with Fernet. Several keys so they can rotate: the first encrypts,
every one decrypts, and `rotate` (app/connections/store.py) moves old rows to the first."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.connections.errors import TokenDecryptionError


def generate_key() -> str:
    """A new key for CONNECTION_ENCRYPTION_KEYS."""
    return Fernet.generate_key().decode()


class TokenCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("CONNECTION_ENCRYPTION_KEYS holds no key")
        self._fernet = MultiFernet([_fernet(key, position) for position, key in enumerate(keys)])

    @classmethod
    def from_setting(cls, value: str) -> TokenCipher:
        """Comma-separated keys, newest first (Fernet keys never contain a comma)."""
        return cls([key.strip() for key in value.split(",") if key.strip()])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise TokenDecryptionError(
                "no key in CONNECTION_ENCRYPTION_KEYS decrypts a stored token; "
                "put the old key back (after the new one) and run the key rotation"
            ) from None

    def rotate(self, ciphertext: str) -> str:
        """The same plaintext, encrypted with the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise TokenDecryptionError("no configured key decrypts a stored token") from None


def _fernet(key: str, position: int) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        # Never echo the key itself.
        raise ValueError(
            f"CONNECTION_ENCRYPTION_KEYS key #{position + 1} is not a Fernet key "
            "(32 url-safe base64-encoded bytes); generate one with "
            "`sagebridge connections generate-key`"
        ) from None
