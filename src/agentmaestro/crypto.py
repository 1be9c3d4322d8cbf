"""Encryption at rest and signed tokens, from one keyring of Fernet keys.

Keys come from ``MAESTRO_SECRET_KEYS`` (comma-separated Fernet keys, newest first), else
``MAESTRO_SECRET_KEY``, else the file ``$MAESTRO_HOME/secret.key`` (one key per line, newest first),
which is created with mode 0600 on first use so the embedded default works out of the box.

Rotation: put a new key first and keep the old ones after it. Everything encrypted with an old key
still decrypts; :meth:`Keyring.rotate` re-encrypts a token with the newest key, and signatures made
with an old key still verify until that key is removed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentmaestro.errors import ConfigError

__all__ = ["DecryptionError", "DerivedKey", "Keyring", "generate_key", "keyring"]

KEYS_ENV = "MAESTRO_SECRET_KEYS"
KEY_ENV = "MAESTRO_SECRET_KEY"
KEY_FILE = "secret.key"


class DecryptionError(ConfigError):
    """A ciphertext was not made by any key of the keyring (wrong or removed key, or tampering)."""


def _create_key_file(path: Path) -> None:
    """Create ``path`` holding a new key, atomically: another process sees no file or a whole one.

    The key is written to a private temporary file that is then hard-linked into place; the link
    fails if another process got there first, and then that process's key is the one used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_key() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode()


@dataclass(frozen=True, kw_only=True)
class DerivedKey:
    """A key derived from one keyring key for one purpose (never the Fernet key itself)."""

    key_id: str
    """A short, non-secret fingerprint (16 hex digits), stored next to what the key made."""
    secret: bytes = field(repr=False)
    """32 bytes of HKDF-SHA256 output."""


def derive_key(fernet_key: str, purpose: str) -> DerivedKey:
    """HKDF-SHA256 of a Fernet key's 32 bytes, with ``purpose`` as the info: one key per purpose."""
    raw = base64.urlsafe_b64decode(fernet_key.strip())
    info = f"agentmaestro/{purpose}".encode()
    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)
    key_id = hmac.new(secret, b"key-id", hashlib.sha256).hexdigest()[:16]
    return DerivedKey(key_id=key_id, secret=secret)


class Keyring:
    """Fernet keys, newest first: encrypt with the newest, decrypt and verify with any."""

    def __init__(self, keys: list[str]) -> None:
        """Build a keyring; raises ConfigError naming the bad key's position when one is not a Fernet key."""
        if not keys:
            raise ConfigError("no secret keys configured")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"secret key #{i + 1} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    "make one with `maestro secret-key generate`"
                ) from None
        self._keys = [k.strip() for k in keys]
        self._multi = MultiFernet(fernets)
        # Signing keys are derived, so a signature never reveals or reuses the encryption key itself.
        self._mac_keys = [
            hashlib.sha256(b"agentmaestro-sign:" + base64.urlsafe_b64decode(k)).digest() for k in self._keys
        ]
        self._derived: dict[str, tuple[DerivedKey, ...]] = {}
        self._derived_lock = threading.Lock()

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Keyring:
        """The keyring configured by the environment (see the module docstring)."""
        many = os.environ.get(KEYS_ENV, "").strip()
        if many:
            return cls([k for k in many.split(",") if k.strip()])
        one = os.environ.get(KEY_ENV, "").strip()
        if one:
            return cls([one])
        path = Path(home or os.environ.get("MAESTRO_HOME", ".maestro")) / KEY_FILE
        if not path.exists():
            _create_key_file(path)
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        return cls(lines)

    @property
    def key_id(self) -> str:
        """A short, non-secret fingerprint of the newest key (to tell which key encrypted what)."""
        return hashlib.sha256(self._keys[0].encode()).hexdigest()[:12]

    def derived(self, purpose: str) -> tuple[DerivedKey, ...]:
        """One key per keyring key for ``purpose`` (HKDF-SHA256), newest first; computed once."""
        with self._derived_lock:
            keys = self._derived.get(purpose)
            if keys is None:
                keys = self._derived[purpose] = tuple(derive_key(k, purpose) for k in self._keys)
            return keys

    def encrypt(self, plaintext: str | bytes) -> str:
        """Encrypt with the newest key; the token is url-safe text and carries its creation time."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return self._multi.encrypt(data).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a token made by any key of the keyring; raises DecryptionError otherwise."""
        try:
            return self._multi.decrypt(token.encode()).decode()
        except InvalidToken:
            raise DecryptionError("cannot decrypt: the value was encrypted with a key that is not configured") from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token with the newest key (for key rotation)."""
        try:
            return self._multi.rotate(token.encode()).decode()
        except InvalidToken:
            raise DecryptionError("cannot rotate: the value was encrypted with a key that is not configured") from None

    def sign(self, message: str | bytes) -> str:
        """An HMAC-SHA256 signature (url-safe base64, no padding) of ``message`` with the newest key."""
        data = message.encode() if isinstance(message, str) else message
        digest = hmac.new(self._mac_keys[0], data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, message: str | bytes, signature: str) -> bool:
        """Whether ``signature`` was made by :meth:`sign` with any key of the keyring (constant time)."""
        data = message.encode() if isinstance(message, str) else message
        ok = False
        for key in self._mac_keys:
            digest = base64.urlsafe_b64encode(hmac.new(key, data, hashlib.sha256).digest()).rstrip(b"=").decode()
            ok |= hmac.compare_digest(digest, signature)
        return ok


_cached: tuple[tuple[str, str, str], Keyring] | None = None
_lock = threading.Lock()


def keyring() -> Keyring:
    """The process keyring from the environment, cached until the environment changes."""
    global _cached
    marker = (os.environ.get(KEYS_ENV, ""), os.environ.get(KEY_ENV, ""), os.environ.get("MAESTRO_HOME", ".maestro"))
    with _lock:
        if _cached is None or _cached[0] != marker:
            _cached = (marker, Keyring.from_env())
        return _cached[1]
