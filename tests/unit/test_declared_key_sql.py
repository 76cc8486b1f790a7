"""The one SQL expression of declared keys, and its whitelist."""

from __future__ import annotations

import pytest

from services.reconcile.declared_keys import declared_key_sql, exportable_key_sql, unexportable_key_sql
from shared.errors import PermanentError


def test_usual_keys_are_stored_columns_others_the_expression() -> None:
    assert declared_key_sql("email", "sha256") == "r.key_email_sha256"
    assert declared_key_sql("crm_id", "none", alias=None) == "key_crm_id_none"
    assert declared_key_sql("email", "none") == "ab_key(r.email, 'none')"
    assert declared_key_sql("recipient_id", "none", alias=None) == "ab_key(recipient_id::text, 'none')"


def test_a_hashed_key_needs_no_format_check() -> None:
    # SHA-256 keys are 64 hex digits whenever present: only their absence makes a recipient excluded.
    assert exportable_key_sql("email", "sha256") == "r.key_email_sha256 IS NOT NULL"
    assert unexportable_key_sql("email", "sha256") == "r.key_email_sha256 IS NULL"
    assert "!~ '[,=:]'" in exportable_key_sql("crm_id", "none")
    assert unexportable_key_sql("crm_id", "none").startswith("NOT coalesce(")


@pytest.mark.parametrize(
    ("key", "transform"), [("email; DROP TABLE recipient", "none"), ("email", "md5"), (None, "none"), ("", "sha256")]
)
def test_anything_off_the_whitelist_is_refused(key: str | None, transform: str) -> None:
    with pytest.raises(PermanentError, match="unsupported reconciliation key"):
        declared_key_sql(key, transform)
