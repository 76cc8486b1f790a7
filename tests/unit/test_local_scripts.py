"""deploy/local's decisions (stack.py), most of them as pure functions.

The decisions are functions of deploy/local/stack.py: which ports a stack uses, what to do about a taken
port, where the private Postgres cluster lives, whether Java, Maven, Python, Postgres, the disk and the network
will do (its `pg-dir` and `clean` commands also run for real). The scripts' one-line refusals, each staged
for real, are test_local_script_refusals.py. The whole stack,
from a 700 folder and side by side, is tests/e2e/test_local_stack.py (opt-in: it takes minutes).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.local_stack import LOCAL, run_script, stack

# ---------------------------------------------------------------------------------------------- settings


def test_defaults_are_the_services_defaults() -> None:
    values, source = stack.resolve({}, {})
    assert source == "defaults"
    assert values["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert values["KAFKA_CONTROLLER_PORT"] == "9093"
    assert values["DATABASE_URL"] == "postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge"
    assert [values[f"{s}_HTTP_PORT"] for s in ("INGEST", "RECONCILE", "PUBLISH", "ECSIM")] == [
        "8081",
        "8082",
        "8083",
        "8090",
    ]
    assert values["ECSIM_URL"] == "http://127.0.0.1:8090"


def test_an_offset_moves_every_port_and_ecsim_url_follows() -> None:
    values, source = stack.resolve({"STACK_PORT_OFFSET": "100"}, {})
    assert source == "environment"
    ports = {p.name: p.port for p in stack.stack_ports(values)}
    assert ports == {
        "kafka": 9192,
        "controller": 9193,
        "postgres": 5532,
        "ingest": 8181,
        "reconcile": 8182,
        "publish": 8183,
        "ecsim": 8190,
    }
    assert values["ECSIM_URL"] == "http://127.0.0.1:8190"


def test_explicit_settings_win_and_the_controller_follows_the_broker() -> None:
    values, _ = stack.resolve(
        {"STACK_PORT_OFFSET": "100", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092", "ECSIM_HTTP_PORT": "18090"}, {}
    )
    assert values["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert values["KAFKA_CONTROLLER_PORT"] == "19093"
    assert values["ECSIM_URL"] == "http://127.0.0.1:18090"
    assert values["INGEST_HTTP_PORT"] == "8181"


def test_the_saved_settings_apply_only_when_the_environment_sets_none() -> None:
    saved, _ = stack.resolve({"STACK_PORT_OFFSET": "300"}, {})
    assert stack.resolve({}, saved) == (saved, "var/stack.env")
    # Any stack setting in the environment: the environment alone decides (no mix of two stacks' ports).
    values, source = stack.resolve({"STACK_PORT_OFFSET": "200"}, saved)
    assert source == "environment"
    assert values["DATABASE_URL"].endswith("@127.0.0.1:5632/audience_bridge")


def test_saved_file_round_trips(tmp_path: Path) -> None:
    env = {"AB_VAR_DIR": str(tmp_path / "var"), "STACK_PORT_OFFSET": "400", "PATH": os.environ["PATH"]}
    subprocess.run([sys.executable, str(LOCAL / "stack.py"), "save"], env=env, check=True)
    saved = stack.read_saved(str(tmp_path / "var" / "stack.env"))
    assert saved["ECSIM_HTTP_PORT"] == "8490"
    out = subprocess.run(
        [sys.executable, str(LOCAL / "stack.py"), "env"],
        env={"AB_VAR_DIR": env["AB_VAR_DIR"], "PATH": env["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9492" in out


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"STACK_PORT_OFFSET": "ten"}, "STACK_PORT_OFFSET"),
        ({"STACK_PORT_OFFSET": "60000"}, "STACK_PORT_OFFSET"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        ({"INGEST_HTTP_PORT": "70000"}, "INGEST_HTTP_PORT"),
    ],
)
def test_a_bad_setting_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(stack.StackError, match=named):
        stack.resolve(environ, {})


# ---------------------------------------------------------------------------------------------- ports


def _port(name: str, port: int) -> Any:
    values, _ = stack.resolve({}, {})
    setting = {p.name: p.setting for p in stack.stack_ports(values)}[name]
    return stack.Port(name, "127.0.0.1", port, setting)


BROKER_B = stack.Holder(41, "java", ["java", "-cp", "x", "kafka.Kafka", "/ckb/var/kafka/server.properties"], "/ckb")
CLUSTER_B = stack.Holder(42, "postgres", ["/usr/lib/postgresql/15/bin/postgres", "-D", "/ckb/var/postgres/data"], "/")
INGEST_B = stack.Holder(43, "python", ["/ckb/.venv/bin/python", "-m", "services.ingest"], "/ckb")
STRANGER = stack.Holder(44, "nc", ["nc", "-l", "9092"], "/")


def test_roles_of_another_checkouts_processes() -> None:
    assert stack.bridge_role(BROKER_B) == ("Kafka broker", "/ckb/var")
    assert stack.bridge_role(CLUSTER_B) == ("private Postgres cluster", "/ckb/var")
    assert stack.bridge_role(INGEST_B) == ("ingest service", "/ckb/var")
    assert stack.bridge_role(STRANGER) is None


def test_another_users_checkout_says_which_ports_it_serves(tmp_path: Path) -> None:
    """Not root, another user's sockets are hidden but command lines are not: the checkout's files tell."""
    var = tmp_path / "var"
    (var / "kafka").mkdir(parents=True)
    (var / "kafka" / "server.properties").write_text(
        "listeners=PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193\n"
    )
    assert sorted(set(stack.role_ports(("Kafka broker", str(var))))) == [9192, 9193]
    saved, _ = stack.resolve({"STACK_PORT_OFFSET": "100"}, {})
    (var / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in saved.items()))
    assert stack.role_ports(("private Postgres cluster", str(var))) == [5532]
    assert stack.role_ports(("ingest service", str(var))) == [8181]
    assert stack.role_ports(("ingest service", str(tmp_path / "elsewhere"))) == []


def test_a_free_port_and_our_own_process() -> None:
    assert stack.classify(_port("kafka", 9092), "/cka/var", True, None, False, None).kind == "free"
    assert stack.classify(_port("kafka", 9092), "/ckb/var", False, BROKER_B, True, None).kind == "ours"


def test_a_broker_no_checkout_started_is_used() -> None:
    assert stack.classify(_port("kafka", 9092), "/cka/var", False, None, True, None).kind == "external"
    assert stack.classify(_port("postgres", 5432), "/cka/var", False, STRANGER, True, None).kind == "external"


@pytest.mark.parametrize(
    ("name", "holder", "speaks", "setting", "by", "kind"),
    [
        ("kafka", BROKER_B, True, "KAFKA_BOOTSTRAP_SERVERS", "the Kafka broker of /ckb (pid 41)", "shared"),
        ("kafka", STRANGER, False, "KAFKA_BOOTSTRAP_SERVERS", "nc (pid 44)", "taken"),
        ("controller", None, False, "KAFKA_CONTROLLER_PORT", "another program", "taken"),
        ("postgres", CLUSTER_B, True, "DATABASE_URL", "the private Postgres cluster of /ckb (pid 42)", "shared"),
        ("ingest", INGEST_B, False, "INGEST_HTTP_PORT", "the ingest service of /ckb (pid 43)", "taken"),
        ("ecsim", STRANGER, False, "ECSIM_HTTP_PORT", "nc (pid 44)", "taken"),
    ],
)
def test_a_taken_port_names_its_holder_and_the_setting(
    name: str, holder: Any, speaks: bool, setting: str, by: str, kind: str
) -> None:
    """Another checkout's broker or cluster is `shared`: the tests and benchmarks may use it (they isolate by
    topic prefix and database), this checkout's services may not (they would consume that stack's topics and
    reset its demo), and then the same line applies."""
    verdict = stack.classify(_port(name, 1234), "/cka/var", False, holder, speaks, 300)
    assert verdict.kind == kind
    assert by in verdict.message
    assert setting in verdict.message
    assert "STACK_PORT_OFFSET=300" in verdict.message
    assert "\n" not in verdict.message


def test_the_suggested_offset_has_every_port_free() -> None:
    taken = {9192, 5632}
    assert stack.suggest_offset(lambda port: port in taken) == 300
    assert stack.suggest_offset(lambda port: True) is None


def test_listening_sockets_are_read_from_proc_net_tcp() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:2384 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
        "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
    )
    assert stack.parse_proc_net_tcp(table, 9092) == [111]
    assert stack.parse_proc_net_tcp(table, 8081) == [333]
    assert stack.parse_proc_net_tcp(table, 5432) == []


def test_the_holder_of_a_real_socket_is_found() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not stack.bindable(port)
        holder = stack.holder_of(port)
        assert holder is not None
        assert holder.pid == os.getpid()
    assert stack.bindable(port)


# ---------------------------------------------------------------------------------------------- Postgres's place


def test_where_the_private_cluster_lives() -> None:
    var = "/root/work/p/var"
    home = "/var/lib/postgresql"
    moved = f"{home}/audience-bridge/{stack.hash_of(var)}"
    # Not root: the user runs the server, in var/.
    assert stack.choose_pg_dir(var, False, None, False, False) == (f"{var}/postgres", False)
    # Root, the postgres user can enter the checkout: var/ as before.
    assert stack.choose_pg_dir(var, True, home, True, False) == (f"{var}/postgres", False)
    # Root, checkout under a 700 folder: a folder of the postgres user's own, one per checkout.
    assert stack.choose_pg_dir(var, True, home, False, False) == (moved, True)
    # A cluster already there stays there.
    assert stack.choose_pg_dir(var, True, home, True, True) == (moved, True)
    assert stack.hash_of(var) != stack.hash_of("/root/work/q/var")
    assert len(stack.hash_of(var)) == 12


def test_the_folder_the_postgres_user_cannot_enter_is_named() -> None:
    modes = {"/root": 0o700, "/root/w": 0o755, "/srv": 0o755, "/srv/p": 0o750}

    def fake_stat(path: str) -> os.stat_result:
        if path not in modes:
            raise FileNotFoundError(path)
        gid = 104 if path == "/srv/p" else 0
        return os.stat_result((stat.S_IFDIR | modes[path], 0, 0, 0, 0, gid, 0, 0, 0, 0))

    assert stack.first_blocking_dir("/root/w/var", 101, [101], fake_stat) == "/root"
    assert stack.first_blocking_dir("/srv/p/var", 101, [101], fake_stat) == "/srv/p"
    assert stack.first_blocking_dir("/srv/p/var", 101, [101, 104], fake_stat) is None


def _bad_home(tmp_path: Path) -> Path:
    """A checkout folder only root may enter (as /root is)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    return private


