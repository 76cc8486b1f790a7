"""What every ``audience-bridge`` command shares: the Typer apps, consoles, settings, errors, a database."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from services.cli.settings import CliSettings
from shared import event_loop
from shared.errors import BridgeError
from shared.migrations import migrate
from shared.settings import load_settings

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


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate command-line input; a mistake is a one-line error naming the option, not a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]error:[/red] {problems}")
        raise typer.Exit(2) from None


def cli_requester(on_behalf_of: str | None = None) -> str:
    """Who asks at the CLI: the OS user (an audit trail must not rest on what the caller types); a given
    ``--requested-by`` is recorded after it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container's arbitrary uid)
        user = f"uid-{os.getuid()}"
    if on_behalf_of and on_behalf_of != user:
        return f"{user} for {on_behalf_of}"
    return user


def cli_settings() -> CliSettings:
    return load_settings(CliSettings)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's work (on the loop EVENT_LOOP names); a bridge error is exit 2 with its reason, an I/O
    error exit 1."""
    try:
        try:
            loop = cli_settings().event_loop
        except BaseException:
            coro.close()  # never started: the settings error is the message, not a "never awaited" warning
            raise
        return event_loop.run(coro, loop=loop)
    except BridgeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


async def with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(cli_settings().database_url.get_secret_value())
    try:
        await migrate(conn)
        return await work(conn)
    finally:
        await conn.close()
