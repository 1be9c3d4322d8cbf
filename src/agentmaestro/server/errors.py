"""Every error the API returns has one shape: ``{"error": {"code": ..., "message": ...}}``.

Errors map to HTTP status codes here and nowhere else. A 500 is a bug: it is logged with its
traceback and answered with a generic message.

The OpenAI-compatible paths (``/v1/chat/completions``, ``/v1/models``) answer as OpenAI does: the same
object also carries ``type`` (``invalid_request_error``, ``authentication_error``, ...) and ``param`` (the
request field at fault, or null), and a request body that does not validate is a 400, not a 422.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentmaestro.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    MaestroError,
    NotFoundError,
    RateLimitedError,
    ValidationError,
)
from agentmaestro.server import limits

log = logging.getLogger("agentmaestro.server")

_DATA_MESSAGE = "a value in the request cannot be stored or compared: a number out of range or a NUL character"


class APIError(Exception):
    """An error with an explicit HTTP status and code (and, for OpenAI-compatible paths, the field at fault)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.param = param


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": {"code": code, "message": message}}


OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
"""Paths (and their sub-paths) that answer errors the way OpenAI's API does."""

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    """Whether ``path`` is one of the OpenAI-compatible endpoints."""
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS)


def openai_error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return _OPENAI_TYPES.get(status, "invalid_request_error")


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    body = error_body(code, message)
    if is_openai_path(request.url.path):
        body["error"].update(type=openai_error_type(status), param=param)
    return JSONResponse(body, status_code=status, headers=headers)


def _param(errors: list[Any]) -> str | None:
    """The first invalid field as OpenAI names it: ``messages[0].content``."""
    for e in errors:
        loc = [part for part in e.get("loc", ()) if part != "body"]
        if not loc or not isinstance(loc[0], str):  # the body itself (not JSON, not an object)
            continue
        return loc[0] + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    return None


def status_for(exc: MaestroError) -> int:
    """HTTP status for a domain error."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ValidationError | ConfigError):
        return 400
    if isinstance(exc, AuthError):
        return 403
    if isinstance(exc, RateLimitedError):
        return 429
    return 400


def _describe(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",))
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable code, e.g. not_found."},
                "message": {"type": "string", "description": "What went wrong, for people."},
            },
        }
    },
}
"""JSON schema of every error response."""

OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "type", "param"],
            "additionalProperties": False,
            "properties": {
                **ERROR_SCHEMA["properties"]["error"]["properties"],
                "type": {
                    "type": "string",
                    "description": "OpenAI's error type: invalid_request_error, authentication_error, "
                    "permission_error, rate_limit_error or server_error.",
                },
                "param": {
                    "type": ["string", "null"],
                    "description": "The request field at fault, e.g. messages[0].content, when one is.",
                },
            },
        }
    },
}
"""JSON schema of the errors of the OpenAI-compatible paths (``error`` also has ``type`` and ``param``)."""

_ERROR_STATUSES = {
    "400": "Bad request",
    "401": "Missing, invalid or revoked API key",
    "403": "The key's role does not allow this",
    "404": "Not found (or in another workspace)",
    "409": "Conflict with the resource's current state",
    "422": "Invalid request",
    "429": "Rate limit or quota exceeded (see Retry-After)",
}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe the error responses of every ``/v1`` operation in an OpenAPI document, in place.

    FastAPI documents its own 422 body (``{"detail": [...]}``); this API answers
    ``{"error": {...}}`` instead, so that is replaced, and the other 4xx answers are added.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    components["OpenAIError"] = OPENAI_ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        openai_style = is_openai_path(path.split("{")[0].rstrip("/"))
        ref = {"$ref": "#/components/schemas/OpenAIError" if openai_style else "#/components/schemas/Error"}
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete") or not isinstance(op, dict):
                continue
            responses = op.setdefault("responses", {})
            statuses = list(_ERROR_STATUSES) if path.startswith("/v1") else [s for s in ("422",) if s in responses]
            if openai_style:  # a body that does not validate is a 400 here
                responses.pop("422", None)
                statuses = [s for s in statuses if s != "422"]
            for status in statuses:
                responses[status] = {
                    "description": _ERROR_STATUSES[status],
                    "content": {"application/json": {"schema": ref}},
                }
    if '"#/components/schemas/HTTPValidationError"' not in json.dumps(schema):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


Authenticate = Callable[[Request], Awaitable[object]]
"""The routes' API-key check (``auth.authenticate``): raises :class:`APIError` for a caller it refuses."""


def _needs_key(request: Request, authenticate: Authenticate) -> bool:
    """Whether the matched route authenticates its caller (has ``authenticate`` among its dependencies)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        d = stack.pop()
        if d.call is authenticate:
            return True
        stack.extend(d.dependencies)
    return False


def install(app: FastAPI, *, authenticate: Authenticate) -> None:
    """Register the exception handlers.

    ``authenticate`` is the routes' key check: a request whose body does not validate is checked with it first
    when its route needs a key, so a caller without a valid key learns that (401), not what is wrong with its body.
    """

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return _respond(request, exc.status, exc.code, exc.message, headers=exc.headers, param=exc.param)

    @app.exception_handler(MaestroError)
    async def _domain(request: Request, exc: MaestroError) -> JSONResponse:
        wait = exc.retry_after if isinstance(exc, RateLimitedError) else None
        headers = {"Retry-After": str(math.ceil(wait))} if wait is not None else None
        return _respond(request, status_for(exc), exc.code, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI decodes the body before it runs dependencies: check the key first, so that a caller
        # without a valid key learns that (401), not what is wrong with its body.
        if _needs_key(request, authenticate):
            try:
                await authenticate(request)
            except APIError as denied:
                return await _api(request, denied)
        errors = list(exc.errors())
        if is_openai_path(request.url.path):  # OpenAI answers 400 for a parameter it does not accept
            return _respond(request, 400, "invalid_request", _describe(errors), param=_param(errors))
        return JSONResponse(error_body("invalid_request", _describe(errors)), status_code=422)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value from the request (a NUL character, a number out of range).
        log.info("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return _respond(request, 422, "invalid_request", _DATA_MESSAGE)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        # SQLite cannot bind integers beyond 64 bits.
        log.info("value out of range on %s %s: %s", request.method, request.url.path, exc)
        return _respond(request, 422, "invalid_request", _DATA_MESSAGE)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, RecursionError):  # FastAPI could not decode a JSON body nested too deeply
            return await _validation(request, limits.too_deep())
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _respond(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Input nested beyond what a recursive decoder (YAML in a workflow document, say) or validator can walk.
        log.info("input nested too deeply on %s %s", request.method, request.url.path)
        message = "the request's input is nested too deeply (lists and mappings within one another)"
        return await _validation(request, RequestValidationError([{"loc": ("body",), "msg": message}]))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(request, 500, "internal", "internal server error")
