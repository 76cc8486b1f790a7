"""The receipt poller's pace: polls stay short while receipts come, new files await theirs, or the latest
upload is recent (a platform may answer within seconds), and back off only after that."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.publish import receipt_poller
from services.publish.metrics import NoPublishMetrics
from services.publish.receipt_pacing import PollPace, next_poll_delay
from services.publish.receipt_poller import ReceiptPoller
from services.publish.receipts import ReceiptOptions

PACE = PollPace(poll_s=1.0, poll_max_s=300.0, fast_s=60.0)


def _delays(ages: list[float | None], *, awaiting: int = 1) -> list[float]:
    """The successive delays of polls that find nothing, the latest upload being ``ages`` old at each."""
    delay, out = PACE.poll_s, []
    for age in ages:
        delay = next_poll_delay(
            delay, PACE, progressed=False, awaiting=awaiting, awaited_before=awaiting, newest_upload_age_s=age
        )
        out.append(delay)
    return out


def test_polls_stay_short_while_the_latest_upload_is_recent_then_back_off_to_the_bound() -> None:
    assert _delays([0.0, 1.0, 2.0, 59.9]) == [1.0] * 4
    assert _delays([60.0, 62.0, 66.0, 74.0, 90.0, 122.0, 186.0, 314.0, 570.0, 900.0]) == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
        300.0,
    ]


def test_a_receipt_a_new_file_or_nothing_awaited_resets_the_backoff() -> None:
    def after(**kw: object) -> float:
        args = {"progressed": False, "awaiting": 3, "awaited_before": 3, "newest_upload_age_s": 3600.0, **kw}
        return next_poll_delay(200.0, PACE, **args)  # type: ignore[arg-type]

    assert after() == 300.0
    assert after(progressed=True) == PACE.poll_s
    assert after(awaiting=4) == PACE.poll_s  # a new upload awaits its receipt
    assert after(awaiting=0, newest_upload_age_s=None) == PACE.poll_s


@given(
    st.floats(0.01, 1000),
    st.booleans(),
    st.integers(0, 5),
    st.integers(0, 5),
    st.one_of(st.none(), st.floats(0, 10**6)),
)
def test_the_delay_is_always_within_the_bounds(
    previous: float, progressed: bool, awaiting: int, before: int, age: float | None
) -> None:
    delay = next_poll_delay(
        previous, PACE, progressed=progressed, awaiting=awaiting, awaited_before=before, newest_upload_age_s=age
    )
    assert PACE.poll_s <= delay <= PACE.poll_max_s


async def test_the_poller_keeps_its_pace_and_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller's loop: a file uploaded just now is polled every poll_s; one uploaded long ago backs off."""
    delays: list[float] = []
    reported: list[float] = []

    class Metrics(NoPublishMetrics):
        def receipt_poll_delay(self, seconds: float) -> None:
            reported.append(seconds)

    class Poller(ReceiptPoller):
        age_s = 0.0

        async def poll_once(self, now_ms: int | None = None) -> int:
            self.awaiting = 1
            self.newest_upload_ms = int((time.time() - self.age_s) * 1000)
            return 0

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) % 4 == 0:
            raise asyncio.CancelledError

    monkeypatch.setattr(receipt_poller, "asyncio", SimpleNamespace(sleep=sleep))
    options = ReceiptOptions(poll_s=0.5, poll_max_s=3.0, poll_fast_s=60.0)
    poller = Poller(None, None, None, None, options, metrics=Metrics())  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    poller.age_s = 3600.0
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert delays == [0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0]
    assert reported == delays
