from __future__ import annotations

import hashlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import PermanentError
from shared.ids import (
    ID_TYPES,
    KEY_TRANSFORMS,
    KEY_WHITESPACE,
    MAX_DECLARED_ID_LENGTH,
    REASON_COLON,
    REASON_COMMA,
    REASON_EMPTY,
    REASON_EQUALS,
    REASON_NOT_38_DIGITS,
    REASON_NOT_ASCII_PRINTABLE,
    REASON_TOO_LONG,
    REASON_WHITESPACE,
    IdType,
    InvalidId,
    UnknownKeyTransform,
    declared_id_problem,
    declared_key,
    id_problem,
    invalid_ids,
    is_declared_id,
    is_ecid,
    normalise_email,
    validate_declared_id,
    validate_ecid,
    validate_id,
)

# No deadline nor speed health check: the suite also runs on loaded CI machines.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Examples from the contract (AAM UUID, MID, MCMID).
CONTRACT_ECIDS = [
    "07955261652886032950143702505894272138",
    "08382830887934830189014177072406221371",
    "20265673158980419722735089753036633573",
    "59767559181262060060278870901087098252",
]

DECLARED_ALPHABET = "".join(c for c in string.printable if c.isprintable() and c not in " ,=:")
declared_ids = st.text(DECLARED_ALPHABET, min_size=1, max_size=MAX_DECLARED_ID_LENGTH).filter(
    lambda s: "%3A" not in s and "%3a" not in s
)


def test_ids_and_transforms_are_the_documented_ones() -> None:
    assert ID_TYPES == ("ecid", "declared")
    assert KEY_TRANSFORMS == ("none", "sha256")


@pytest.mark.parametrize("ecid", CONTRACT_ECIDS)
def test_contract_ecids_are_valid(ecid: str) -> None:
    assert is_ecid(ecid)
    assert validate_ecid(ecid) == ecid
    assert validate_id("ecid", ecid) == ecid


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1" * 37,
        "1" * 39,
        "0795526165288603295014370250589427213a",
        " 7955261652886032950143702505894272138",
        "795526165288603295014370250589427213\n",
        "\u0663" * 38,  # Arabic-Indic digit three: isdigit() but not ASCII
        "\u00b2" * 38,  # superscript two
        # the 43-digit UUID of the platform's real-time sample (a documentation typo)
        "3".join(["1" * 21, "1" * 21]),
    ],
)
def test_not_38_ascii_digits_is_not_an_ecid(bad: str) -> None:
    assert not is_ecid(bad)
    with pytest.raises(InvalidId) as e:
        validate_ecid(bad)
    assert e.value.reason == REASON_NOT_38_DIGITS
    assert e.value.id_type == "ecid"
    assert isinstance(e.value, PermanentError)


@FAST
@given(st.text(alphabet="0123456789", min_size=38, max_size=38))
def test_any_38_digits_is_an_ecid(s: str) -> None:
    assert is_ecid(s)


@FAST
@given(st.text(max_size=60))
def test_is_ecid_matches_its_definition(s: str) -> None:
    assert is_ecid(s) == (len(s) == 38 and all(c in "0123456789" for c in s))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", REASON_EMPTY),
        ("a" * (MAX_DECLARED_ID_LENGTH + 1), REASON_TOO_LONG),
        ("crm 42", REASON_WHITESPACE),
        ("crm\t42", REASON_WHITESPACE),
        ("crm42\n", REASON_WHITESPACE),
        ("crm,42", REASON_COMMA),
        ("crm=42", REASON_EQUALS),
        ("crm:42", REASON_COLON),
        ("crm%3A42", REASON_COLON),
        ("crm%3a42", REASON_COLON),
        ("crmé42", REASON_NOT_ASCII_PRINTABLE),
        ("crm\x0042", REASON_NOT_ASCII_PRINTABLE),
        ("crm\x7f", REASON_NOT_ASCII_PRINTABLE),
    ],
)
def test_declared_id_rules(value: str, reason: str) -> None:
    assert declared_id_problem(value) == reason
    assert not is_declared_id(value)
    with pytest.raises(InvalidId) as e:
        validate_declared_id(value)
    assert e.value.reason == reason
    assert id_problem("declared", value) == reason


def test_invalid_id_does_not_carry_the_value() -> None:
    # A rejected declared ID may be raw PII (an e-mail address with a space...): never logged.
    with pytest.raises(InvalidId) as e:
        validate_declared_id("jane doe@example.com")
    assert "jane" not in str(e.value)
    assert e.value.context["length"] == len("jane doe@example.com")


