"""The keys real-time deliveries may be signed with: ``REALTIME_SIGNING_KEYS_FILE``, one key a line.

Several lines are several keys valid at once, which is how a rotation goes without downtime: add the new
key, have the platform switch to it, remove the old one. The file is read at start (a missing, unreadable
or empty file stops the service) and read again when its modification time or size changes, checked at
most once per ``recheck_s``: a rotation needs no restart. A later unreadable or empty file keeps the keys
already loaded (logged), so a half-written edit cannot lock the platform out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.errors import ConfigError
from shared.logging import get_logger

log = get_logger(__name__)


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The keys a file's text holds: one a line, surrounding blanks ignored, ``#`` lines are comments."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(dict.fromkeys(line.encode() for line in lines if line and not line.startswith("#")))


class KeyRing:
    def __init__(self, path: Path, *, recheck_s: float = 1.0) -> None:
        self._path = path
        self._recheck_s = recheck_s
        self._stamp: tuple[int, int] | None = None
        self._checked_at = time.monotonic()
        try:
            self._keys = self._read()
        except OSError as exc:
            raise ConfigError("REALTIME_SIGNING_KEYS_FILE cannot be read", path=str(path), error=exc.strerror) from None
        if not self._keys:
            raise ConfigError("REALTIME_SIGNING_KEYS_FILE holds no key", path=str(path))

    def keys(self) -> tuple[bytes, ...]:
        now = time.monotonic()
        if now - self._checked_at >= self._recheck_s:
            self._checked_at = now
            self._reload()
        return self._keys

    def _read(self) -> tuple[bytes, ...]:
        stat = os.stat(self._path)
        keys = parse_keys(self._path.read_text(encoding="utf-8"))
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return keys

    def _reload(self) -> None:
        try:
            stat = os.stat(self._path)
            if (stat.st_mtime_ns, stat.st_size) == self._stamp:
                return
            keys = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("realtime_keys_unreadable_kept_previous", path=str(self._path), error=str(exc))
            return
        if not keys:
            log.error("realtime_keys_empty_kept_previous", path=str(self._path))
            return
        if keys != self._keys:
            log.info("realtime_keys_reloaded", path=str(self._path), keys=len(keys))
        self._keys = keys
