"""Runs and exports: list and show runs, re-match, release a held-back import, request and retry exports."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any

import asyncpg
import orjson
import typer
from rich.table import Table

from services.cli.common import app, cli_requester, cli_settings, console, err, run_sync, validated, with_db
from services.cli.dry_run_output import show_dry_run
from services.publish.files import FileOptions
from services.publish.publisher import retry_run
from services.publish.settings import PublishSettings
from services.reconcile import consent
from services.reconcile.export_release import release_export, release_plan
from services.reconcile.exporting import Exporter
from services.reconcile.release import ReleasePlan, plan_release, release_run
from services.reconcile.rematch import rematch as rematch_ids
from services.reconcile.run_cancel import cancel_run
from services.reconcile.settings import ReconcileSettings
from services.reconcile.status_files import RUN_FILES_SQL, file_json, file_row
from shared.dropzone import open_dropzone
from shared.errors import TransientError
from shared.kafka import Producer, ensure_topics
from shared.logging import redact_text
from shared.messages import AudienceExportRequest
from shared.platform import PlatformClient
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import ENDED_STATES
from shared.settings import load_settings
from shared.topics import AUDIENCE_EXPORT_BATCHES, AUDIENCE_EXPORT_REQUESTS, topic_name


@app.command("runs")
def runs_cmd(
    audience: Annotated[str | None, typer.Option(help="Only this audience.")] = None,
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    limit: int = 20,
) -> None:
    """Recent runs, newest first."""
    rows = run_sync(
        with_db(
            lambda conn: conn.fetch(
                """SELECT * FROM run WHERE ($1::text IS NULL OR audience_id = $1) AND ($2::text IS NULL OR state = $2)
                    ORDER BY started_at DESC LIMIT $3""",
                audience,
                state,
                limit,
            )
        )
    )
    table = Table("run", "direction", "audience", "mode", "state", "asked by", "counts", "reason")
    for r in rows:
        table.add_row(
            str(r["run_id"]),
            r["direction"],
            r["audience_id"],
            r["mode"],
            r["state"],
            f"{r['requested_via']}:{r['requested_by']}" if r["requested_by"] else "",
            r["counts"],
            redact_text(r["reason"] or "")[:80],
        )
    console.print(table)


@app.command("run")
def run_cmd(run_id: uuid.UUID) -> None:
    """Show one run (an export's files too: lines uploaded, and applied or rejected by the platform)."""

    async def read(conn: Any) -> tuple[Any, list[Any]]:
        row = await conn.fetchrow("SELECT * FROM run WHERE run_id = $1", run_id)
        return row, await conn.fetch(RUN_FILES_SQL, run_id)

    row, files = run_sync(with_db(read))
    if row is None:
        err.print(f"[red]error:[/red] no run {run_id}")
        raise typer.Exit(1)
    data: dict[str, Any] = {
        k: (str(v) if not isinstance(v, int | str | type(None)) else v) for k, v in dict(row).items()
    }
    if files:
        data["files"] = [file_json(file_row(f)) for f in files]
    console.print_json(orjson.dumps(data).decode())


async def _rematch() -> dict[str, int]:
    # Opted-out recipients join lists only as reconcile's IMPORT_OPTED_OUT allows, here as in the service.
    import_opted_out = load_settings(ReconcileSettings).import_opted_out

    async def work(conn: Any) -> dict[str, int]:
        await consent.set_for_session(conn, import_opted_out)
        return await rematch_ids(conn)

    return await with_db(work)


@app.command("rematch")
def rematch_cmd() -> None:
    """Match unmatched IDs again against current recipients and visitor links (opted-out recipients only as
    IMPORT_OPTED_OUT allows)."""
    result = run_sync(_rematch())
    console.print(f"{result['matched']} IDs matched, {result['added']} list members added")


@app.command("release")
def release_cmd(
    run_id: uuid.UUID,
    by: Annotated[str, typer.Option(help="Who releases it.")] = "cli",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Release without asking (scripts).")] = False,
) -> None:
    """Apply a run the guards held back. Shows first what it will do (members added and removed, the list's
    size before and after) and asks; without a terminal to ask on, only --yes releases."""
    direction = run_sync(with_db(lambda conn: conn.fetchval("SELECT direction FROM run WHERE run_id = $1", run_id)))
    if direction == "export":
        release_export_cmd(run_id, by, yes)
        return
    plan = run_sync(with_db(lambda conn: plan_release(conn, run_id)))
    for line in release_plan_lines(plan):
        console.print(line, highlight=False, markup=False)
    if not _confirmed(yes):
        console.print("not released")
        raise typer.Exit(1)

    async def release() -> RunOutcome:
        outcome = await with_db(lambda conn: release_run(conn, run_id, by))
        await _announce(outcome)
        return outcome

    outcome = run_sync(release())
    console.print(f"run {run_id} released: {outcome.count('added')} added, {outcome.count('removed')} removed")


def release_plan_lines(plan: ReleasePlan) -> list[str]:
    """The plan as the operator reads it before saying yes."""
    changes = plan.changes
    lines = [f"import run {plan.run_id}: audience {plan.audience_id}, list {plan.list_name!r}"]
    if plan.held_because:
        lines.append(f"held back: {plan.held_because}")
    lines += [
        f"matched again now: {plan.matched} of {plan.matched + plan.unmatched} IDs match a recipient",
        f"releasing it adds {changes.added} and removes {changes.removed} members: "
        f"the list goes from {plan.size_before} to {plan.size_after} members",
    ]
    return lines


def _confirmed(yes: bool) -> bool:
    """The operator's word: --yes, or yes at the prompt. With no terminal to ask on (a script, a pipe) and no
    --yes, nothing is released: exit 2 with the reason, rather than a prompt that reads the end of the input."""
    if yes:
        return True
    if not sys.stdin.isatty():
        err.print("[red]error:[/red] not released: no terminal to confirm on (give --yes to release without asking)")
        raise typer.Exit(2)
    return typer.confirm("release it?", default=False)


async def _announce(outcome: RunOutcome) -> None:
    """Say on audience-sync-status what the command did to a run (it is committed whatever Kafka answers)."""
    settings = cli_settings()
    producer = Producer(settings, "cli")
    try:
        await RunReporter(producer, service="cli", topic_prefix=settings.topic_prefix).report(outcome)
    except TransientError as exc:
        err.print(f"[yellow]warning:[/yellow] the run's status event was not sent ({exc})")
    finally:
        await producer.stop()


@app.command("export")
def export_cmd(
    list_ref: Annotated[str, typer.Option("--list", help="Campaign list (name or id).")],
    audience: Annotated[str, typer.Option(help="Name of the shared audience on the platform.")],
    data_source: Annotated[str, typer.Option(help="Data source whose IDs identify the audience.")],
    mode: Annotated[str, typer.Option(help="append, mirror or full.")] = "append",
    requested_by: Annotated[
        str | None,
        typer.Option(help="On whose behalf (recorded after the OS user, who is always the requester)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the run to finish (0: don't wait).")] = 0.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the run as it would be; record and send nothing.")
    ] = False,
) -> None:
    """Share a campaign list as a shared audience (puts a request on audience-export-requests)."""
    request = validated(
        AudienceExportRequest,
        {
            "list_id": list_ref,
            "audience_name": audience,
            "data_source": data_source,
            "mode": mode,
            "requested_by": cli_requester(requested_by),
            "requested_via": "cli",
        },
    )
    if dry_run:
        show_dry_run(request)
        return
    settings = cli_settings()

    async def send() -> None:
        topic = topic_name(settings.topic_prefix, AUDIENCE_EXPORT_REQUESTS)
        await ensure_topics(settings, [topic])
        producer = Producer(settings, "cli")
        try:
            await producer.send_model(topic, request)
        finally:
            await producer.stop()

    run_sync(send())
    console.print(f"export requested: request {request.request_id}")
    if wait > 0:
        state = run_sync(_wait_for_export(request.request_id, wait))
        console.print(f"run state: {state}")
        if state != "succeeded":
            raise typer.Exit(1)


