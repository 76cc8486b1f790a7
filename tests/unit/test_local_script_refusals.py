"""deploy/local's scripts stopping with one line, run for real: each run starts nothing and stages one failure
(a port held by a socket of the test, a fake old java on PATH, a closed registry URL, a disk threshold no disk
meets), then checks the script stops with one line naming the cause and the setting or fix. The decisions behind
them are tested as pure functions in test_local_scripts.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.local_stack import (
    LOCAL,
    fake_tool,
    free_port,
    one_line,
    run_script,
    script_env,
)


def _free_broker_ports() -> dict[str, str]:
    """The broker's two ports, both free: its controller's default (the bootstrap port + 1)
    may be any other program's ephemeral port, which made the check under test come second."""
    return {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "KAFKA_CONTROLLER_PORT": str(free_port())}


@pytest.mark.parametrize(
    ("script", "setting", "value"),
    [
        ("kafka.sh", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}"),
        (
            "postgres.sh",
            "DATABASE_URL",
            "postgresql://audience_bridge:audience_bridge@127.0.0.1:{port}/audience_bridge",
        ),
        ("services.sh", "INGEST_HTTP_PORT", "{port}"),
        ("services.sh", "ECSIM_HTTP_PORT", "{port}"),
    ],
)
def test_a_taken_port_stops_the_script_with_one_line_naming_the_setting(
    tmp_path: Path, held_port: int, script: str, setting: str, value: str
) -> None:
    var = tmp_path / "var"
    service = setting.split("_")[0].lower()
    cmd = [str(LOCAL / script), "start"] + ([service] if script == "services.sh" else [])
    # Everything else on free ports: only the one port is taken.
    others = {
        **_free_broker_ports(),
        "DATABASE_URL": f"postgresql://audience_bridge:audience_bridge@127.0.0.1:{free_port()}/audience_bridge",
    }
    line = one_line(run_script(cmd, var, **{**others, setting: value.format(port=held_port)}))
    assert f"127.0.0.1:{held_port} is taken by " in line
    assert setting in line
    assert "pid" in line  # the holder, this test's own process, is named
    assert not (var / "kafka").exists()
    assert not (var / "run").exists()


def test_a_taken_controller_port_names_its_setting(tmp_path: Path, held_port: int) -> None:
    result = run_script(
        [str(LOCAL / "kafka.sh"), "start"],
        tmp_path / "var",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_CONTROLLER_PORT=str(held_port),
    )
    assert "KAFKA_CONTROLLER_PORT" in one_line(result)


def test_an_old_java_stops_the_broker_withone_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "java", 'openjdk version "11.0.2" 2019-01-15')
    result = run_script(
        [str(LOCAL / "kafka.sh"), "start"],
        tmp_path / "var",
        **_free_broker_ports(),
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    assert "needs Java 17+, found Java 11" in one_line(result)


def test_an_old_maven_stops_the_first_fetch_withone_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "java", 'openjdk version "17.0.15" 2025-04-15')
    fake_tool(bin_dir, "mvn", "Apache Maven 3.3.9")
    result = run_script([str(LOCAL / "kafka.sh"), "fetch"], tmp_path / "var", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert "Maven 3.6+, found 3.3.9" in one_line(result)


def test_not_enough_disk_stops_the_broker_withone_line(tmp_path: Path) -> None:
    result = run_script(
        [str(LOCAL / "kafka.sh"), "start"],
        tmp_path / "var",
        **_free_broker_ports(),
        AB_MIN_FREE_MB=str(10**9),
    )
    if "Java" in result.stderr:
        pytest.skip("no Java 17 here: the Java line comes first")
    assert "GB needed for Kafka's and Postgres's data" in one_line(result)


@pytest.mark.parametrize(
    ("what", "variable", "named"),
    [("pip", "PIP_INDEX_URL", "PyPI"), ("maven", "AB_MAVEN_CENTRAL_URL", "Maven Central")],
)
def test_no_network_to_a_registry_isone_line(tmp_path: Path, what: str, variable: str, named: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/simple/"  # nothing listens there
    result = run_script(
        [sys.executable, str(LOCAL / "stack.py"), "diagnose", what], tmp_path / "var", **{variable: url}
    )
    line = one_line(result)
    assert f"no network to {named} ({url})" in line


def test_doctor_reports_a_taken_port_and_changes_nothing(tmp_path: Path, held_port: int) -> None:
    var = tmp_path / "var"
    result = subprocess.run(
        [sys.executable, str(LOCAL / "stack.py"), "doctor"],
        env=script_env(var, STACK_PORT_OFFSET="0", INGEST_HTTP_PORT=str(held_port)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 1
    assert any(f"127.0.0.1:{held_port} is taken" in line and "INGEST_HTTP_PORT" in line for line in fails), (
        result.stdout
    )
    assert not var.exists()