needs_root_and_postgres = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["id", "postgres"], capture_output=True, check=False).returncode != 0,
    reason="the move concerns root with a postgres user",
)


@needs_root_and_postgres
def test_as_root_a_checkout_under_a_700_folder_moves_the_cluster(tmp_path: Path) -> None:
    var = _bad_home(tmp_path) / "p" / "var"
    out = run_script([sys.executable, str(LOCAL / "stack.py"), "pg-dir", "--say"], var)
    assert out.stdout.strip().endswith("/audience-bridge/" + stack.hash_of(str(var)))
    assert f"the postgres user cannot enter {tmp_path / 'private'}" in out.stderr or "cannot enter /" in out.stderr
    assert not var.exists()  # deciding changes nothing


@needs_root_and_postgres
def test_as_root_a_checkout_the_postgres_user_can_enter_keeps_the_cluster_in_var() -> None:
    open_root = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        open_root.chmod(0o755)
        var = open_root / "p" / "var"
        out = run_script([sys.executable, str(LOCAL / "stack.py"), "pg-dir", "--say"], var)
        assert out.stdout.strip() == str(var / "postgres")
        assert out.stderr == ""
    finally:
        shutil.rmtree(open_root)


@needs_root_and_postgres
def test_clean_removes_only_this_checkouts_cluster(tmp_path: Path) -> None:
    var = _bad_home(tmp_path) / "p" / "var"
    var.mkdir(parents=True)
    place = Path(run_script([sys.executable, str(LOCAL / "stack.py"), "pg-dir"], var).stdout.strip())
    place.mkdir(parents=True)
    try:
        (place / "checkout").write_text("/some/other/checkout/var\n")
        out = run_script([str(LOCAL / "postgres.sh"), "clean"], var)
        assert place.exists(), out.stderr
        assert "left alone" in out.stderr
        (place / "checkout").write_text(str(var.resolve()) + "\n")
        out = run_script([str(LOCAL / "postgres.sh"), "clean"], var)
        assert not place.exists(), out.stderr
    finally:
        subprocess.run(["rm", "-rf", str(place)], check=False)


