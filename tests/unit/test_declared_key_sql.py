"""The one SQL expression of declared keys, and its whitelist."""

from __future__ import annotations

import pytest

from services.reconcile.keys import declared_key_sql
from shared.errors import PermanentError


def test_expression_matches_the_indexes_and_joins() -> None:
    assert declared_key_sql("email", "sha256") == "ab_declared_key(r.email, 'sha256')"
    assert declared_key_sql("recipient_id", "none", alias=None) == "ab_declared_key(recipient_id::text, 'none')"


@pytest.mark.parametrize(
    ("key", "transform"), [("email; DROP TABLE recipient", "none"), ("email", "md5"), (None, "none"), ("", "sha256")]
)
def test_anything_off_the_whitelist_is_refused(key: str | None, transform: str) -> None:
    with pytest.raises(PermanentError, match="unsupported reconciliation key"):
        declared_key_sql(key, transform)
