"""Which import audiences a delivered file may feed, by its origin (master DPID, destination): issue 14, part 1."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.audiences import ImportAudience
from services.ingest.routing import Origin, feeds, origin_of, unrouted
from shared.formats.outbound.names import parse_outbound_name

VISITORS = ImportAudience("visitors-5001", 5001, "visitors", "ecid", 1001, ())
EMAILS = ImportAudience("emails-5001", 5001, "hashed-emails", "declared", 1002, ())
FROM_7003 = ImportAudience("visitors-7003", 5001, "visitors", "ecid", 1001, (), platform_destination_id=7003)


def test_the_name_gives_the_origin() -> None:
    # The examples of Audience Manager's "Outbound Data File Name and Content" page (Experience League):
    # [SYNC_TYPE]_[DID]_[MASTER_DPID][_PID_ALIAS]_[SYNC_MODE]_[TIMESTAMP], 20914 GAIDs and 20915 IDFAs.
    gaids = parse_outbound_name("S3_1234_20914_XYZCustomer_iter_1486140844000.sync.gz")
    assert origin_of(gaids) == Origin(master_dpid=20914, destination_id=1234)
    idfas = parse_outbound_name("ftp_1234_20915_full_1486140843000.sync.gz")
    assert origin_of(idfas) == Origin(master_dpid=20915, destination_id=1234)


def test_an_ecid_file_feeds_the_ecid_lists_and_an_email_file_the_email_lists() -> None:
    ecid_file, email_file = Origin(1001, 7001), Origin(1002, 7002)
    assert [a.audience_id for a in (VISITORS, EMAILS) if feeds(a, ecid_file)] == ["visitors-5001"]
    assert [a.audience_id for a in (VISITORS, EMAILS) if feeds(a, email_file)] == ["emails-5001"]


def test_an_audience_naming_a_destination_takes_only_its_files() -> None:
    assert not feeds(FROM_7003, Origin(1001, 7001))
    assert feeds(FROM_7003, Origin(1001, 7003))
    assert not feeds(FROM_7003, Origin(1002, 7003))  # that destination's files of another data source


def test_a_name_without_a_master_dpid_feeds_only_audiences_naming_its_destination() -> None:
    assert not feeds(VISITORS, Origin(None, 7003))
    assert feeds(FROM_7003, Origin(None, 7003))
    assert not feeds(FROM_7003, Origin(None, None))


def test_why_a_file_feeds_nobody() -> None:
    audiences = [VISITORS, EMAILS, FROM_7003]
    assert unrouted(audiences, Origin(1001, 7001)) is None
    unknown = unrouted(audiences, Origin(1009, 7001))
    assert unknown is not None
    assert unknown.outcome == "unknown_data_source"
    assert unknown.reason == "delivered for an unknown data source (DPID 1009)"
    only_named = unrouted([FROM_7003], Origin(1001, 7001))
    assert only_named is not None
    assert only_named.outcome == "unrouted"
    assert "destination 7001" in only_named.reason
    assert "DPID 1001" in only_named.reason
    nameless = unrouted([VISITORS], Origin(None, 7001))
    assert nameless is not None
    assert "without a master DPID" in nameless.reason
    assert unrouted([], Origin(1001, 7001)) is not None


AUDIENCE = st.builds(
    lambda k, dpid, dest: ImportAudience(f"a{k}", 5001, "ds", "ecid", dpid, (), platform_destination_id=dest),
    st.integers(0, 50),
    st.integers(1, 4),
    st.none() | st.integers(1, 4),
)
ORIGIN = st.builds(Origin, st.none() | st.integers(0, 4), st.none() | st.integers(1, 4))


@given(AUDIENCE, ORIGIN)
def test_a_file_never_feeds_an_audience_of_another_data_source_or_another_named_destination(
    audience: ImportAudience, origin: Origin
) -> None:
    if feeds(audience, origin):
        assert origin.master_dpid in (None, audience.dpid)
        assert audience.platform_destination_id in (None, origin.destination_id)
        assert origin.master_dpid is not None or audience.platform_destination_id is not None


@given(st.lists(AUDIENCE, max_size=6), ORIGIN)
def test_unrouted_exactly_when_no_audience_is_fed(audiences: list[ImportAudience], origin: Origin) -> None:
    skipped = unrouted(audiences, origin)
    assert (skipped is None) == any(feeds(a, origin) for a in audiences)
    if skipped is not None:
        known = origin.master_dpid is None or any(a.dpid == origin.master_dpid for a in audiences)
        assert (skipped.outcome == "unknown_data_source") == (not known)