async def _wait_for_export(request_id: uuid.UUID, timeout: float) -> str:
    async def poll(conn: Any) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run = await store.latest_of_request(conn, request_id)
            if (run is not None and run.state in ENDED_STATES) or asyncio.get_running_loop().time() > deadline:
                return run.state if run is not None else "not started"
            await asyncio.sleep(0.25)

    return await with_db(poll)


@app.command("retry")
def retry_cmd(run_id: uuid.UUID) -> None:
    """Finish a failed export run from its staged batches (platform calls and file writing again)."""
    settings = load_settings(PublishSettings)

    async def retry() -> RunOutcome:
        pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
        assert pool is not None
        zone = open_dropzone(settings.export_dropzone_url, s3=settings.s3_options())
        producer = Producer(settings, "cli")
        try:
            async with PlatformClient(settings) as platform:
                status = RunReporter(producer, service="cli", topic_prefix=settings.topic_prefix)
                return await retry_run(
                    pool, zone, platform, status, run_id, options=FileOptions.from_settings(settings)
                )
        finally:
            await producer.stop()
            await zone.close()
            await pool.close()

    outcome = run_sync(retry())
    console.print(f"run {run_id}: {outcome.state}" + (f" ({outcome.reason})" if outcome.reason else ""))
    if outcome.state == "uploaded":
        console.print("files uploaded: the run ends when the platform's receipts are in (`audience-bridge run`)")
    elif outcome.state != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel_cmd(run_id: uuid.UUID, by: Annotated[str, typer.Option(help="Who cancels it.")] = "cli") -> None:
    """End, for good, a run an operator gives up on: an export not on the platform yet (under way, held back
    or failed) or a held-back import. What the platform applied stays recorded as it is."""

    async def cancel() -> RunOutcome:
        outcome = await with_db(lambda conn: cancel_run(conn, run_id, by))
        await _announce(outcome)
        return outcome

    run_sync(cancel())
    console.print(f"run {run_id} cancelled")


