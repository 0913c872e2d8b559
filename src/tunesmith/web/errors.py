"""OpenAI's error JSON for every refusal, and the exception handlers that turn any exception of a
route into it (a refusal with its status, anything unexpected as a 500)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("tunesmith.web")
KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
         429: "rate_limit_error"}
"""OpenAI's error `type` per status; any other 4xx is an invalid_request_error, a 5xx a server_error."""


class RequestError(Exception):
    """A request the server refuses; becomes OpenAI-style error JSON with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else KINDS.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(RequestError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code,
                        headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("request failed")
    return RequestError(500, f"internal error: {type(exc).__name__}").response()


EXCEPTION_HANDLERS = {RequestError: _request_error, HTTPException: _http_error, Exception: _server_error}
"""Every error as OpenAI's error JSON: refusals with their status, anything unexpected as a 500."""
