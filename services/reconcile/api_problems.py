"""Errors of the HTTP API as RFC 9457 problem details (``application/problem+json``).

Each handler of :mod:`services.reconcile.api` is wrapped by :func:`problems`, which turns the bridge's typed
errors into the matching status: unknown things 404, a refused action (release, cancel, retry, a request id
reused for another export) 409, a request that names something wrong 422, a body that is not JSON 400, the
database or Kafka away 503. An unexpected error is a 500 whose details stay in the log.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg
import orjson
from aiohttp import web
from pydantic import ValidationError

from services.reconcile.api_models import Problem
from services.reconcile.export_release import ReleaseRefused
from services.reconcile.run_cancel import CancelRefused
from services.reconcile.schedules import UnknownSchedule
from shared.errors import PermanentError, TransientError
from shared.logging import get_logger
from shared.runs.store import UnknownRun

log = get_logger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "https://github.com/audience-bridge/audience-bridge/blob/main/README.md#"
_AWAY: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, TransientError)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Conflict(PermanentError):
    """The request contradicts what the bridge holds (a refused action, a request id reused)."""


class NotFound(PermanentError):
    """What the path names does not exist."""


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    instance: str | None = None,
    kind: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> web.Response:
    body = Problem(
        type=TYPE_BASE + kind if kind else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
    )
    return web.Response(
        status=status,
        body=orjson.dumps(body.model_dump(exclude_none=True)),
        content_type=PROBLEM_JSON,
        headers={"Cache-Control": "no-store"},
    )


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]} for e in exc.errors()]


def problems(handler: Handler) -> Handler:
    """Answer the handler's errors as problem details."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            return await handler(request)
        except ValidationError as exc:
            errors = validation_errors(exc)
            return problem(422, "invalid request", detail=errors[0]["message"], instance=path, errors=errors)
        except (UnknownRun, UnknownSchedule, NotFound) as exc:
            return problem(404, "not found", detail=str(exc), instance=path)
        except (Conflict, CancelRefused, ReleaseRefused) as exc:
            return problem(409, "refused", detail=str(exc), instance=path, kind="http-api")
        except PermanentError as exc:
            return problem(422, "cannot be done", detail=str(exc), instance=path, kind="http-api")
        except _AWAY as exc:
            log.warning("api_dependency_unavailable", path=path, error=type(exc).__name__)
            return problem(
                503, "unavailable", detail="the database or Kafka is not answering; try again", instance=path
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return problem(exc.status, exc.reason, detail=exc.text, instance=path)
        except Exception:
            # A bug: its stack trace goes to the log, not to the client.
            log.exception("api_error", path=path)
            return problem(500, "internal error", detail="see reconcile's log", instance=path)

    return wrapped


async def json_body(request: web.Request) -> object:
    """The request's JSON body; a body that is not JSON is a 400 problem."""
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(reason="bad request", text=f"the body is not JSON: {exc}") from None
