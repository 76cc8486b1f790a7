"""The local stack's settings: ports, where they come from (environment, var/stack.env, STACK_PORT_OFFSET)."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, NamedTuple, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BASE_PORTS = {"kafka": 9092, "postgres": 5432, "ingest": 8081, "reconcile": 8082, "publish": 8083, "ecsim": 8090}
HTTP_SETTINGS = {
    "ingest": "INGEST_HTTP_PORT",
    "reconcile": "RECONCILE_HTTP_PORT",
    "publish": "PUBLISH_HTTP_PORT",
    "ecsim": "ECSIM_HTTP_PORT",
}
STACK_VARS = (
    "STACK_PORT_OFFSET",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONTROLLER_PORT",
    "DATABASE_URL",
    "INGEST_HTTP_PORT",
    "RECONCILE_HTTP_PORT",
    "PUBLISH_HTTP_PORT",
    "ECSIM_HTTP_PORT",
    "ECSIM_URL",
)
DB_CREDENTIALS = "audience_bridge:audience_bridge"
SIDE_BY_SIDE = 'README "Two stacks side by side"'
MIN_PYTHON = (3, 11)
MIN_JAVA = 17
MIN_MAVEN = (3, 6)
MIN_FREE_MB = 2048  # Kafka's and Postgres's data for the demo, the tests and a chaos run, with WAL to spare
VENV_MB = 700
KAFKA_JARS_MB = 150
PYPI_URL = "https://pypi.org/simple/"
MAVEN_CENTRAL_URL = "https://repo.maven.apache.org/maven2/"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class StackError(Exception):
    """A setting that cannot work: the message is the one line to print."""


# ---------------------------------------------------------------------------------------------- settings


def var_dir(environ: Dict[str, str]) -> str:
    return os.path.realpath(environ.get("AB_VAR_DIR") or os.path.join(ROOT, "var"))


def read_saved(path: str) -> Dict[str, str]:
    """NAME=value lines of var/stack.env (comments and unknown names ignored)."""
    saved: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, sep, value = line.strip().partition("=")
                if sep and name in STACK_VARS:
                    saved[name] = value
    except OSError:
        pass
    return saved


def _int_setting(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise StackError(f"{name}={value!r} is not a whole number") from None
    if not low <= number <= high:
        raise StackError(f"{name}={value} is out of range ({low}-{high})")
    return number


def kafka_address(bootstrap: str) -> Tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host:
        raise StackError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not of the form host:port[,host:port...]")
    return host.strip("[]"), _int_setting("KAFKA_BOOTSTRAP_SERVERS port", port, 1, 65535)


def postgres_address(url: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise StackError("DATABASE_URL is not of the form postgresql://user[:password]@host[:port]/dbname")
    try:
        port = parts.port or 5432
    except ValueError:
        raise StackError("DATABASE_URL has an invalid port") from None
    return parts.hostname, port


def resolve(environ: Dict[str, str], saved: Dict[str, str]) -> Tuple[Dict[str, str], str]:
    """The stack's settings and where they came from ("environment", "var/stack.env" or "defaults").

    Explicit settings win; STACK_PORT_OFFSET moves the defaults of every port; ECSIM_URL follows ecsim's port
    and the controller the broker's (+1)."""
    given = {k: environ[k] for k in STACK_VARS if environ.get(k)}
    source = "environment"
    if not given:
        given, source = dict(saved), ("var/stack.env" if saved else "defaults")
    offset = _int_setting("STACK_PORT_OFFSET", given.get("STACK_PORT_OFFSET", "0"), 0, 55000)
    values = {"STACK_PORT_OFFSET": str(offset)}
    values["KAFKA_BOOTSTRAP_SERVERS"] = given.get("KAFKA_BOOTSTRAP_SERVERS") or (
        f"127.0.0.1:{BASE_PORTS['kafka'] + offset}"
    )
    _, kafka_port = kafka_address(values["KAFKA_BOOTSTRAP_SERVERS"])
    controller = given.get("KAFKA_CONTROLLER_PORT") or str(kafka_port + 1)
    values["KAFKA_CONTROLLER_PORT"] = str(_int_setting("KAFKA_CONTROLLER_PORT", controller, 1, 65535))
    values["DATABASE_URL"] = given.get("DATABASE_URL") or (
        f"postgresql://{DB_CREDENTIALS}@127.0.0.1:{BASE_PORTS['postgres'] + offset}/audience_bridge"
    )
    postgres_address(values["DATABASE_URL"])
    for name, setting in HTTP_SETTINGS.items():
        values[setting] = str(_int_setting(setting, given.get(setting) or str(BASE_PORTS[name] + offset), 1, 65535))
    values["ECSIM_URL"] = given.get("ECSIM_URL") or f"http://127.0.0.1:{values['ECSIM_HTTP_PORT']}"
    return values, source


def settings(environ: Dict[str, str]) -> Tuple[Dict[str, str], str]:
    return resolve(environ, read_saved(os.path.join(var_dir(environ), "stack.env")))


class Port(NamedTuple):
    name: str  # kafka, controller, postgres, ingest, reconcile, publish, ecsim
    host: str
    port: int
    setting: str


def stack_ports(values: Dict[str, str]) -> List[Port]:
    kafka_host, kafka_port = kafka_address(values["KAFKA_BOOTSTRAP_SERVERS"])
    pg_host, pg_port = postgres_address(values["DATABASE_URL"])
    ports = [
        Port("kafka", kafka_host, kafka_port, "KAFKA_BOOTSTRAP_SERVERS"),
        Port("controller", "127.0.0.1", int(values["KAFKA_CONTROLLER_PORT"]), "KAFKA_CONTROLLER_PORT"),
        Port("postgres", pg_host, pg_port, "DATABASE_URL"),
    ]
    ports += [Port(name, "127.0.0.1", int(values[s]), s) for name, s in HTTP_SETTINGS.items()]
    return ports


def describe(values: Dict[str, str], source: str) -> str:
    p = {x.name: x for x in stack_ports(values)}
    offset = values["STACK_PORT_OFFSET"]
    where = source + (f", STACK_PORT_OFFSET={offset}" if offset != "0" else "")
    return (
        f"stack      ports ({where}): kafka {p['kafka'].host}:{p['kafka'].port} (controller "
        f"{p['controller'].port}), postgres {p['postgres'].host}:{p['postgres'].port}, ingest {p['ingest'].port}, "
        f"reconcile {p['reconcile'].port}, publish {p['publish'].port}, ecsim {p['ecsim'].port}"
    )
