"""The producer's partitioner picks the partition aiokafka's (and so every Kafka client's) would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.murmur import murmur2, partition_of

# Java's murmur2 of these keys (org.apache.kafka.common.utils.Utils.murmur2, its unit test's vectors).
JAVA_VECTORS = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}


@given(st.binary(max_size=200))
def test_the_same_hash_as_aiokafkas(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_the_same_hash_as_javas() -> None:
    for key, signed in JAVA_VECTORS.items():
        assert murmur2(key) == signed & 0xFFFFFFFF


@given(st.binary(min_size=0, max_size=80), st.integers(min_value=1, max_value=64))
def test_the_same_partition_as_aiokafkas_default(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_of(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_no_key_goes_to_an_available_partition() -> None:
    assert partition_of(None, [0, 1, 2], [2]) == 2
    assert partition_of(None, [0, 1, 2], []) in {0, 1, 2}
