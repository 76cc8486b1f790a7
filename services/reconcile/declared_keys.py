"""Declared keys in SQL: the one place that writes a recipient's declared-key expression.

Matching (import), resolving (export), re-matching and the indexes must all use the very same
expression, or the planner cannot use the indexes. The usual keys are stored columns of ``recipient``
(generated from ``ab_key``, see schemas/sql/005): exporting a large list then reads them
instead of hashing every member. Any other key/transform is the ``ab_key(<column>,
'<transform>')`` expression itself, with an expression index made on demand. The column and the
transform come from fixed whitelists, never from input, so the text is safe to splice into SQL.
"""

from __future__ import annotations

from typing import Final

from shared.errors import PermanentError
from shared.ids import KEY_TRANSFORMS  # one list of transforms: Python computes the same keys (shared.ids)

RECONCILIATION_KEYS: Final = ("recipient_id", "email", "crm_id")

# (key, transform) -> the stored generated column holding ab_key(key, transform).
STORED_KEYS: Final = {("email", "sha256"): "key_email_sha256", ("crm_id", "none"): "key_crm_id_none"}

# A declared ID must survive the platform's file formats: printable ASCII without separators.
# (Postgres caps regex repetition counts at 255, hence the separate length test.)
_VALID_DECLARED: Final = "{expr} ~ '^[!-~]+$' AND length({expr}) <= 256 AND {expr} !~ '[,=:]'"


def _check(key: str | None, transform: str) -> None:
    if key not in RECONCILIATION_KEYS or transform not in KEY_TRANSFORMS:
        raise PermanentError("unsupported reconciliation key", key=key, transform=transform)


def declared_key_sql(key: str | None, transform: str, *, alias: str | None = "r") -> str:
    """The SQL of a recipient's declared key (``alias`` names the recipient table; None: bare)."""
    _check(key, transform)
    prefix = f"{alias}." if alias is not None else ""
    stored = STORED_KEYS.get((key, transform))  # type: ignore[arg-type]
    if stored is not None:
        return prefix + stored
    column = "recipient_id::text" if key == "recipient_id" else key
    return f"ab_key({prefix}{column}, '{transform}')"


def exportable_key_sql(key: str | None, transform: str, *, alias: str | None = "r") -> str:
    """A condition true when the recipient's declared key can be written to the platform's files.

    A SHA-256 key is 64 hex digits whenever it is not NULL; any other key must be printable ASCII
    without the formats' separators, at most 256 characters."""
    expr = declared_key_sql(key, transform, alias=alias)
    if transform == "sha256":
        return f"{expr} IS NOT NULL"
    return "(" + _VALID_DECLARED.format(expr=expr) + ")"


def unexportable_key_sql(key: str | None, transform: str, *, alias: str | None = "r") -> str:
    """The negation of :func:`exportable_key_sql` (true also for a missing key). For a stored SHA-256 key
    this is ``<column> IS NULL``, which a partial index answers without reading the whole list."""
    expr = declared_key_sql(key, transform, alias=alias)
    if transform == "sha256":
        return f"{expr} IS NULL"
    return "NOT coalesce(" + _VALID_DECLARED.format(expr=expr) + ", false)"