def release_export_cmd(run_id: uuid.UUID, by: str, yes: bool) -> None:
    """Release an export run the mass-removal guard held back: show the plan, ask, then emit it (diffed now)."""
    plan = run_sync(with_db(lambda conn: release_plan(conn, run_id)))
    lines = [
        f"export run {run_id}: audience {plan.audience_name!r} ({plan.audience_id}), list {plan.list_name!r}, "
        f"mode {plan.mode}",
        *([f"held back: {plan.reason}"] if plan.reason else []),
        f"the platform holds {plan.shared} IDs from the bridge; releasing adds {plan.adds} and removes "
        f"{plan.removes}: {plan.after} after",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if not _confirmed(yes):
        console.print("not released")
        raise typer.Exit(1)
    outcome = run_sync(_emit_released(run_id, by))
    console.print(
        f"run {run_id} released: {outcome.count('added')} IDs to add, {outcome.count('removed')} to remove, "
        "handed to publish"
    )


async def _emit_released(run_id: uuid.UUID, by: str) -> RunOutcome:
    settings = load_settings(ReconcileSettings)
    topic = topic_name(settings.topic_prefix, AUDIENCE_EXPORT_BATCHES)
    await ensure_topics(settings, [topic])
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    producer = Producer(settings, "cli")
    try:
        reporter = RunReporter(producer, service="cli", topic_prefix=settings.topic_prefix)
        exporter = Exporter(
            pool, producer, batches_topic=topic, reporter=reporter, batch_size=settings.export_batch_size
        )
        return await release_export(exporter, pool, run_id, by)
    finally:
        await producer.stop()
        await pool.close()
