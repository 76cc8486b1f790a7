"""Drop zones are configured by URL: ``file:///abs/path`` or ``s3://bucket/prefix``."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Final

from shared.dropzone.base import DropZone, redact_url
from shared.dropzone.file import FileDropZone
from shared.dropzone.s3 import S3DropZone
from shared.dropzone.s3_options import S3Options
from shared.errors import ConfigError

SCHEMES: Final = ("file", "s3")
# Looser than AWS's own rules on purpose: S3-compatible stores accept legacy names (upper case, "_").
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")


def open_dropzone(url: str, *, s3: S3Options | None = None) -> DropZone:
    """Build the zone a URL names. No I/O happens here; failures to reach it surface on first use.

    ``s3`` carries endpoint, region, credentials and upload tuning for ``s3://`` URLs; without it the
    AWS defaults apply (credentials from the environment or an IAM role). Raises
    :class:`~shared.errors.ConfigError` for an unknown scheme or a malformed URL.
    """
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigError("malformed drop-zone URL", url=shown) from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError("unsupported drop-zone URL scheme", url=shown, supported=list(SCHEMES))
    if parts.query or parts.fragment:
        raise ConfigError("drop-zone URL must not have a query or fragment", url=shown)
    path = urllib.parse.unquote(parts.path)
    if "\x00" in path:
        raise ConfigError("drop-zone URL contains a NUL character", url=shown)

    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError("file:// drop-zone URL must not name a host: use file:///abs/path", url=shown)
        if not path.startswith("/"):
            raise ConfigError("file:// drop-zone URL needs an absolute path: file:///abs/path", url=shown)
        return FileDropZone(Path(path), io_timeout_s=(s3 or S3Options()).file_io_timeout_s)

    if "@" in parts.netloc:
        raise ConfigError("credentials do not belong in a drop-zone URL: pass them as S3 options", url=shown)
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError("s3:// drop-zone URL needs a valid bucket name: s3://bucket/prefix", url=shown)
    return S3DropZone.from_options(bucket, path.strip("/"), s3 or S3Options())