# ---------------------------------------------------------------------------------------------- tools, disk, network


def test_java_versions() -> None:
    assert stack.parse_java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert stack.parse_java_major('java version "1.8.0_292"') == 8
    assert stack.parse_java_major('openjdk version "21" 2023-09-19') == 21
    assert stack.java_problem('openjdk version "17.0.15" 2025-04-15') is None
    assert "Java 17+, found Java 11" in stack.java_problem('openjdk version "11.0.2" 2019-01-15')
    assert "no java on PATH" in stack.java_problem(None)


def test_maven_versions() -> None:
    assert stack.parse_maven_version("\x1b[1mApache Maven 3.8.7\x1b[m\nMaven home: /usr/share/maven") == (3, 8, 7)
    assert stack.maven_problem("Apache Maven 3.9.9 (8e8579a9)") is None
    assert "found 3.3.9" in stack.maven_problem("Apache Maven 3.3.9")
    assert "no mvn on PATH" in stack.maven_problem(None)


def test_python_versions() -> None:
    assert stack.python_problem((3, 11), True, False) is None
    assert "3.11+" in stack.python_problem((3, 9), True, True)
    assert "python3.11-venv" in stack.python_problem((3, 11), False, False)
    assert stack.python_problem((3, 11), False, True) is None  # the venv exists already


