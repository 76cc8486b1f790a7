"""schemas/asyncapi.yaml is generated from the message models and cannot drift from them or from the services."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import jsonschema
import orjson
import pytest
import yaml

from services.ingest.app import IngestApp
from services.publish.app import PublishApp
from services.reconcile.app import ReconcileApp
from services.registry import SETTINGS
from shared.asyncapi_catalog import ACTORS, DLQ_HEADERS, SERVICES, TOPICS
from shared.asyncapi_export import ASYNCAPI_FILE, build, main, render
from shared.messages import MODEL_BY_TOPIC, decode
from shared.schema_export import schema_for
from shared.settings import REPO_ROOT
from shared.topics import ALL_TOPICS, DLQ_SUFFIX


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ASYNCAPI_FILE.read_text())
    return data


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_checked_in_document_is_the_generated_one() -> None:
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == render(), "run `make schemas`"
    assert main(["--check"]) == 0


def test_check_mode_detects_drift_and_writing_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "asyncapi.yaml"
    assert main(["--check"], path) == 1  # missing
    path.write_text(render().replace("segment-events", "segment-event"), encoding="utf-8")
    assert main(["--check"], path) == 1
    assert "make schemas" in capsys.readouterr().err
    assert main([], path) == 0
    assert main(["--check"], path) == 0


def test_make_schemas_writes_it() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\nschemas:", 1)[1].split("\n\n", 1)[0]
    assert "-m shared.schema_export" in recipe
    assert "-m shared.asyncapi_export" in recipe


def test_generation_is_deterministic() -> None:
    assert render() == render()
    assert yaml.safe_load(render()) == build()


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = refs(doc)
    assert found
    for ref in found:
        resolve(doc, ref)


def test_every_topic_and_its_dead_letter_topic_is_a_channel(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"]: c for c in doc["channels"].values()}
    for topic in ALL_TOPICS:
        channel = addresses["{topicPrefix}" + topic]
        (message,) = [resolve(doc, m["$ref"]) for m in channel["messages"].values()]
        assert message["title"] == topic
        dlq = addresses["{topicPrefix}" + topic + DLQ_SUFFIX]
        (dead,) = [resolve(doc, m["$ref"]) for m in dlq["messages"].values()]
        assert set(dead["headers"]["properties"]) == set(DLQ_HEADERS)
        assert "topicPrefix" in channel["parameters"]
        assert "topicPrefix" in dlq["parameters"]
    for name, channel in doc["channels"].items():
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", name), "channel ids are plain identifiers"
        assert set(re.findall(r"{(\w+)}", channel["address"])) == set(channel.get("parameters", {}))


def test_operations_point_at_their_channels_messages(doc: dict[str, Any]) -> None:
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive")
        channel_ref = op["channel"]["$ref"]
        resolve(doc, channel_ref)
        for message in op["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), op_id
            resolve(doc, message["$ref"])


def _hoisted_schema(doc: dict[str, Any], model_name: str) -> dict[str, Any]:
    """The embedded payload schema as a standalone JSON Schema (its components.schemas references kept)."""
    schema: dict[str, Any] = copy.deepcopy(doc["components"]["schemas"][model_name])
    schema["components"] = {"schemas": doc["components"]["schemas"]}
    return schema


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_payloads_are_the_json_schemas_and_the_examples_fit(doc: dict[str, Any], topic: str) -> None:
    model = MODEL_BY_TOPIC[topic]
    embedded = doc["components"]["schemas"][model.__name__]
    original = schema_for(model)
    assert embedded["x-json-schema"] == f"topics/{topic}.json"
    assert (REPO_ROOT / "schemas" / embedded["x-json-schema"]).exists()
    assert embedded["properties"].keys() == original["properties"].keys()
    assert embedded.get("required") == original.get("required")
    message = doc["components"]["messages"][model.__name__]
    assert message["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}
    (example,) = message["examples"]
    payload = example["payload"]
    # Valid for the model, for the checked-in JSON Schema (2020-12) and for the embedded AsyncAPI schema.
    decoded = decode(model, orjson.dumps(payload))
    jsonschema.Draft202012Validator(original).validate(payload)
    jsonschema.Draft7Validator(_hoisted_schema(doc, model.__name__)).validate(payload)
    key = message["bindings"]["kafka"]["key"]
    assert key["examples"] == [decoded.key().decode()]


def test_the_embedded_schema_rejects_what_the_model_rejects(doc: dict[str, Any]) -> None:
    schema = _hoisted_schema(doc, "AudienceSyncStatus")
    bad = {"run_id": "not-a-run", "direction": "sideways", "state": "succeeded", "service": "x", "extra": 1}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


def test_dead_letter_headers_are_the_ones_the_consumer_writes() -> None:
    source = (REPO_ROOT / "shared" / "kafka" / "dead_letters.py").read_text()
    written = set(re.findall(r'\(\s*"(dlq\.[a-z_.]+)"', source))
    assert written == set(DLQ_HEADERS)


def test_consumers_are_the_services_subscriptions() -> None:
    apps: dict[str, Any] = {
        "ingest": (IngestApp, {"_events": Mock()}),
        "reconcile": (ReconcileApp, {"_importer": Mock(), "_exporter": Mock()}),
        "publish": (PublishApp, {"_publisher": Mock()}),
    }
    assert set(apps) == set(SERVICES)
    for service, (app_cls, handlers) in apps.items():
        app = app_cls(SETTINGS[service]())
        vars(app).update(handlers)  # what on_started builds; subscriptions() only names them
        subscribed = set(app.subscriptions())
        declared = {t.name for t in TOPICS if service in t.consumers}
        assert subscribed == declared, f"{service}: consumes {subscribed}, the document says {declared}"


def test_every_actor_is_described() -> None:
    for topic in TOPICS:
        for actor in (*topic.producers, *topic.consumers):
            assert actor in ACTORS
