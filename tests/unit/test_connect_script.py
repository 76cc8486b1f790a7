"""deploy/local/connect.sh (change data capture: Kafka Connect, Debezium, the campaign Postgres): its one-line
failures, staged for real where it is cheap, and its configuration files kept in step with it. The whole path
runs in tests/e2e/test_cdc_debezium.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.fixtures.local_stack import LOCAL, fake_tool, free_port, one_line, run_script

CONNECT_SH = str(LOCAL / "connect.sh")


def _free_ports() -> dict[str, str]:
    return {"CDC_PG_PORT": str(free_port()), "CONNECT_REST_PORT": str(free_port())}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CDC_SCHEMAS_ENABLE", "yes"),
        ("CDC_PG_PORT", "5442x"),
        ("CONNECT_REST_PORT", "http"),
        ("CDC_TOPIC_PARTITIONS", "0"),
        ("CDC_TOPIC", "recipient changes"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(tmp_path: Path, setting: str, value: str) -> None:
    var = tmp_path / "var"
    line = one_line(run_script([CONNECT_SH, "start"], var, **{**_free_ports(), setting: value}))
    assert f"{setting}={value}" in line
    assert not var.exists()


@pytest.mark.parametrize("setting", ["CDC_PG_PORT", "CONNECT_REST_PORT"])
def test_a_taken_port_stops_the_start_withone_line(tmp_path: Path, held_port: int, setting: str) -> None:
    var = tmp_path / "var"
    line = one_line(run_script([CONNECT_SH, "start"], var, **{**_free_ports(), setting: str(held_port)}))
    assert f"127.0.0.1:{held_port} is taken" in line
    assert setting in line
    assert not var.exists()  # nothing started, nothing written


def test_an_old_maven_stops_the_first_fetch_withone_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "java", 'openjdk version "17.0.15" 2025-04-15')
    fake_tool(bin_dir, "mvn", "Apache Maven 3.3.9")
    result = run_script([CONNECT_SH, "fetch"], tmp_path / "var", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert "Maven 3.6+, found 3.3.9" in one_line(result)
    assert not (tmp_path / "cache").exists()


def test_an_unknown_command_prints_the_usage(tmp_path: Path) -> None:
    result = run_script([CONNECT_SH, "restart"], tmp_path / "var")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_every_placeholder_of_the_templates_is_filled_in() -> None:
    script = (LOCAL / "connect.sh").read_text()
    filled = set(re.findall(r"s#(@[A-Z_]+@)#", script))
    for template in (LOCAL / "connect").glob("*.template"):
        used = set(re.findall(r"@[A-Z_]+@", template.read_text()))
        assert used, template
        assert used <= filled, f"{template.name}: {sorted(used - filled)} not filled in by connect.sh"


def test_connect_runs_at_the_brokers_own_version() -> None:
    def version(pom: Path) -> str:
        found = re.search(r"<kafka.version>(.+)</kafka.version>", pom.read_text())
        assert found, pom
        return found.group(1)

    assert version(LOCAL / "connect" / "pom.xml") == version(LOCAL / "kafka" / "pom.xml")
    assert "<debezium.version>3.6.1.Final</debezium.version>" in (LOCAL / "connect" / "pom.xml").read_text()
