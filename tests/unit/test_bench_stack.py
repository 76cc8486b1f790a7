"""The benchmark and chaos drivers' run guard."""

from __future__ import annotations

import uuid

import pytest

from shared.settings import DEFAULT_VAR_DIR
from tests.bench.stack import exclusive_run


def test_a_second_run_in_the_same_checkout_is_refused_until_the_first_ends() -> None:
    what = f"guard-test-{uuid.uuid4().hex[:6]}"
    try:
        with (
            exclusive_run(what),
            pytest.raises(SystemExit, match=f"another `make {what}` is running"),
            exclusive_run(what),
        ):
            pass
        with exclusive_run(what):  # released with the first run
            pass
    finally:
        (DEFAULT_VAR_DIR / f"{what}.lock").unlink(missing_ok=True)
