"""Message models: validation, decoding errors, and the checked-in JSON Schemas match the models."""

from __future__ import annotations

import contextlib
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PoisonMessage
from shared.messages import (
    MAX_IDS_PER_BATCH,
    TOPIC_MODELS,
    AudienceExportBatch,
    AudienceMembership,
    AudienceSyncStatus,
    RunCounts,
    decode,
)
from shared.schema_export import expected_files
from shared.topics import ALL_TOPICS


def _membership(**kw: object) -> AudienceMembership:
    base: dict[str, object] = {
        "run_id": uuid.uuid4(),
        "seq": 0,
        "audience_id": "seg-1",
        "data_source": "visitors",
        "id_type": "ecid",
        "mode": "full",
    }
    base.update(kw)
    return AudienceMembership.model_validate(base)


def test_every_topic_has_a_model() -> None:
    assert sorted(m.topic for m in TOPIC_MODELS) == sorted(ALL_TOPICS)


def test_round_trip_and_key() -> None:
    batch = _membership(adds=["1" * 38], last=True, totals={"received": 1})
    again = decode(AudienceMembership, batch.to_bytes())
    assert again == batch
    assert batch.key() == b"seg-1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"[1,2]", "not a JSON object"),
        (b"{", "not JSON"),
        (b'{"schema_version": 2}', "schema_version"),
    ],
)
def test_decode_errors_are_poison(value: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode(AudienceMembership, value)


def test_ids_with_separators_and_oversized_batches_are_rejected() -> None:
    with pytest.raises(PoisonMessage, match="adds"):
        decode(AudienceMembership, _membership().to_bytes().replace(b'"adds":[]', b'"adds":["a b"]'))
    too_many = orjson.dumps({**orjson.loads(_membership().to_bytes()), "adds": ["x"] * (MAX_IDS_PER_BATCH + 1)})
    with pytest.raises(PoisonMessage, match="adds"):
        decode(AudienceMembership, too_many)


def test_totals_only_on_last_batch() -> None:
    with pytest.raises(ValueError, match="last batch"):
        _membership(totals={"received": 1})


def test_extra_fields_are_rejected() -> None:
    data = {**orjson.loads(_membership().to_bytes()), "surprise": 1}
    with pytest.raises(PoisonMessage, match="surprise"):
        decode(AudienceMembership, orjson.dumps(data))


def test_status_event_defaults() -> None:
    status = AudienceSyncStatus(run_id=uuid.uuid4(), direction="import", state="started", service="ingest")
    assert status.counts == RunCounts()
    assert decode(AudienceSyncStatus, status.to_bytes()) == status


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_decoding(value: bytes) -> None:
    for model in (AudienceMembership, AudienceExportBatch, AudienceSyncStatus):
        with contextlib.suppress(PoisonMessage):
            decode(model, value)


@given(
    st.dictionaries(
        st.sampled_from(["run_id", "seq", "adds", "mode", "dpid", "last", "x"]),
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=5),
            st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
        ),
    )
)
def test_hostile_json_is_poison_not_a_crash(data: dict[str, object]) -> None:
    with contextlib.suppress(PoisonMessage):
        decode(AudienceExportBatch, orjson.dumps(data))


def test_checked_in_schemas_match_the_models() -> None:
    for path, content in expected_files().items():
        assert path.exists(), f"{path.name} missing: run `make schemas`"
        assert path.read_bytes() == content, f"{path.name} is stale: run `make schemas`"
