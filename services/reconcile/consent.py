"""Consent on the import side: may opted-out recipients still join campaign lists (``IMPORT_OPTED_OUT``)?

Exports always leave them out (:mod:`services.reconcile.export_diff`). Imports follow the setting, which reconcile
gives each of its database sessions as the custom setting ``audience_bridge.import_opted_out`` (``on``/``off``):
the statements that add members test it where they add, so no caller has to carry it along. A session without it
admits them, the default; the CLI's ``rematch`` sets it on its connection (:func:`set_for_session`) from the same
``IMPORT_OPTED_OUT``.
"""

from __future__ import annotations

from typing import Any, Final

GUC: Final = "audience_bridge.import_opted_out"


def session_settings(import_opted_out: bool) -> dict[str, str]:
    return {GUC: "on" if import_opted_out else "off"}


async def set_for_session(conn: Any, import_opted_out: bool) -> None:
    """The setting on an open connection (one not made by reconcile's pool, whose sessions carry it already)."""
    await conn.execute("SELECT set_config($1, $2, false)", GUC, session_settings(import_opted_out)[GUC])


def admitted_sql(recipient_id: str) -> str:
    """A condition true when the recipient ``recipient_id`` (an SQL expression) may join a list by import. The
    setting is tested first: admitted (the default), the opted-out look-up is never evaluated."""
    return (
        f"(current_setting('{GUC}', true) IS DISTINCT FROM 'off' "  # noqa: S608 - a column name of the callers' SQL
        f"OR NOT EXISTS (SELECT 1 FROM recipient o WHERE o.recipient_id = {recipient_id} AND o.opted_out))"
    )


# When imports may not hold them, recipients who just opted out (``changed_recipients``) leave the import lists.
LEAVE_IMPORT_LISTS: Final = f"""
DELETE FROM list_member lm USING changed_recipients c, shared_audience sa
 WHERE current_setting('{GUC}', true) = 'off' AND c.opted_out AND NOT c.is_delete
   AND lm.recipient_id = c.recipient_id AND sa.list_id = lm.list_id AND sa.direction = 'import'
"""  # noqa: S608 - fixed text
