"""Drop zones: where the bridge and the platform exchange complete files (``file://`` or ``s3://``)."""

from shared.dropzone.base import (
    AREAS,
    MAX_NAME_BYTES,
    REASON_SUFFIX,
    TEMP_PREFIX,
    Area,
    DropZone,
    DropZoneRejected,
    DropZoneUnavailable,
    ObjectInfo,
    ObjectNotFound,
    UnsafeName,
    redact_url,
    safe_name,
)
from shared.dropzone.factory import open_dropzone
from shared.dropzone.file import FileDropZone
from shared.dropzone.s3 import S3DropZone
from shared.dropzone.s3_options import S3Options

__all__ = [
    "AREAS",
    "MAX_NAME_BYTES",
    "REASON_SUFFIX",
    "TEMP_PREFIX",
    "Area",
    "DropZone",
    "DropZoneRejected",
    "DropZoneUnavailable",
    "FileDropZone",
    "ObjectInfo",
    "ObjectNotFound",
    "S3DropZone",
    "S3Options",
    "UnsafeName",
    "open_dropzone",
    "redact_url",
    "safe_name",
]
