"""schemas/openapi.yaml is generated from the API's models and cannot drift from them or from the routes served."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.reconcile.api import ApiDeps, WorkflowApi
from services.reconcile.api_models import ExportBody
from services.reconcile.api_problems import PROBLEM_JSON, Conflict, problems
from services.reconcile.export_guard import ExportGuards
from services.reconcile.openapi_export import OPENAPI_FILE, OPERATIONS, build, main, render
from shared.runs.store import UnknownRun
from shared.settings import REPO_ROOT


def test_checked_in_document_is_the_generated_one() -> None:
    assert OPENAPI_FILE.read_text(encoding="utf-8") == render(), "run `make schemas`"
    assert main(["--check"]) == 0


def test_check_mode_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "openapi.yaml"
    assert main(["--check"], path) == 1
    path.write_text(render().replace("dryRunExport", "dryRun"), encoding="utf-8")
    assert main(["--check"], path) == 1
    assert "make schemas" in capsys.readouterr().err
    assert main([], path) == 0
    assert main(["--check"], path) == 0


def test_make_schemas_writes_it() -> None:
    recipe = (REPO_ROOT / "Makefile").read_text().split("\nschemas:", 1)[1].split("\n\n", 1)[0]
    assert "-m services.reconcile.openapi_export" in recipe


def _routes() -> set[tuple[str, str]]:
    app = web.Application()
    deps = ApiDeps(
        pool=lambda: None,
        exporter=lambda: None,
        producer=None,  # type: ignore[arg-type]  # routes only: nothing is called
        reporter=None,  # type: ignore[arg-type]
        requests_topic="t",
        guards=ExportGuards(),
    )
    WorkflowApi(deps).add_routes(app)
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_the_document_describes_exactly_the_routes_served() -> None:
    assert {(op.method, op.path) for op in OPERATIONS} == _routes()
    paths = build()["paths"]
    assert {(m, p) for p, ops in paths.items() for m in ops} == _routes()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_reference_resolves_and_bodies_are_the_models() -> None:
    document = yaml.safe_load(render())
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    body = document["paths"]["/api/exports"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ExportBody"}
    assert schemas["ExportBody"]["additionalProperties"] is False
    assert set(schemas["ExportBody"]["required"]) == {"list", "audience", "data_source"}
    errors = document["paths"]["/api/runs/{id}"]["get"]["responses"]["404"]["content"]
    assert errors == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_the_export_body_is_strict() -> None:
    with pytest.raises(ValidationError):
        ExportBody.model_validate({"list": "l", "audience": "a", "data_source": "d", "mdoe": "mirror"})
    with pytest.raises(ValidationError):
        ExportBody.model_validate({"list": "l", "audience": "a", "data_source": "d", "mode": "sometimes"})


class _Fails(BaseModel):
    n: int


async def _call(error: Exception | None) -> web.Response:
    async def handler(_: web.Request) -> web.Response:
        if error is not None:
            raise error
        return web.Response(text="ok")

    request: Any = type("R", (), {"path": "/api/x"})()
    response = await problems(handler)(request)
    assert isinstance(response, web.Response)
    return response


def _validation_error() -> ValidationError:
    try:
        _Fails.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (UnknownRun("no run with this id", run_id=str(uuid.UUID(int=1))), 404, "not found"),
        (Conflict("only a failed export run can be retried"), 409, "refused"),
        (_validation_error(), 422, "invalid request"),
        (OSError("connection refused"), 503, "unavailable"),
        (web.HTTPBadRequest(reason="bad request", text="the body is not JSON"), 400, "bad request"),
        (RuntimeError("a bug"), 500, "internal error"),
    ],
)
async def test_errors_are_problem_details(error: Exception, status: int, title: str) -> None:
    response = await _call(error)
    assert response.status == status
    assert response.content_type == PROBLEM_JSON
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    assert (body["status"], body["title"], body["instance"]) == (status, title, "/api/x")
    assert "a bug" not in response.body.decode()  # a 500 tells the log, not the client
    if status == 422:
        assert body["errors"][0]["field"] == "n"
