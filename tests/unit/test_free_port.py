"""The test rigs' free_port never hands out a port twice, even when the kernel offers the same one again."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.fixtures import stack


class _Probe:
    offers = [47001, 47001, 47002]

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        return None

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", _Probe.offers.pop(0))


def test_a_port_offered_again_is_not_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "_HANDED_OUT", set())
    monkeypatch.setattr(socket, "socket", lambda *a, **k: _Probe())
    assert [stack.free_port(), stack.free_port()] == [47001, 47002]
