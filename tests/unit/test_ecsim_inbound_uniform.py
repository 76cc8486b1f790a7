"""ecsim's bulk path takes a block whose lines all have one width and one trait list (the bridge's files) by
fixed-width slices instead of regular expressions (:func:`services.ecsim.inbound_bulk.uniform_tail`): it must
accept exactly the blocks the regular expressions accept with a single trait list, and give the same receipts
and profiles as the line-by-line path."""

from __future__ import annotations

import hashlib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ecsim.inbound_bulk import BulkApplier, TraitRules, uniform_tail
from services.ecsim.profiles import ProfileStore
from tests.unit.test_ecsim_files_inbound import CRM, MID, T1, T2, ecid
from tests.unit.test_ecsim_inbound_bulk import TRAITS, _both

HEX = b"0123456789abcdef"
MAX_LINE = 120


def _oracle(block: bytes, id_len: int, alphabet: bytes) -> bytes | None:
    """What the bulk path's regular expressions say: every line an ID of the form and a trait list, all one."""
    ids: list[bytes] = re.findall(rb"^([%s]{%d})\t" % (re.escape(alphabet), id_len), block, re.M)
    tails: list[bytes] = re.findall(rb"\t([^\t\r\n]{0,%d})\n" % (MAX_LINE - id_len - 1), block)
    n = block.count(b"\n")
    if n == 0 or block.count(b"\t") != n or len(ids) != n or len(tails) != n or len(set(tails)) != 1:
        return None
    return tails[0]


id_chars = st.sampled_from(list(b"0123456789abcdefA\r\t x"))
tails = st.sampled_from([b"d_sid=11", b"d_sid=12", b"d_sid=11\r", b"", b"d_sid=1\t2", b"x" * 100, b"d_unsid=11"])


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    """Lines of 4-byte IDs, mostly of one trait list, some with bytes the form does not allow."""
    common = draw(tails)
    lines = draw(
        st.lists(
            st.tuples(
                st.binary(min_size=4, max_size=4) | st.lists(id_chars, min_size=3, max_size=5).map(bytes),
                st.one_of(st.just(common), tails),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return b"".join(i + b"\t" + t + b"\n" for i, t in lines)


@settings(max_examples=500)
@given(blocks())
def test_uniform_tail_accepts_what_the_regular_expressions_accept_with_one_trait_list(block: bytes) -> None:
    n = block.count(b"\n")
    if block.count(b"\t") != n:
        return  # the caller refuses such a block before
    assert uniform_tail(block, n, 4, HEX, MAX_LINE) == _oracle(block, 4, HEX)


def test_uniform_tail_refuses_each_way_a_block_can_differ() -> None:
    good = b"".join(b"%s\td_sid=11\n" % hashlib.sha256(b"%d" % i).hexdigest().encode() for i in range(5))
    assert uniform_tail(good, 5, 64, HEX, 200) == b"d_sid=11"
    upper = good.replace(good[:64], good[:64].upper(), 1)  # a declared ID the bulk form does not take
    other_tail = good[:-3] + b"12\n"  # the same width, another trait
    assert uniform_tail(upper, 5, 64, HEX, 200) is None
    assert uniform_tail(other_tail, 5, 64, HEX, 200) is None
    assert uniform_tail(good.replace(b"d_sid=11", b"d_sid=1\r"), 5, 64, HEX, 200) is None
    assert uniform_tail(good, 5, 64, HEX, 70) is None  # lines over the line limit
    assert uniform_tail(good[:-1] + b"1\n", 5, 64, HEX, 200) is None  # ragged widths
    assert uniform_tail(b"", 0, 64, HEX, 200) is None


def test_the_bridge_s_blocks_take_the_fixed_width_path() -> None:
    lines = "".join(f"{ecid(i)}\td_sid={T1}\n" for i in range(1, 1001)).encode()
    store = ProfileStore()
    applier = BulkApplier("ecid", TraitRules(MID, {T1, T2}, False, None), store.transaction())
    half = len(lines) // 2  # 500 whole lines
    applier._block(lines[:half])
    applier._block(lines[half:])
    assert applier.uniform_blocks == 2
    assert store.member_count(T1) == 1000
    assert applier.counters.records_received == 1000
    assert applier.stats.stored == 1000


ODD_SAME_WIDTH = [hashlib.sha256(b"9").hexdigest().upper(), "f" * 63 + "g", "1" * 37 + "x", "2" * 37 + " "]


@settings(max_examples=60, deadline=None)
@given(
    dpid=st.sampled_from([MID, CRM]),
    users=st.lists(
        st.sampled_from(
            [ecid(i) for i in range(1, 9)] + [hashlib.sha256(b"%d" % i).hexdigest() for i in range(4)] + ODD_SAME_WIDTH
        ),
        unique=True,
        min_size=1,
        max_size=10,
    ),
    traits=st.sampled_from([*TRAITS, f"d_sid={T1}\r"]),
    mode=st.sampled_from(["sync", "overwrite"]),
)
def test_one_trait_list_files_match_line_by_line(dpid: int, users: list[str], traits: str, mode: str) -> None:
    body = "".join(f"{u}\t{traits}\n" for u in users).encode()
    by_line, in_bulk = _both([(f"ftp_dpm_{dpid}_1714521600.{mode}", body)])
    assert in_bulk[:2] == by_line[:2]
