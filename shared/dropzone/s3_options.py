"""How an S3 drop zone reaches its bucket (``S3Options``, the ``*_S3_*`` settings) and the limits S3 sets on
what it accepts: part sizes, canned ACLs, addressing styles."""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MiB: Final = 1024 * 1024
MIN_PART_SIZE: Final = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE: Final = 5 * 1024 * MiB
DEFAULT_ACL: Final = "bucket-owner-full-control"
CANNED_ACLS: Final = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
    }
)
AddressingStyle = Literal["auto", "virtual", "path"]


class S3Options(BaseModel):
    """How to reach S3. Credentials left unset fall back to the AWS default chain (env, IAM role)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(None, description="For S3-compatible stores; None means AWS.")
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    acl: str | None = Field(DEFAULT_ACL, description="Canned ACL sent with every write; None sends none.")
    multipart_threshold: int = Field(8 * MiB, ge=0, description="Larger objects use a multipart upload.")
    part_size: int = Field(8 * MiB, ge=MIN_PART_SIZE, le=MAX_PART_SIZE)
    max_attempts: int = Field(3, ge=1, description="Total attempts per request, retries included.")
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    addressing_style: AddressingStyle = "auto"
    file_io_timeout_s: float = Field(
        60.0, gt=0, description="Bound on each file:// operation run in a thread (carried here for both kinds)."
    )

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> Self:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if self.acl is not None and self.acl not in CANNED_ACLS:
            raise ValueError(f"acl must be one of {sorted(CANNED_ACLS)}")
        return self
