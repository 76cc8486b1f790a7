"""A drop zone in an S3 bucket (or any S3-compatible store): ``s3://bucket/prefix``.

Atomicity comes from S3 itself: a single PUT, and a multipart upload, both become visible only when
they complete. A failed multipart upload is aborted; if even the abort cannot reach S3, the parts stay
invisible and billable until the bucket's ``AbortIncompleteMultipartUpload`` lifecycle rule removes them.

``move`` is ``copy_object`` + ``delete_object``. ``copy_object`` is limited to 5 GB; the platform caps
inbound files at 5 GB (1 GB compressed), so a multipart copy is not implemented. A crash between the
copy and the delete leaves the object in both places; moving it again is harmless.

Writes carry a canned ACL, ``bucket-owner-full-control`` by default, because the platform's bucket
owner must be able to read what we upload into it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import AsyncExitStack
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from pydantic import SecretStr

from shared.dropzone.base import (
    AREAS,
    CHUNK_SIZE,
    DropZone,
    ObjectInfo,
    ObjectNotFound,
    UnsafeName,
    check_writable,
    is_listed,
    safe_name,
    safe_prefix,
)
from shared.dropzone.s3_errors import s3_errors
from shared.dropzone.s3_options import (
    CANNED_ACLS,
    DEFAULT_ACL,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    AddressingStyle,
    MiB,
    S3Options,
)
from shared.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.literals import ObjectCannedACLType
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectTypeDef


class S3DropZone(DropZone):
    """A drop zone under ``prefix`` in ``bucket``. The client is created on first use."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: SecretStr | str | None = None,
        acl: str | None = DEFAULT_ACL,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        max_attempts: int = 3,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        addressing_style: AddressingStyle = "auto",
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigError("invalid S3 bucket name", bucket=bucket)
        prefix = prefix.strip("/")
        if prefix:
            try:
                safe_name(prefix)
            except UnsafeName as exc:
                raise ConfigError("invalid S3 drop-zone prefix", bucket=bucket, prefix=prefix) from exc
        if acl is not None and acl not in CANNED_ACLS:
            raise ConfigError("unknown S3 canned ACL", acl=acl, allowed=sorted(CANNED_ACLS))
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigError("S3 part size out of range", part_size=part_size)
        if multipart_threshold < 0:
            raise ConfigError("S3 multipart threshold must not be negative", threshold=multipart_threshold)
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("S3 access key id and secret access key must be given together")
        self._bucket = bucket
        self._key_prefix = f"{prefix}/" if prefix else ""
        self._url = f"s3://{bucket}/{prefix}"
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret = SecretStr(secret_access_key) if isinstance(secret_access_key, str) else secret_access_key
        self._acl_args: dict[str, Any] = {"ACL": cast("ObjectCannedACLType", acl)} if acl else {}
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # total_max_attempts counts the first try; botocore's max_attempts would count retries only.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": addressing_style},
        )
        self._stack = AsyncExitStack()
        self._s3: S3Client | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_options(cls, bucket: str, prefix: str, options: S3Options) -> S3DropZone:
        return cls(
            bucket,
            prefix,
            endpoint_url=options.endpoint_url,
            region=options.region,
            access_key_id=options.access_key_id,
            secret_access_key=options.secret_access_key,
            acl=options.acl,
            multipart_threshold=options.multipart_threshold,
            part_size=options.part_size,
            max_attempts=options.max_attempts,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            addressing_style=options.addressing_style,
        )

    @property
    def url(self) -> str:
        return self._url

    @property
    def bucket(self) -> str:
        return self._bucket

    def key(self, name: str) -> str:
        """The S3 key that holds ``name``."""
        return self._key_prefix + safe_name(name)

    # ------------------------------------------------------------------ plumbing

    async def _client(self) -> S3Client:
        if self._s3 is not None:
            return self._s3
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._s3 is None:
                secret = self._secret.get_secret_value() if self._secret is not None else None
                self._s3 = await self._stack.enter_async_context(
                    _session().create_client(
                        "s3",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        aws_access_key_id=self._access_key_id,
                        aws_secret_access_key=secret,
                        config=self._config,
                    )
                )
            return self._s3

    def _errors(self, op: str, name: str | None) -> contextlib.AbstractContextManager[None]:
        return s3_errors(op, name, url=self._url, endpoint_url=self._endpoint_url)

    # ------------------------------------------------------------------ API

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        safe_prefix(prefix)
        full = self._key_prefix + prefix
        if "/" in prefix:
            # Confined to one top-level folder: either an area that was asked for, or none at all.
            objects = await self._scan(full, prefix)
        else:
            # List the top level with a delimiter first so the archive areas, which grow for as long
            # as the retention allows, are never paged through just to be filtered out.
            objects, folders = await self._scan_level(full, prefix)
            for folder in folders:
                if folder[len(self._key_prefix) :].rstrip("/") not in AREAS:
                    objects += await self._scan(folder, prefix)
        infos = [
            ObjectInfo(obj["Key"][len(self._key_prefix) :], obj["Size"], obj["LastModified"].astimezone(UTC))
            for obj in objects
        ]
        infos = [info for info in infos if is_listed(info.name, prefix)]
        infos.sort(key=lambda info: info.name)
        return infos

    async def _scan(self, key_prefix: str, prefix: str) -> builtins.list[ObjectTypeDef]:
        client = await self._client()
        found: builtins.list[ObjectTypeDef] = []
        with self._errors("list", prefix):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=key_prefix):
                found.extend(page.get("Contents", []))
        return found

    async def _scan_level(
        self, key_prefix: str, prefix: str
    ) -> tuple[builtins.list[ObjectTypeDef], builtins.list[str]]:
        client = await self._client()
        found: builtins.list[ObjectTypeDef] = []
        folders: builtins.list[str] = []
        with self._errors("list", prefix):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=key_prefix, Delimiter="/"):
                found.extend(page.get("Contents", []))
                folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []) if "Prefix" in p)
        return found, folders

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        key = self.key(name)
        client = await self._client()
        with self._errors("read", name):
            response = await client.get_object(Bucket=self._bucket, Key=key)
        async with response["Body"] as body:
            while True:
                # body.read(n) is what body.iter_chunks(n) loops over; calling it directly lets each
                # chunk's network errors be translated without an inner generator left to finalise.
                with self._errors("read", name):
                    chunk = await body.read(CHUNK_SIZE)
                if not chunk:
                    return
                yield chunk

    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        key = self._key_prefix + check_writable(name)
        client = await self._client()
        if isinstance(data, bytes | bytearray | memoryview):
            if len(data) <= self._threshold:
                with self._errors("write", name):
                    await client.put_object(Bucket=self._bucket, Key=key, Body=bytes(data), **self._acl_args)
            else:
                await self._upload_stream(client, key, name, _slices(data, self._part_size))
        else:
            await self._upload_stream(client, key, name, data)
        with self._errors("write", name):
            head = await client.head_object(Bucket=self._bucket, Key=key)
        return ObjectInfo(name, head["ContentLength"], head["LastModified"].astimezone(UTC))

    async def _upload_stream(self, client: S3Client, key: str, name: str, data: AsyncIterable[bytes]) -> None:
        """Single PUT if the stream turns out small, else a multipart upload; memory stays ~one part."""
        buffer = bytearray()
        upload_id: str | None = None
        parts: builtins.list[CompletedPartTypeDef] = []

        async def upload_part(upload_id: str, payload: bytes) -> None:
            with self._errors("write", name):
                part = await client.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=payload
                )
            completed: CompletedPartTypeDef = {"ETag": part["ETag"], "PartNumber": len(parts) + 1}
            if "ChecksumCRC32" in part:
                completed["ChecksumCRC32"] = part["ChecksumCRC32"]
            parts.append(completed)

        try:
            # The caller's iterable is consumed outside self._errors: its own failures are not ours to
            # relabel, they propagate unchanged (after the abort below).
            async for chunk in data:
                buffer += chunk
                if upload_id is None and len(buffer) > self._threshold:
                    with self._errors("write", name):
                        created = await client.create_multipart_upload(Bucket=self._bucket, Key=key, **self._acl_args)
                    upload_id = created["UploadId"]
                while upload_id is not None and len(buffer) >= self._part_size:
                    await upload_part(upload_id, bytes(buffer[: self._part_size]))
                    del buffer[: self._part_size]
            if upload_id is None:
                with self._errors("write", name):
                    await client.put_object(Bucket=self._bucket, Key=key, Body=bytes(buffer), **self._acl_args)
                return
            if buffer or not parts:
                await upload_part(upload_id, bytes(buffer))
            with self._errors("write", name):
                await client.complete_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                await self._abort(client, key, upload_id)
            raise

    async def _abort(self, client: S3Client, key: str, upload_id: str) -> None:
        abort = client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        # Shielded so that a second cancellation cannot interrupt it; best effort, because the
        # original error is what the caller must see (the lifecycle rule is the safety net).
        with contextlib.suppress(Exception):
            await asyncio.shield(abort)

    async def _move_object(self, name: str, target: str) -> None:
        client = await self._client()
        source_key, target_key = self.key(name), self.key(target)
        with self._errors("move", name):
            await client.copy_object(
                Bucket=self._bucket,
                Key=target_key,
                CopySource={"Bucket": self._bucket, "Key": source_key},
                **self._acl_args,
            )
            await client.delete_object(Bucket=self._bucket, Key=source_key)

    async def delete(self, name: str, *, missing_ok: bool = False) -> None:
        key = self.key(name)
        # S3's DELETE succeeds on a missing key, so absence has to be checked first to report it.
        if not missing_ok and not await self.exists(name):
            raise ObjectNotFound("drop-zone object not found", url=self._url, name=name)
        client = await self._client()
        with self._errors("delete", name):
            await client.delete_object(Bucket=self._bucket, Key=key)

    async def exists(self, name: str) -> bool:
        key = self.key(name)
        client = await self._client()
        try:
            with self._errors("exists", name):
                await client.head_object(Bucket=self._bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            self._s3 = None
            await self._stack.aclose()


@functools.cache
def _session() -> AioSession:
    # One session for the process: it caches the parsed service models, which otherwise cost a few
    # hundred milliseconds for every zone that opens a client.
    return get_session()


async def _slices(data: bytes | bytearray | memoryview, size: int) -> AsyncGenerator[bytes, None]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])
