"""Drop-zone names and URLs: pure functions, no I/O."""

from __future__ import annotations

import os.path
import posixpath
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.dropzone import (
    MAX_NAME_BYTES,
    FileDropZone,
    S3DropZone,
    S3Options,
    UnsafeName,
    open_dropzone,
    redact_url,
    safe_name,
)
from shared.errors import ConfigError, PermanentError

ROOT = "/srv/dropzone"

# Few characters, many of them dangerous: hypothesis then builds traversal-like names far more often
# than from the whole of Unicode.
tricky_text = st.text(alphabet=st.sampled_from(["a", "é", " ", ".", "/", "\\", "\x00", "\n", "\x7f", ":"]))


def assert_stays_inside_root(name: str) -> None:
    try:
        accepted = safe_name(name)
    except UnsafeName:
        return
    assert accepted == name
    joined = f"{ROOT}/{name}"
    # Lexically: nothing to normalise away, so every backend addresses the same object.
    assert posixpath.normpath(joined) == joined
    # On the real file system (symlinks aside): still below the root.
    resolved = Path(os.path.realpath(Path(ROOT) / name))
    assert resolved.is_relative_to(ROOT)
    assert resolved != Path(ROOT)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


@given(st.text())
@example("..")
@example("a/../../etc/passwd")
@example("./x")
@example("a" * (MAX_NAME_BYTES + 1))
@example("\ud800")
def test_arbitrary_text_never_escapes_the_root(name: str) -> None:
    assert_stays_inside_root(name)


@given(tricky_text)
def test_path_like_text_never_escapes_the_root(name: str) -> None:
    assert_stays_inside_root(name)


segment = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/\\"), min_size=1).filter(
    lambda s: s not in (".", "..")
)


@given(st.lists(segment, min_size=1, max_size=8))
def test_plain_relative_paths_are_accepted(segments: list[str]) -> None:
    name = "/".join(segments)
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        with pytest.raises(UnsafeName):
            safe_name(name)
    else:
        assert safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", "a//b", "a\\b", "a\x00b", "", ".", "a/.", "a/", "x\ty", "é" * 513],
    ids=repr,
)
def test_unsafe_examples(name: str) -> None:
    with pytest.raises(UnsafeName) as caught:
        safe_name(name)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    "name", ["a", "partner/date=2024-05-01/ftp_dpm_478_1366545717.sync", ".hidden", "a..b/...", "x" * 1024]
)
def test_safe_examples(name: str) -> None:
    assert safe_name(name) == name


# ---------------------------------------------------------------------------------------- URLs


def test_file_url() -> None:
    zone = open_dropzone("file:///var/dropzones/import")
    assert isinstance(zone, FileDropZone)
    assert zone.root == Path("/var/dropzones/import")
    assert zone.url == "file:///var/dropzones/import"


def test_s3_url() -> None:
    options = S3Options(access_key_id="AKIA", secret_access_key="s3cr3t-value", region="eu-west-1")
    zone = open_dropzone("s3://adobe-bucket/partner/in/", s3=options)
    assert isinstance(zone, S3DropZone)
    assert zone.url == "s3://adobe-bucket/partner/in"
    assert zone.key("a.sync") == "partner/in/a.sync"
    assert "s3cr3t-value" not in repr(zone)
    assert "s3cr3t-value" not in repr(options)
    assert options.acl == "bucket-owner-full-control"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/var/dropzones/import",
        "ftp://ftp-in.demdex.com/x",
        "http://example.com/x",
        "file:relative/path",
        "file://otherhost/x",
        "file:///x?mode=1",
        "s3://",
        "s3:///prefix-without-bucket",
        "s3://bucket/../escape",
        "s3://bucket/a//b",
        "s3://b/x",
        "s3://[::1/x",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_dropzone(url)


def test_credentials_in_an_s3_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        open_dropzone("s3://AKIA:topsecret@bucket/prefix")
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("s3://AKIA:topsecret@bucket/p", "s3://***@bucket/p"),
        (
            "https://host/o?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://host/o?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("http://[::1", "<unparseable url>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