def test_postgres_installation() -> None:
    assert stack.postgres_install_problem("/usr/lib/postgresql/15/bin", False, False, False) is None
    assert stack.postgres_install_problem(None, True, False, True) is None  # root installs it
    assert stack.postgres_install_problem(None, False, True, True) is None  # sudo installs it
    no_sudo = stack.postgres_install_problem(None, False, False, True)
    assert "no sudo" in no_sudo
    assert "DATABASE_URL" in no_sudo
    no_apt = stack.postgres_install_problem(None, True, False, False)
    assert "apt-get is not available" in no_apt
    assert "DATABASE_URL" in no_apt


def test_disk_and_network_problems() -> None:
    assert stack.disk_problem("kafka", "/x", 4096, 2048) is None
    assert "only 1.0 GB free" in stack.disk_problem("kafka", "/x", 1024, 2048)
    assert stack.registry_problem("pip", "https://pypi.org/simple/", True) is None
    assert "PIP_INDEX_URL" in stack.registry_problem("pip", "https://pypi.org/simple/", False)
    assert "Maven Central" in stack.registry_problem("maven", stack.MAVEN_CENTRAL_URL, False)


def test_every_problem_is_one_line() -> None:
    problems = [
        stack.java_problem(None),
        stack.java_problem('java version "1.8.0"'),
        stack.maven_problem(None),
        stack.maven_problem("garbage"),
        stack.python_problem((3, 8), False, False),
        stack.postgres_install_problem(None, False, False, True),
        stack.postgres_install_problem(None, False, False, False),
        stack.disk_problem("postgres", "/x", 10, 2048),
        stack.registry_problem("pip", "u", False),
        stack.registry_problem("maven", "u", False),
    ]
    assert all(p and "\n" not in p for p in problems)
