"""Every answer but a success is a JSON body with a ``message`` a person can act on.

``ApiError`` is what route code raises for a user's mistake (it rolls the request's
transaction back on its way out); the handlers here turn it, FastAPI's validation errors
and Starlette's own 404/405 into the same shape.  A failure that is not the user's (the
database is away) answers 503, never a traceback.  This module never touches the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rules.errors import EngineError

log = logging.getLogger(__name__)


class ErrorItem(BaseModel):
    """One mistake: where (a dotted path in the rule or request, and the YAML line) and what."""

    path: str
    line: int | None
    message: str


class Problem(BaseModel):
    """The body of every 4xx and 5xx answer."""

    message: str
    errors: list[ErrorItem] | None = None


class ApiError(EngineError):
    """A request the API refuses: its status, a message, and for 422 the list of mistakes."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[ErrorItem] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


def not_found(what: str) -> ApiError:
    """404 for a missing row, and for another organization's: existence is not revealed."""
    return ApiError(404, f"{what} does not exist in your organization")


def problem_response(
    status: int,
    message: str,
    errors: Sequence[ErrorItem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(message=message, errors=list(errors) if errors is not None else None)
    return JSONResponse(
        body.model_dump(exclude_none=True) if errors is None else body.model_dump(),
        status_code=status,
        headers=dict(headers or {}),
    )


_DESCRIPTIONS = {
    400: "The request is malformed",
    401: "No key, a malformed, unknown or revoked key (`WWW-Authenticate: Bearer`)",
    403: "The key's role may not do this",
    404: "No such object in your organization",
    409: "The object is not in a state that allows this",
    413: "The request body is larger than `api.max_body_bytes`",
    415: "The request body's content type is not accepted here",
    422: "The request or the rule in it is invalid: `errors` says where and why",
    503: "The database is unavailable; try again (storing a secret: no `secrets_key` is"
    " configured on the server)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for these error statuses (plus 401, 413 and 503,
    which any route can answer), so that the OpenAPI document lists every answer."""
    wanted: Iterable[int] = sorted({401, 413, 503, *statuses})
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in wanted}


def _dotted(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.message, exc.errors, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        ErrorItem(path=_dotted(error.get("loc", ())), line=None, message=str(error.get("msg", "")))
        for error in exc.errors()
    ]
    first = items[0] if items else None
    summary = f"{first.path}: {first.message}" if first is not None else "the request is invalid"
    return problem_response(422, f"invalid request: {summary}", items)


# FastAPI's answer to a JSON body it cannot even decode (not UTF-8): a malformed body,
# which this API answers 422 like any other.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        message = "malformed JSON: the body is not UTF-8 JSON text"
        return problem_response(
            422, f"invalid request: {message}", [ErrorItem(path="body", line=None, message=message)]
        )
    return problem_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"error": type(exc).__name__})
    return problem_response(503, "the database is unavailable; try again shortly")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError, TimeoutError):
        app.add_exception_handler(kind, _database_unavailable)
