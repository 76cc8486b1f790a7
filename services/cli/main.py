"""The ``audience-bridge`` command line. Reads the same settings as the services (DATABASE_URL, ...)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from services.cli.demo import Demo, render
from services.cli.loads import LoadResult, load_recipients, load_visitor_links
from services.cli.settings import CliSettings
from services.publish.files import FileOptions
from services.publish.runs import RunOutcome, retry_run
from services.publish.settings import PublishSettings
from services.reconcile.catalog import (
    DataSourceSpec,
    ImportAudienceSpec,
    apply_catalog,
    load_catalog_file,
    upsert_data_source,
    upsert_import_audience,
)
from services.reconcile.importing import release_run
from services.reconcile.rematch import rematch as rematch_ids
from shared.dropzone import open_dropzone
from shared.errors import BridgeError
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.migrations import migrate
from shared.platform import PlatformClient
from shared.settings import load_settings
from shared.status import StatusReporter
from shared.topics import AUDIENCE_EXPORT_REQUESTS, topic_name

app = typer.Typer(
    help="Operate Audience Bridge: data sources, audiences, loads, runs and exports.", no_args_is_help=True
)
datasource_app = typer.Typer(help="Data sources (what the platform provisioned).", no_args_is_help=True)
audience_app = typer.Typer(help="Shared audiences.", no_args_is_help=True)
load_app = typer.Typer(help="Bulk loads from CSV.", no_args_is_help=True)
app.add_typer(datasource_app, name="datasource")
app.add_typer(audience_app, name="audience")
app.add_typer(load_app, name="load")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate command-line input; a mistake is a one-line error naming the option, not a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]error:[/red] {problems}")
        raise typer.Exit(2) from None


def _settings() -> CliSettings:
    return load_settings(CliSettings)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except BridgeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


async def _with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(_settings().database_url.get_secret_value())
    try:
        await migrate(conn)
        return await work(conn)
    finally:
        await conn.close()


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply pending database migrations."""
    _run(_with_db(lambda conn: asyncio.sleep(0)))
    console.print("database is up to date")


