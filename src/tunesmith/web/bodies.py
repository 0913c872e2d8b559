"""Request bodies: JSON objects read under a size cap and only as `application/json` (a page of
another site can send text/plain or a form without a preflight, never JSON), and an ASGI receive
that counts an upload's bytes as they arrive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from .errors import RequestError

JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"


def media_type(request: Request) -> str | None:
    """The Content-Type's media type, lower-cased without its parameters; None when it has none."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind or None


def require_media_type(request: Request, expected: str, missing_ok: bool = False) -> None:
    """415 when the body is declared as anything but `expected` (or declared as nothing, unless `missing_ok`)."""
    kind = media_type(request)
    if kind != expected and not (kind is None and missing_ok):
        raise RequestError(415, f"this route reads a body of Content-Type '{expected}', not '{kind or 'none'}'",
                           code="unsupported_media_type")


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 415 when it is declared as another type than application/json (a
    body that declares none is read: clients that are not browsers may omit it, and a browser's page
    that omits it sends an Origin, refused by the guard when foreign); 413 as soon as it passes
    `max_bytes` (chunked too); 400 when it is not a JSON object."""
    require_media_type(request, JSON_TYPE, missing_ok=True)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "the Content-Length header is not a number")
        if int(declared) > max_bytes:
            raise RequestError(413, f"request body of {declared} bytes is over the limit of {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:  # counted as it arrives: chunked bodies declare no length
            raise RequestError(413, f"request body is over the limit of {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data


def counting_receive(receive: Callable[[], Any], max_bytes: int, param: str = "file",
                     code: str = "file_too_large") -> Callable[[], Any]:
    """An ASGI receive that refuses a body once more than `max_bytes` have arrived (a chunked upload
    declares no length, so the multipart parser would otherwise spool any amount to disk)."""
    seen = 0

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise RequestError(413, f"the upload is over the limit of {max_bytes} bytes", param, code)
        return message

    return counted
