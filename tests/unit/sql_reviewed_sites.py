"""The SQL sites reviewed by hand (``tests/unit/test_sql_static.py`` scans for them): where a statement's text
is assembled from something other than literals, and why no input can reach it; and every ``# noqa: S608``.

Kept apart from the scan so that reviewing a new site is an edit of this list alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, order=True)
class Site:
    """One place where SQL text depends on an expression: file, enclosing scope, kind, the expression."""

    path: str
    scope: str
    kind: str  # "interpolates" (into SQL text) or "query" (a database call's non-literal query)
    expr: str


_KEYS = "from the fixed whitelists ('recipient_id', 'email', 'crm_id') x ('none', 'sha256')"
REVIEWED: Final[dict[Site, str]] = {
    # reconcile: declared keys, all written by services/reconcile/declared_keys.py declared_key_sql(), which
    # raises for anything off the whitelists.
    Site("services/reconcile/import_delta.py", "_DECLARED_APPLY", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/import_delta.py", "apply_delta", "query", "apply_statement(target)"): (
        "one of the prebuilt statements of _ECID_APPLY/_DECLARED_APPLY, looked up, never built from the target"
    ),
    Site(
        "services/reconcile/import_snapshot.py",
        "_DECLARED_SNAPSHOT",
        "interpolates",
        "declared_key_sql(key, transform)",
    ): f"declared_key_sql over {_KEYS}",
    Site("services/reconcile/import_snapshot.py", "match_snapshot", "interpolates", "snapshot_join(target)"): (
        "one of the prebuilt statements of _ECID_SNAPSHOT/_DECLARED_SNAPSHOT, looked up, never built from the target"
    ),
    # reconcile: the export diff.
    Site("services/reconcile/export_diff.py", "CURRENT_IDS", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "CURRENT_IDS", "interpolates", "exportable_key_sql(key, transform)"): (
        f"declared_keys.py's condition over the same declared_key_sql, {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "EXCLUDED", "interpolates", "unexportable_key_sql(key, transform)"): (
        f"declared_keys.py's condition over the same declared_key_sql, {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "diff_sql", "interpolates", "current_ids"): (
        "one of the prebuilt CURRENT_IDS statements, chosen by the data source's kind"
    ),
    Site("services/reconcile/export_run_rows.py", "record_left_out", "interpolates", "EXCLUDED[source.kind]"): (
        "a prebuilt EXCLUDED statement; its caller checked source.kind against CURRENT_IDS first"
    ),
    Site("services/reconcile/exporting.py", "Exporter._emit", "query", "query.sql"): (
        "diff_sql(...) of a prebuilt statement"
    ),
    Site("services/reconcile/insights_queries.py", "list_audience_overlap", "interpolates", "ids"): (
        "a CURRENT_IDS query looked up by the data source's (id_type, key, transform), never built from input"
    ),
    Site("services/reconcile/export_guard.py", "removal_plan", "interpolates", "current_ids"): (
        "one of the prebuilt CURRENT_IDS statements, chosen by the data source's kind"
    ),
    Site("services/reconcile/export_release.py", "release_plan", "interpolates", "query.sql"): (
        "diff_sql(...) of a prebuilt CURRENT_IDS statement"
    ),
    # reconcile: catalog indexes and re-matching.
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "key"): (
        "validated by declared_key_sql on the line above (it raises off the whitelist)"
    ),
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "transform"): (
        "validated by declared_key_sql on the line above (it raises off the whitelist)"
    ),
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "expression"): (
        "declared_key_sql(key, transform) of the whitelisted key and transform"
    ),
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "key"): f"{_KEYS} (_STATEMENTS)",
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "transform"): f"{_KEYS} (_STATEMENTS)",
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS} (_STATEMENTS)"
    ),
    Site("services/reconcile/rematch.py", "rematch", "query", "sql"): "one of the prebuilt _STATEMENTS",
    # publish: reading the staged run.
    Site("services/publish/files.py", "_write_once", "query", "q.plan"): "a prebuilt _SYNC_PLAN/_OVERWRITE_PLAN",
    Site("services/publish/files.py", "_write_once", "query", "q.rows"): "a prebuilt _SYNC_ROWS/_OVERWRITE_ROWS",
    Site("services/publish/file_set_rows.py", "set_query.fetch_overwrite", "query", "FETCH_ROWS"): (
        "a cursor's fetch(n): a row count"
    ),
    Site("services/publish/file_set_rows.py", "set_query.fetch_sync", "query", "STAGED_BATCHES_PER_FETCH"): (
        "a cursor's fetch(n): a row count"
    ),
    # cli: `audience-bridge run` reads a run's files with the status page's constant statement.
    Site("services/cli/run_commands.py", "run_cmd.read", "query", "RUN_FILES_SQL"): (
        "services/reconcile/status_files.RUN_FILES_SQL: a constant column list and literals"
    ),
    # shared: migrations are the repository's own files.
    Site("shared/migrations.py", "migrate", "query", "migration.sql"): "schemas/sql/NNN_name.sql from the repo",
    # The campaign streams (issue 18): recipient changes, clicks, consent, erasure, retention.
    Site("services/reconcile/consent.py", "admitted_sql", "interpolates", "recipient_id"): (
        "a column name its callers write as a literal (member_ids, import_snapshot)"
    ),
    Site("services/reconcile/member_ids.py", "_ADD", "interpolates", "admitted_sql('a.recipient_id')"): (
        "consent.admitted_sql over a literal column name; the GUC name is a constant"
    ),
    Site("services/reconcile/member_ids.py", "add_members", "query", "_ADD"): "the module's _ADD, built once",
    Site("services/reconcile/import_snapshot.py", "_ADD_TRACKED", "interpolates", "admitted_sql('s.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site("services/reconcile/import_snapshot.py", "_ADD", "interpolates", "admitted_sql('s.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site(
        "services/reconcile/import_snapshot.py",
        "apply_snapshot",
        "query",
        "_ADD_TRACKED if target.tracks_ids else _ADD",
    ): ("one of the module's two statements, built once"),
    Site("services/reconcile/export_run_rows.py", "record_left_out", "query", "OPTED_OUT"): (
        "export_diff.OPTED_OUT: a constant statement"
    ),
    Site("services/reconcile/recipient_changes.py", "apply_changes", "query", "LEAVE_IMPORT_LISTS"): (
        "consent.LEAVE_IMPORT_LISTS: a constant statement (the GUC name is a constant)"
    ),
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "key"): _KEYS,
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "transform"): _KEYS,
    Site("services/reconcile/recipient_erasure.py", "withdraw_and_delete", "query", "sql"): (
        "one of the module's _STATEMENTS, built once over the whitelists"
    ),
    Site("services/reconcile/rematch.py", "_ecid", "interpolates", "only"): (
        "'' or the module's literal restriction to the new_links temporary table"
    ),
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "only"): (
        "'' or the module's literal restriction to the changed_recipients temporary table"
    ),
    Site("services/reconcile/rematch.py", "rematch_new_links", "query", "_ECID_OF_NEW_LINKS"): (
        "built once from _ecid and a literal restriction"
    ),
    Site("services/reconcile/rematch.py", "rematch_changed_recipients", "query", "sql"): (
        f"one of _DECLARED_OF_CHANGED's values, built once over {_KEYS}"
    ),
    Site("shared/runs/purge.py", "purge_staging", "query", "sql"): "one of the module's constant _STAGING statements",
    Site("shared/runs/purge.py", "purge_finished_runs", "query", "sql"): (
        "one of the module's constant _RUN_DETAILS statements"
    ),
    Site("services/reconcile/visitor_links.py", "link_pending_of_changed", "query", "_LINK_PENDING_OF_CHANGED"): (
        "_MOVE_PENDING formatted once with a literal restriction"
    ),
    Site("services/reconcile/visitor_links.py", "link_all_pending", "query", "_LINK_ALL_PENDING"): (
        "_MOVE_PENDING formatted once with no restriction"
    ),
    Site(
        "services/cli/loads.py",
        "load_recipients",
        "query",
        "UPSERT_WITH_CONSENT if 'opted_out' in header else UPSERT_KEEPING_CONSENT",
    ): ("one of two statements built once from literals; the header only chooses which"),
    Site("services/cli/demo_streams.py", "CampaignStreams._until", "query", "sql"): (
        "the demo's own literal queries, passed by its methods"
    ),
    # The import preview runs the import's own match statement read-only.
    Site("services/cli/import_preview.py", "_preview_one", "interpolates", "admitted_sql('m.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site("services/cli/import_preview.py", "_preview_one", "interpolates", "join"): (
        "snapshot_join(target): one of import_snapshot's prebuilt joins, looked up, never built from the target"
    ),
    Site("services/cli/import_preview.py", "_preview_one", "query", "sql"): (
        "_MATCH formatted just above with the two reviewed pieces"
    ),
    Site("services/ingest/event_ledger.py", "EventLedger.purge", "interpolates", "table"): (
        "a table name from the literal tuple of the loop"
    ),
    Site("services/reconcile/api_queries.py", "run_view", "query", "RUN_FILES_SQL"): (
        "status_files' module constant, literal text"
    ),
    Site("services/reconcile/export_dry_run.py", "dry_run", "query", "OPTED_OUT"): (
        "consent's module constant, built once from literals"
    ),
    Site("services/reconcile/export_dry_run.py", "_counted", "interpolates", "int(sample)"): (
        "an int (DRY_RUN_SAMPLE_SIZE), formatted as a number"
    ),
    Site("services/reconcile/export_dry_run.py", "_counted", "interpolates", "query"): (
        "its callers pass the export's own statements: EXCLUDED[kind], _OPTED_OUT_RECIPIENTS, diff_queries().sql"
    ),
}

# Every S608 noqa comment in services/ and shared/, by file and scope. Each silences ruff on a statement whose
# run-time pieces are in REVIEWED, or that is put together from literals only (_OVERWRITE_ROWS, the run store's).
NOQA_S608: Final = {
    # The campaign streams (issue 18): reviewed in REVIEWED, or f-strings of the module's own constants.
    ("services/reconcile/consent.py", "LEAVE_IMPORT_LISTS"),
    ("services/reconcile/consent.py", "admitted_sql"),
    ("services/reconcile/import_snapshot.py", "_ADD"),
    ("services/reconcile/import_snapshot.py", "_ADD_TRACKED"),
    ("services/reconcile/member_ids.py", "_ADD"),
    ("services/reconcile/recipient_erasure.py", "_declared"),
    ("services/reconcile/rematch.py", "_ecid"),
    ("shared/runs/purge.py", "_OLD_RUNS"),
    ("shared/runs/purge.py", "_STAGING"),
    ("shared/runs/purge.py", "_STALE_PREPARED"),
    ("services/publish/file_set_rows.py", "_OVERWRITE_ROWS"),
    ("services/reconcile/import_delta.py", "_DECLARED_APPLY"),
    ("services/reconcile/import_delta.py", "_ECID_APPLY"),
    ("services/reconcile/import_snapshot.py", "_DECLARED_SNAPSHOT"),
    ("services/reconcile/import_snapshot.py", "match_snapshot"),
    ("services/reconcile/import_snapshot.py", "_ECID_SNAPSHOT"),
    ("services/reconcile/rematch.py", "_declared"),
    ("services/reconcile/export_diff.py", "CURRENT_IDS"),
    ("services/reconcile/export_diff.py", "EXCLUDED"),
    ("services/reconcile/export_diff.py", "diff_sql"),
    ("services/reconcile/export_run_rows.py", "record_left_out"),
    ("services/reconcile/export_guard.py", "removal_plan"),
    ("services/reconcile/insights_queries.py", "list_audience_overlap"),
    ("services/reconcile/export_release.py", "release_plan"),
    # The run table's reads and move: the column list is the module constant _COLUMNS.
    ("shared/runs/store.py", "move"),
    ("shared/runs/store.py", "load"),
    ("shared/runs/store.py", "latest_of_request"),
    ("shared/runs/store.py", "fail_stalled_imports"),
    ("services/reconcile/export_dry_run.py", "_counted"),
}
