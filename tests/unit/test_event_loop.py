"""shared/event_loop.py: EVENT_LOOP picks the loop a process runs on; a bad value or a missing uvloop is a
clear ConfigError before anything runs, never a quiet fallback."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import pytest
import typer
import uvloop

from services.cli.common import run_sync
from shared import event_loop
from shared.errors import ConfigError
from shared.settings import BaseServiceSettings, load_settings


async def _loop_seen() -> tuple[str, type[asyncio.AbstractEventLoop]]:
    return event_loop.running_loop_name(), type(asyncio.get_running_loop())


def test_uvloop_runs_the_coroutine_on_a_uvloop_loop() -> None:
    name, loop_type = event_loop.run(_loop_seen(), loop="uvloop")
    assert name == "uvloop"
    assert issubclass(loop_type, uvloop.Loop)


def test_asyncio_runs_the_coroutine_on_the_standard_selector_loop() -> None:
    name, loop_type = event_loop.run(_loop_seen(), loop="asyncio")
    assert name == "asyncio"
    assert issubclass(loop_type, asyncio.SelectorEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_result_and_the_errors_of_the_coroutine_come_back(loop: str) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise LookupError("from inside")

    async def answers() -> int:
        await asyncio.sleep(0)
        return 42

    assert event_loop.run(answers(), loop=loop) == 42
    with pytest.raises(LookupError, match="from inside"):
        event_loop.run(fails(), loop=loop)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_signals_and_subprocesses_work_on_either_loop(loop: str) -> None:
    """What the services rely on: a SIGTERM handler, and a child process with a passed descriptor (the
    real-time receivers get their listening socket that way)."""

    async def main() -> tuple[bool, bytes]:
        stopped = asyncio.Event()
        running = asyncio.get_running_loop()
        running.add_signal_handler(signal.SIGTERM, stopped.set)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopped.wait(), 5)
        finally:
            running.remove_signal_handler(signal.SIGTERM)
        read_end, write_end = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                f"import os; os.write({write_end}, b'passed')",
                pass_fds=(write_end,),
            )
            assert await child.wait() == 0
            return stopped.is_set(), os.read(read_end, 16)
        finally:
            os.close(read_end)
            os.close(write_end)

    assert event_loop.run(main(), loop=loop) == (True, b"passed")


def _never_started() -> Coroutine[Any, Any, None]:
    async def work() -> None:
        raise AssertionError("must not run")

    return work()


def test_an_unknown_loop_is_a_config_error_and_nothing_runs() -> None:
    coro = _never_started()
    with pytest.raises(ConfigError, match="EVENT_LOOP must be one of uvloop, asyncio") as caught:
        event_loop.run(coro, loop="tokio")
    assert caught.value.context == {"value": "tokio"}
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning hides the error


def test_uvloop_missing_is_a_clear_config_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what a platform without its wheels gives: ImportError
    coro = _never_started()
    with pytest.raises(ConfigError, match=r"EVENT_LOOP=uvloop but uvloop cannot be imported.*EVENT_LOOP=asyncio"):
        event_loop.run(coro, loop="uvloop")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    # asyncio needs nothing more.
    assert event_loop.run(_loop_seen(), loop="asyncio")[0] == "asyncio"


def test_the_setting_defaults_to_uvloop_and_takes_either_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert load_settings(BaseServiceSettings).event_loop == "uvloop"
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert load_settings(BaseServiceSettings).event_loop == "asyncio"


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="EVENT_LOOP") as caught:
        load_settings(BaseServiceSettings)
    assert caught.value.context["variables"] == ["EVENT_LOOP"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_cli_commands_run_on_the_loop_asked(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", loop)
    assert run_sync(_loop_seen())[0] == loop


def test_cli_with_a_bad_loop_exits_2_without_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    coro = _never_started()
    with pytest.raises(typer.Exit) as caught:
        run_sync(coro)
    assert caught.value.exit_code == 2
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
