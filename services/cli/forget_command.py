"""``audience-bridge forget RECIPIENT…``: a person's erasure request, carried out at once.

The recipients leave every list, their visitor links go, and the IDs the bridge shared for them are withdrawn
(:func:`services.reconcile.recipient_erasure.forget`); then an export request per audience that held them makes
the platform drop those IDs now rather than at the audience's next scheduled export (``--no-export``: then).
Prints what was removed where.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from services.cli.common import app, cli_requester, cli_settings, console, err, run_sync, with_db
from services.reconcile.recipient_erasure import ForgetReport, WithdrawnAudience, forget
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.topics import AUDIENCE_EXPORT_REQUESTS, topic_name


def report_lines(report: ForgetReport, requests: dict[str, str]) -> list[str]:
    """What was removed where, one line each (pure: the command prints it, tests read it)."""
    lines = [f"forgotten: {len(report.forgotten)} recipient(s) {', '.join(map(str, report.forgotten)) or '-'}"]
    if report.unknown:
        lines.append(f"unknown (nothing to forget): {', '.join(map(str, report.unknown))}")
    for name, members in report.lists.items():
        lines.append(f"list {name!r}: {members} member(s) removed")
    lines.append(f"visitor links removed: {report.visitor_links}")
    for audience in report.audiences:
        then = (
            f"export requested: request {requests[audience.audience_id]}"
            if audience.audience_id in requests
            else ("removed on its next export")
        )
        lines.append(
            f"audience {audience.audience_id} {audience.name!r} ({audience.data_source}): "
            f"{audience.ids} ID(s) withdrawn; {then}"
        )
    return lines


def _request(audience: WithdrawnAudience, requested_by: str) -> AudienceExportRequest | None:
    if audience.list_id is None:
        return None
    return AudienceExportRequest(
        list_id=str(audience.list_id),
        audience_name=audience.name,
        data_source=audience.data_source,
        # The audience's own mode: every mode removes withdrawn IDs, and a mirror stays a mirror.
        mode=audience.mode or "append",
        requested_by=requested_by,
        requested_via="cli",
    )


async def _send(requests: list[AudienceExportRequest]) -> None:
    settings = cli_settings()
    topic = topic_name(settings.topic_prefix, AUDIENCE_EXPORT_REQUESTS)
    await ensure_topics(settings, [topic])
    producer = Producer(settings, "cli")
    try:
        for request in requests:
            await producer.send_model(topic, request)
    finally:
        await producer.stop()


@app.command("forget")
def forget_cmd(
    recipients: Annotated[list[int], typer.Argument(help="Recipient ids to forget.", min=0)],
    export: Annotated[
        bool, typer.Option("--export/--no-export", help="Request an export of each audience that held them now.")
    ] = True,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase recipients: they leave every list, their links go, their shared IDs leave the platform."""
    if any(r < 0 or r > 2**63 - 1 for r in recipients):
        err.print("[red]error:[/red] recipient ids are non-negative 64-bit integers")
        raise typer.Exit(2)
    if not yes:
        if not sys.stdin.isatty():
            err.print("[red]error:[/red] nothing forgotten: no terminal to confirm on (give --yes)")
            raise typer.Exit(2)
        if not typer.confirm(f"forget {len(recipients)} recipient(s) for good?", default=False):
            raise typer.Exit(1)
    report = run_sync(with_db(lambda conn: forget(conn, recipients)))
    requested_by = cli_requester("erasure")
    pending = [(a.audience_id, _request(a, requested_by)) for a in report.audiences] if export else []
    requests = {audience_id: r for audience_id, r in pending if r is not None}
    if requests:
        run_sync(_send(list(requests.values())))
    for line in report_lines(report, {a: str(r.request_id) for a, r in requests.items()}):
        console.print(line, highlight=False)
