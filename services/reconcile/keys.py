"""Declared keys in SQL: the one place that writes ``ab_declared_key(<recipient column>, '<transform>')``.

Matching (import), resolving (export), re-matching and the expression indexes must all use the very same
expression, or the planner cannot use the indexes. The column and the transform come from fixed
whitelists, never from input, so the text is safe to splice into SQL.
"""

from __future__ import annotations

from typing import Final

from shared.errors import PermanentError

RECONCILIATION_KEYS: Final = ("recipient_id", "email", "crm_id")
KEY_TRANSFORMS: Final = ("none", "sha256")


def declared_key_sql(key: str | None, transform: str, *, alias: str | None = "r") -> str:
    """The SQL expression of a recipient's declared key (``alias`` names the recipient table; None: bare)."""
    if key not in RECONCILIATION_KEYS or transform not in KEY_TRANSFORMS:
        raise PermanentError("unsupported reconciliation key", key=key, transform=transform)
    column = "recipient_id::text" if key == "recipient_id" else key
    if alias is not None:
        column = f"{alias}.{column}"
    return f"ab_declared_key({column}, '{transform}')"
