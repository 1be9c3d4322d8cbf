"""Limits every route applies to request bodies before reading them: JSON nesting depth.

Python's JSON decoder recurses once per nesting level, so a body nested about a thousand levels deep raises
``RecursionError`` (not ``ValueError``) wherever it is decoded, and a body just under that depth can still exhaust
the stack later (validation, storage, the worker). No request of this API needs more than a few levels, so a JSON
body nested deeper than :data:`MAX_JSON_DEPTH` is refused with 422 before any route decodes it (the API key is
checked first, as for every invalid body).
"""

from __future__ import annotations

import email.message
import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

__all__ = ["MAX_JSON_DEPTH", "json_depth_exceeds", "limit_json_depth", "too_deep"]

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a JSON request body."""

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects more than ``limit`` levels deep.

    Brackets inside strings do not count. The text need not be valid JSON: only the nesting is measured, in one
    linear pass (and none at all when the body holds fewer opening brackets than ``limit``).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI decodes a body without a content type as JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def limit_json_depth(connection: HTTPConnection) -> None:
    """App-wide dependency: refuse a JSON body nested deeper than :data:`MAX_JSON_DEPTH` (422 ``invalid_request``).

    WebSocket routes (no body) pass through.

    Raises:
        RequestValidationError: The body is nested too deeply.
    """
    if not isinstance(connection, Request):
        return
    request = connection
    if request.method not in _BODY_METHODS or not _is_json(request.headers.get("content-type")):
        return
    if json_depth_exceeds(await request.body()):
        raise too_deep()


def too_deep() -> RequestValidationError:
    """The 422 answer to a JSON body nested deeper than :data:`MAX_JSON_DEPTH` (or than Python could decode)."""
    error = {"type": "json_too_deep", "loc": ("body",), "msg": f"JSON nested more than {MAX_JSON_DEPTH} levels deep"}
    return RequestValidationError([{**error, "input": None}])
