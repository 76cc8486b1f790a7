"""The cluster ids the test rigs format private KRaft brokers with."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.helpers import kafka_cluster_id


def test_a_cluster_id_is_sixteen_bytes_of_url_safe_base64() -> None:
    for _ in range(500):
        cid = kafka_cluster_id()
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first uuid encodes to '-SRF…' (StorageTool reads it as an option and fails, as it did on CI); the
    # next one is taken instead.
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-SRFPhpyRGWrm8-x06nRYg=="))
    plain = uuid.UUID(int=1)
    draws = iter([dashed, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert kafka_cluster_id() == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
