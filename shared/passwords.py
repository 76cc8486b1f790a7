"""Password hashes of the page's users: scrypt (stdlib), stored as ``scrypt$<n>$<r>$<p>$<salt>$<hash>``.

``python -m shared.passwords`` reads a password from stdin (or asks for it) and prints its hash, for the
``user:<name>:<hash>`` lines of the page's credentials file. Verifying costs ~50 ms of CPU on purpose, so
callers run it off the event loop (``shared.http_auth`` does, and remembers who it verified).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from typing import Final

SCHEME: Final = "scrypt"
N: Final = 2**14
R: Final = 8
P: Final = 1
_KEY_BYTES: Final = 32
_MAX_N: Final = 2**20  # a hash asking for more would cost a verifier seconds and a gigabyte


class InvalidPasswordHash(ValueError):
    """Not a ``scrypt$n$r$p$salt$hash`` string this module can verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=_KEY_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a hash; raises :class:`InvalidPasswordHash` saying what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise InvalidPasswordHash("expected scrypt$<n>$<r>$<p>$<salt>$<hash> (python -m shared.passwords)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise InvalidPasswordHash("n, r, p must be integers and salt, hash base64") from None
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise InvalidPasswordHash(f"n must be a power of two up to {_MAX_N}, r 1-32, p 1-16")
    if len(salt) < 8 or len(key) < 16:
        raise InvalidPasswordHash("salt of 8 bytes and hash of 16 bytes at least")
    return n, r, p, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison of the derived key; a malformed hash never verifies."""
    try:
        n, r, p, salt, key = parse_hash(encoded)
    except InvalidPasswordHash:
        return False
    derived = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(derived, key)


def main() -> int:
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if not password:
        print("an empty password cannot be hashed", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
