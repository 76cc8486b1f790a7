"""HTTP helpers shared by ecsim's route modules: JSON answers and request parsing.

Every parsing problem raises the store's ``InvalidInput``/``StoreNotFound``, which the routes' middleware turns
into the platform's JSON error body.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from services.ecsim.store import InvalidInput, ListParams, StoreNotFound

_STATUS_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "too_many_requests",
}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    code = _STATUS_CODES.get(status, "server_error" if status >= 500 else "error")
    return _json({"code": code, "message": message, "status": status}, status, headers)


# --- request parsing -----------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"invalid {field}", details=[{"field": field, "message": message}])


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _invalid(field, "must be an integer") from None


def _query_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    return None if value is None or value == "" else _int(value, name)


def _query_bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise _invalid(name, "must be true or false")
    return lowered == "true"


def _list_params(request: web.Request) -> ListParams:
    return ListParams(
        page=_query_int(request, "page"),
        page_size=_query_int(request, "pageSize"),
        sort_by=request.query.get("sortBy") or None,
        descending=_query_bool(request, "descending"),
        search=request.query.get("search") or None,
    )


def _path_id(request: web.Request, name: str = "id") -> int:
    value = request.match_info[name]
    if not value.isdigit():
        raise StoreNotFound(f"no such object: {value[:100]!r}")
    return int(value)


def _path_ref(request: web.Request) -> int | str:
    """``{ref}`` is a numeric id or ``ic:<integration code>``."""
    value = request.match_info["ref"]
    if value.startswith("ic:") and len(value) > 3:
        return value[3:]
    if value.isdigit():
        return int(value)
    raise StoreNotFound(f"no such object: {value[:100]!r}")


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise InvalidInput("Content-Type must be application/json")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("the request body is not valid JSON") from None
