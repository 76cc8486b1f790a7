"""The ``audience-bridge`` command line. Reads the same settings as the services (DATABASE_URL, ...).

The commands live by role: :mod:`services.cli.setup_commands` (catalog, data sources, audiences, loads),
:mod:`services.cli.run_commands` (runs, release, exports, retry); this module adds the demo and runs the app.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from services.cli import dlq, forget_command, import_preview, run_commands, schedule_commands, setup_commands
from services.cli.common import app, cli_settings, console, err, run_sync
from services.cli.demo import Demo, render
from shared.errors import BridgeError

# Imported for the commands they register on ``app``.
COMMAND_MODULES = (setup_commands, run_commands, dlq, schedule_commands, forget_command, import_preview)
__all__ = ["app", "main"]


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
    settings = cli_settings()
    demo = Demo(
        database_url=settings.database_url.get_secret_value(),
        kafka=settings,
        ecsim_url=ecsim_url,
        console=console,
        timeout_s=timeout,
        sim_token=settings.ecsim_sim_token.get_secret_value() if settings.ecsim_sim_token else None,
    )
    result = run_sync(demo.run(recipients, seed))
    # The ports the stack really uses (deploy/local/services.sh's settings; STACK_PORT_OFFSET moves them all).
    ingest, reconcile, publish = (
        os.environ.get(f"{name}_HTTP_PORT", default)
        for name, default in (("INGEST", "8081"), ("RECONCILE", "8082"), ("PUBLISH", "8083"))
    )
    database = urlsplit(settings.database_url.get_secret_value())
    render(
        result,
        console,
        urls={
            "status page": f"http://127.0.0.1:{reconcile}/",
            "metrics": f"http://127.0.0.1:{ingest}/metrics, :{reconcile}/metrics, :{publish}/metrics",
            "platform (ecsim)": ecsim_url + "/sim/state",
            "kafka, postgres": f"{settings.kafka_bootstrap_servers}, {database.hostname}:{database.port or 5432}",
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