@app.command("catalog")
def catalog_cmd(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load (upsert) data sources and import audiences from a YAML catalog file."""
    catalog = load_catalog_file(path)
    _run(_with_db(lambda conn: apply_catalog(conn, catalog)))
    console.print(f"{len(catalog.data_sources)} data sources, {len(catalog.import_audiences)} import audiences loaded")


@datasource_app.command("add")
def datasource_add(
    name: str,
    dpid: Annotated[int, typer.Option(help="The platform's data provider id.")],
    id_type: Annotated[str, typer.Option(help="ecid or declared.")],
    key: Annotated[str | None, typer.Option(help="Recipient column for declared IDs.")] = None,
    transform: Annotated[str, typer.Option(help="none or sha256.")] = "none",
    export_control: Annotated[list[str] | None, typer.Option(help="e.g. PII (repeatable).")] = None,
) -> None:
    """Add or update a data source."""
    spec = _validated(
        DataSourceSpec,
        {
            "name": name,
            "dpid": dpid,
            "id_type": id_type,
            "reconciliation_key": key,
            "key_transform": transform,
            "export_controls": tuple(export_control or ()),
        },
    )
    _run(_with_db(lambda conn: upsert_data_source(conn, spec)))
    console.print(f"data source {name!r} saved")


@datasource_app.command("list")
def datasource_list() -> None:
    """List data sources."""
    rows = _run(_with_db(lambda conn: conn.fetch("SELECT * FROM data_source ORDER BY name")))
    table = Table("name", "dpid", "id type", "key", "transform", "export controls")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["dpid"]),
            r["id_type"],
            r["reconciliation_key"] or "",
            r["key_transform"],
            ",".join(r["export_controls"]),
        )
    console.print(table)


@audience_app.command("add-import")
def audience_add_import(
    audience_id: str,
    segment: Annotated[int, typer.Option(help="The platform segment id.")],
    data_source: Annotated[str, typer.Option(help="Data source name.")],
    list_name: Annotated[str, typer.Option("--list", help="Campaign list fed by the segment.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Import a platform segment into a campaign list."""
    spec = _validated(
        ImportAudienceSpec,
        {
            "audience_id": audience_id,
            "name": name or audience_id,
            "platform_segment_id": segment,
            "data_source": data_source,
            "list": list_name,
        },
    )
    _run(_with_db(lambda conn: upsert_import_audience(conn, spec)))
    console.print(f"import audience {audience_id!r} saved")


@audience_app.command("list")
def audience_list() -> None:
    """List shared audiences (both directions) with their list sizes."""
    rows = _run(
        _with_db(
            lambda conn: conn.fetch(
                """SELECT sa.*, ds.name AS data_source, l.name AS list_name,
                          (SELECT count(*) FROM list_member lm WHERE lm.list_id = sa.list_id) AS members
                     FROM shared_audience sa JOIN data_source ds USING (data_source_id)
                     LEFT JOIN list l USING (list_id) ORDER BY sa.direction, sa.name"""
            )
        )
    )
    table = Table("audience", "direction", "name", "data source", "list", "members", "segment", "trait")
    for r in rows:
        table.add_row(
            r["audience_id"],
            r["direction"],
            r["name"],
            r["data_source"],
            r["list_name"] or "",
            str(r["members"]),
            str(r["platform_segment_id"] or ""),
            str(r["platform_trait_id"] or ""),
        )
    console.print(table)


def _load(kind: str, path: Path, loader: Callable[[Any, Path, Callable[[int], None]], Awaitable[LoadResult]]) -> None:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"loading {kind}", total=path.stat().st_size)
        result = _run(_with_db(lambda conn: loader(conn, path, lambda n: progress.advance(task, n))))
    console.print(
        f"{kind}: {result.rows} rows read, {result.loaded} loaded, {result.skipped} skipped "
        "(invalid, unknown recipient, or already known)"
    )


