"""The event loop a process runs on: uvloop (the default) or asyncio's own, chosen by ``EVENT_LOOP``.

The services are socket-bound asyncio code (aiohttp servers, asyncpg, aiokafka) on few cores, and uvloop
(libuv under asyncio's API, by asyncpg's authors) spends less CPU per socket read, write and callback than
asyncio's selector loop. ``EVENT_LOOP=asyncio`` runs the same code on the standard loop: to compare them, or
to rule the loop out when chasing a bug.

``EVENT_LOOP=uvloop`` where uvloop cannot be imported (a platform without its wheels) is a ConfigError at
start, never a quiet fallback: a deployment sized on uvloop's figures must not run slower unnoticed.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar

from shared.errors import ConfigError

EventLoopName = Literal["uvloop", "asyncio"]
EVENT_LOOPS: Final[tuple[EventLoopName, ...]] = ("uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of kind ``name``; a ConfigError for an unknown name or a missing uvloop."""
    if name == "asyncio":
        # The selector loop itself rather than the policy's choice: "asyncio" stays asyncio even if some
        # library installed uvloop's policy.
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError as exc:
            raise ConfigError(
                "EVENT_LOOP=uvloop but uvloop cannot be imported: install it (pip install uvloop) "
                "or set EVENT_LOOP=asyncio",
                error=str(exc),
            ) from exc
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ConfigError("EVENT_LOOP must be one of " + ", ".join(EVENT_LOOPS), value=name)


def run(main: Coroutine[Any, Any, T], *, loop: str) -> T:
    """``asyncio.run(main)`` on the loop ``loop`` names (``EVENT_LOOP``). A bad ``loop`` raises ConfigError
    before ``main`` starts (and closes it, so no "never awaited" warning hides the error)."""
    try:
        factory = loop_factory(loop)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> EventLoopName:
    """The kind of the loop running now (for /healthz and the start-up logs): what runs, not what was asked."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"
