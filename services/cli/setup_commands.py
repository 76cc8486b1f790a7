"""Setting the bridge up: migrations, the catalog, data sources, import audiences, bulk loads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from services.cli.common import app, audience_app, console, datasource_app, err, load_app, run_sync, validated, with_db
from services.cli.loads import LoadResult, load_recipients, load_visitor_links
from services.reconcile.catalog import (
    CatalogDataSource,
    CatalogImportAudience,
    apply_catalog,
    load_catalog_file,
    upsert_data_source,
    upsert_import_audience,
)
from services.reconcile.export_binding import rebind


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply pending database migrations."""
    run_sync(with_db(lambda conn: asyncio.sleep(0)))
    console.print("database is up to date")


@app.command("catalog")
def catalog_cmd(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load (upsert) data sources, import audiences and export audiences from a YAML catalog file."""
    catalog = load_catalog_file(path)
    run_sync(with_db(lambda conn: apply_catalog(conn, catalog)))
    exports = "" if catalog.export_audiences is None else f", {len(catalog.export_audiences)} export audiences"
    console.print(
        f"{len(catalog.data_sources)} data sources, {len(catalog.import_audiences)} import audiences{exports} loaded"
    )


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
    spec = validated(
        CatalogDataSource,
        {
            "name": name,
            "dpid": dpid,
            "id_type": id_type,
            "reconciliation_key": key,
            "key_transform": transform,
            "export_controls": tuple(export_control or ()),
        },
    )
    run_sync(with_db(lambda conn: upsert_data_source(conn, spec)))
    console.print(f"data source {name!r} saved")


@datasource_app.command("list")
def datasource_list() -> None:
    """List data sources."""
    rows = run_sync(with_db(lambda conn: conn.fetch("SELECT * FROM data_source ORDER BY name")))
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
    poll_every: Annotated[
        str | None,
        typer.Option(help="Read the deliveries feeding it no more often than this (15m, 6h, 1d; unset: every scan)."),
    ] = None,
) -> None:
    """Import a platform segment into a campaign list."""
    spec = validated(
        CatalogImportAudience,
        {
            "audience_id": audience_id,
            "name": name or audience_id,
            "platform_segment_id": segment,
            "data_source": data_source,
            "list": list_name,
            "poll_every": poll_every,
        },
    )
    run_sync(with_db(lambda conn: upsert_import_audience(conn, spec)))
    console.print(f"import audience {audience_id!r} saved")


@audience_app.command("list")
def audience_list() -> None:
    """List shared audiences (both directions) with their list sizes."""
    rows = run_sync(
        with_db(
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
        result = run_sync(with_db(lambda conn: loader(conn, path, lambda n: progress.advance(task, n))))
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


@audience_app.command("rebind")
def audience_rebind(
    audience: Annotated[str, typer.Argument(help="Export audience: its id (ab-...) or its name.")],
    list_name: Annotated[str, typer.Option("--list", help="The campaign list it follows from now on.")],
    data_source: Annotated[str | None, typer.Option(help="The audience's data source, when names repeat.")] = None,
    by: Annotated[str, typer.Option(help="Who rebinds it (recorded).")] = "cli",
) -> None:
    """Move an export audience to another list (recorded; refused while one of its runs is under way). Its
    next mirror removes what the new list lacks, under the mass-removal guard."""
    rebound = run_sync(with_db(lambda conn: rebind(conn, audience, list_name, rebound_by=by, data_source=data_source)))
    console.print(
        f"audience {rebound.audience_name!r} ({rebound.audience_id}) now follows list {rebound.to_list!r} "
        f"(was {rebound.from_list!r})"
    )