@pytest.mark.parametrize(
    "value",
    [
        "1060413022",
        "DBwFoc3dhfMNCFBh2M4F9ZkJEXMNnRDh2PXvnI1",
        "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        hashlib.sha256(b"a@b.c").hexdigest(),
        "a" * MAX_DECLARED_ID_LENGTH,
        "!#$%&'()*+-./;<>?@[\\]^_`{|}~",
    ],
)
def test_valid_declared_ids(value: str) -> None:
    assert validate_declared_id(value) == value
    assert validate_id("declared", value) == value


@FAST
@given(declared_ids)
def test_generated_declared_ids_are_valid(s: str) -> None:
    assert declared_id_problem(s) is None


@FAST
@given(declared_ids, st.sampled_from([" ", "\t", ",", "=", ":", "%3A", "é", "\x00"]), st.data())
def test_one_forbidden_character_makes_a_declared_id_invalid(s: str, bad: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(s)))
    candidate = (s[:at] + bad + s[at:])[: MAX_DECLARED_ID_LENGTH + 5]
    assert declared_id_problem(candidate) is not None


def test_validate_id_dispatches() -> None:
    ecid = CONTRACT_ECIDS[0]
    assert validate_id("declared", ecid) == ecid  # digits are a fine declared ID too
    with pytest.raises(InvalidId) as e:
        validate_id("ecid", "crm42")
    assert e.value.reason == REASON_NOT_38_DIGITS
    with pytest.raises(PermanentError):
        validate_id("phone", "1")  # type: ignore[arg-type]


def test_normalise_email() -> None:
    assert normalise_email("  Jane.Doe@Example.COM \n") == "jane.doe@example.com"


def test_declared_key_none_keeps_the_trimmed_value() -> None:
    assert declared_key("  CRM-42 ", "none") == "CRM-42"
    with pytest.raises(InvalidId) as e:
        declared_key("jane doe", "none")
    assert e.value.reason == REASON_WHITESPACE
    with pytest.raises(InvalidId):
        declared_key("   ", "none")


def test_declared_key_sha256_of_normalised_email() -> None:
    expected = hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert declared_key(" Jane.Doe@Example.com ", "sha256") == expected
    assert len(expected) == 64
    assert is_declared_id(expected)


def test_declared_key_refuses_empty_values_and_unknown_transforms() -> None:
    with pytest.raises(InvalidId) as e:
        declared_key(" \t", "sha256")
    assert e.value.reason == REASON_EMPTY
    with pytest.raises(UnknownKeyTransform):
        declared_key("x", "md5")  # type: ignore[arg-type]


def _ascii_upper(s: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in s)


@FAST
@given(
    st.text(min_size=1).filter(lambda s: s.strip(KEY_WHITESPACE) != ""),
    st.text(KEY_WHITESPACE),
    st.text(KEY_WHITESPACE),
)
def test_sha256_key_ignores_ascii_case_and_surrounding_ascii_whitespace(value: str, pre: str, post: str) -> None:
    # The one rule SQL's ab_key computes too (schemas/sql/017): ASCII whitespace, ASCII letters, nothing else.
    key = declared_key(value, "sha256")
    assert key == declared_key(pre + _ascii_upper(value) + post, "sha256")
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in value.strip(KEY_WHITESPACE))
    assert key == hashlib.sha256(lowered.encode()).hexdigest()
    assert is_declared_id(key)


def test_other_letters_and_whitespace_are_kept_as_they_are() -> None:
    assert declared_key("ÉVE@Example.org", "sha256") == hashlib.sha256("Éve@example.org".encode()).hexdigest()
    assert declared_key("\u00a0a@b.c\v", "sha256") == hashlib.sha256("\u00a0a@b.c".encode()).hexdigest()
    assert declared_key("vivian@example.dev", "sha256") == hashlib.sha256(b"vivian@example.dev").hexdigest()


# Batches of IDs are checked in bulk: the same answer as one by one, whatever the batch holds.
_ID_PIECES = st.sampled_from(["", "1" * 38, "2" * 37, "3" * 39, "٣" * 38, "a" * 64, "A:b", "x%3", "A", "%3a", "a b"])
_ID_BATCHES = st.lists(
    _ID_PIECES | st.text(max_size=40) | st.from_regex(r"[0-9]{38}", fullmatch=True) | st.text("%3Aab,=\\", max_size=6),
    max_size=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["ecid", "declared"]), _ID_BATCHES)
def test_invalid_ids_in_bulk_are_those_found_one_by_one(id_type: IdType, ids: list[str]) -> None:
    assert invalid_ids(id_type, ids) == [i for i in ids if id_problem(id_type, i) is not None]


def test_invalid_ids_of_clean_batches() -> None:
    assert invalid_ids("ecid", ["1" * 38] * 1000) == []
    assert invalid_ids("declared", ["a" * 64, "crm-1", "x" * 256]) == []
    assert invalid_ids("declared", ["ab%", "3Acd"]) == []  # "%3A" only across two IDs
    assert invalid_ids("declared", ["ok", "a%3Ab", ""]) == ["a%3Ab", ""]