@load_app.command("recipients")
def load_recipients_cmd(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load recipients from CSV (header: recipient_id,email,crm_id[,first_name,last_name])."""
    _load("recipients", path, load_recipients)


@load_app.command("visitor-links")
def load_links_cmd(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load visitor links from CSV (header: ecid,recipient_id)."""
    _load("visitor links", path, load_visitor_links)


@app.command("runs")
def runs_cmd(
    audience: Annotated[str | None, typer.Option(help="Only this audience.")] = None,
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    limit: int = 20,
) -> None:
    """Recent runs, newest first."""
    rows = _run(
        _with_db(
            lambda conn: conn.fetch(
                """SELECT * FROM run WHERE ($1::text IS NULL OR audience_id = $1) AND ($2::text IS NULL OR state = $2)
                    ORDER BY started_at DESC LIMIT $3""",
                audience,
                state,
                limit,
            )
        )
    )
    table = Table("run", "direction", "audience", "mode", "state", "counts", "reason")
    for r in rows:
        table.add_row(
            str(r["run_id"]),
            r["direction"],
            r["audience_id"],
            r["mode"],
            r["state"],
            r["counts"],
            (r["reason"] or "")[:80],
        )
    console.print(table)


@app.command("run")
def run_cmd(run_id: uuid.UUID) -> None:
    """Show one run."""
    row = _run(_with_db(lambda conn: conn.fetchrow("SELECT * FROM run WHERE run_id = $1", run_id)))
    if row is None:
        err.print(f"[red]error:[/red] no run {run_id}")
        raise typer.Exit(1)
    data = {k: (str(v) if not isinstance(v, int | str | type(None)) else v) for k, v in dict(row).items()}
    console.print_json(orjson.dumps(data).decode())


@app.command("rematch")
def rematch_cmd() -> None:
    """Match unmatched IDs again against current recipients and visitor links."""
    result = _run(_with_db(rematch_ids))
    console.print(f"{result['matched']} IDs matched, {result['added']} list members added")


@app.command("release")
def release_cmd(run_id: uuid.UUID, by: Annotated[str, typer.Option(help="Who releases it.")] = "cli") -> None:
    """Apply a full import run that the guards held back (empty or mass-removal snapshot)."""
    outcome = _run(_with_db(lambda conn: release_run(conn, run_id, by)))
    console.print(
        f"run {run_id} released: {outcome.counts.get('added', 0)} added, {outcome.counts.get('removed', 0)} removed"
    )


@app.command("export")
def export_cmd(
    list_ref: Annotated[str, typer.Option("--list", help="Campaign list (name or id).")],
    audience: Annotated[str, typer.Option(help="Name of the shared audience on the platform.")],
    data_source: Annotated[str, typer.Option(help="Data source whose IDs identify the audience.")],
    mode: Annotated[str, typer.Option(help="append, mirror or full.")] = "append",
    requested_by: Annotated[str, typer.Option(help="Who asks (for the audit trail).")] = "cli",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the run to finish (0: don't wait).")] = 0.0,
) -> None:
    """Share a campaign list as a shared audience (puts a request on audience-export-requests)."""
    request = _validated(
        AudienceExportRequest,
        {
            "list_id": list_ref,
            "audience_name": audience,
            "data_source": data_source,
            "mode": mode,
            "requested_by": requested_by,
        },
    )
    settings = _settings()

    async def send() -> None:
        topic = topic_name(settings.topic_prefix, AUDIENCE_EXPORT_REQUESTS)
        await ensure_topics(settings, [topic])
        producer = Producer(settings, "cli")
        try:
            await producer.send_model(topic, request)
        finally:
            await producer.stop()

    _run(send())
    console.print(f"export requested: request {request.request_id}")
    if wait > 0:
        state = _run(_wait_for_export(request.request_id, wait))
        console.print(f"run state: {state}")
        if state != "succeeded":
            raise typer.Exit(1)


async def _wait_for_export(request_id: uuid.UUID, timeout: float) -> str:
    async def poll(conn: Any) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await conn.fetchval(
                "SELECT state FROM run WHERE request_id = $1 ORDER BY started_at DESC LIMIT 1", request_id
            )
            if state in ("succeeded", "failed", "blocked") or asyncio.get_running_loop().time() > deadline:
                return str(state or "not started")
            await asyncio.sleep(0.25)

    return await _with_db(poll)


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
                status = StatusReporter(producer, service="cli", topic_prefix=settings.topic_prefix)
                return await retry_run(
                    pool, zone, platform, status, run_id, options=FileOptions.from_settings(settings)
                )
        finally:
            await producer.stop()
            await zone.close()
            await pool.close()

    outcome = _run(retry())
    console.print(f"run {run_id}: {outcome.state}" + (f" ({outcome.reason})" if outcome.reason else ""))
    if outcome.state != "succeeded":
        raise typer.Exit(1)


@app.command("demo")
def demo_cmd(
    recipients: Annotated[int, typer.Option(help="Campaign recipients to load.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic population.")] = 42,
    ecsim_url: Annotated[str, typer.Option(envvar="ECSIM_URL", help="The local platform (ecsim).")] = (
        "http://127.0.0.1:8090"
    ),
    timeout: Annotated[float, typer.Option(help="Seconds each step may take.")] = 600.0,
) -> None:
    """Run the demo on the running local stack (`make up`): two imports, one export, all verified."""
    settings = _settings()
    demo = Demo(
        database_url=settings.database_url.get_secret_value(),
        kafka=settings,
        ecsim_url=ecsim_url,
        console=console,
        timeout_s=timeout,
    )
    result = _run(demo.run(recipients, seed))
    render(
        result,
        console,
        urls={
            "status page": "http://127.0.0.1:8082/",
            "metrics": "http://127.0.0.1:8081/metrics, :8082/metrics, :8083/metrics",
            "platform (ecsim)": ecsim_url + "/sim/state",
        },
    )
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except BridgeError as exc:  # settings errors raised before a command runs
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
