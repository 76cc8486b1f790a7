"""Settings for reaching ``s3://`` drop zones (``file://`` zones need none). Shared by ingest and publish."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.dropzone.s3_options import DEFAULT_ACL, S3Options
from shared.settings import BaseServiceSettings


class S3Settings(BaseServiceSettings):
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; unset means AWS itself.")
    s3_region: str | None = Field(None, description="AWS region of the drop-zone buckets.")
    s3_access_key_id: str | None = Field(
        None, description="Access key for s3:// drop zones (unset: the AWS default credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret key matching S3_ACCESS_KEY_ID.")
    s3_acl: str | None = Field(
        DEFAULT_ACL, description="Canned ACL on every write (the platform requires bucket-owner-full-control)."
    )

    dropzone_io_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Bound on each file:// drop-zone operation (a hung mount then counts as the zone being "
        "unavailable: retried, /readyz false); s3:// requests are bounded by their connect and read timeouts.",
    )

    def s3_options(self) -> S3Options:
        return S3Options(
            file_io_timeout_s=self.dropzone_io_timeout_s,
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            acl=self.s3_acl,
        )
