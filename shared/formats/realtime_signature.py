"""How the platform signs a real-time delivery: an HMAC of the request body (of path + query for GET
destinations) with a key the partner shares, base64-encoded, in a header the partner names; the hash is
SHA-1 (the documentation's example), SHA-256 or MD5.

During a key rotation several keys are valid at once: :func:`verify` accepts a signature made with any of
them, comparing in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Final, Literal, get_args

SignatureAlgorithm = Literal["sha1", "sha256", "md5"]
ALGORITHMS: Final[tuple[str, ...]] = get_args(SignatureAlgorithm)
_DIGESTS: Final = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}


def sign(message: bytes, key: bytes, algorithm: SignatureAlgorithm = "sha1") -> str:
    """The signature the platform sends for ``message`` (a POST's body, a GET's path + query)."""
    return base64.b64encode(hmac.digest(key, message, _DIGESTS[algorithm])).decode("ascii")


def verify(message: bytes, signature: str, keys: Sequence[bytes], algorithm: SignatureAlgorithm = "sha1") -> bool:
    """Whether ``signature`` is the signature of ``message`` under one of ``keys``. Every key is tried (no early
    exit), each comparison in constant time, so timing tells nothing about which key or how much matched."""
    given = signature.strip().encode("ascii", errors="replace")
    matched = False
    for key in keys:
        # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than an hmac.new object per delivery.
        expected = base64.b64encode(hmac.digest(key, message, _DIGESTS[algorithm]))
        matched |= hmac.compare_digest(expected, given)
    return matched
