"""Every error leaves as `{"error": code, "message": text, ...details}`; no stack trace ever."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.domain import errors
from app.logs import get_logger

log = get_logger("simwire.api")

_STATUS_BY_ERROR: list[tuple[type[errors.SimwireError], int]] = [
    (errors.InvalidInput, 400),
    (errors.Unauthorized, 401),
    (errors.PaymentRequired, 402),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Blocked, 422),
    (errors.Unprocessable, 422),
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
]

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def register_status(error_type: type[errors.SimwireError], status: int) -> None:
    """Lets other packages (payments) map their error types without this module importing them."""
    _STATUS_BY_ERROR.insert(0, (error_type, status))


def status_for(exc: errors.SimwireError) -> int:
    for error_type, status in _STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 400


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, /, **details: Any
) -> Response[dict[str, Any]]:
    body = {"error": code, "message": message, **details}
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def documented(request: Request[Any, Any, Any], response: Response[Any]) -> Response[Any]:
    """A 4xx error body with `docs_url`: its code's entry in docs/errors.md, served at
    `/docs/errors#<code>` of this server (`SIMWIRE_PUBLIC_URL`, else the request's base URL).
    Bodies written elsewhere (the x402 offers, the rate limiter) get it from
    `app.api.agent_docs.ErrorDocsMiddleware`."""
    body, status = response.content, response.status_code or 0
    if 400 <= status < 500 and isinstance(body, dict) and "error" in body:
        from app.api.agent_docs import docs_url, public_base

        settings = request.app.state.get("settings")
        if settings is not None:
            base = public_base(settings, request=request)
            body.setdefault("docs_url", docs_url(base, str(body["error"])))
    return response


def simwire_error_handler(
    request: Request[Any, Any, Any], exc: errors.SimwireError
) -> Response[Any]:
    headers = {}
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.details.get("retry_after_s", 1))
    return documented(
        request,
        error_response(status_for(exc), exc.code, exc.message, headers or None, **exc.details),
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return documented(request, _http_error(request, exc))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return error_response(
            400, "invalid_request", _validation_message(exc), details=_validation_details(exc)
        )
    detail = str(exc.detail or "")
    code = _CODE_BY_STATUS.get(status, "error")
    if status == 400 and _is_decode_error(exc):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    if status == 404:
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif status == 413:
        limit = request.app.request_max_body_size
        return error_response(
            413,
            code,
            f"the request body is larger than this server accepts (at most {limit} bytes)",
            exc.headers or None,
            limit_bytes=limit,
        )
    elif status >= 500:
        detail = "the server could not complete the request"
    return error_response(status, code, detail or code.replace("_", " "), exc.headers or None)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error(
        "unhandled_error",
        method=request.method,
        path=request.url.path,
        error_type=type(exc).__name__,
        exc_info=exc,
    )
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "the server could not complete the request",
    )


def database_unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database cannot be reached, is locked past the wait, or the pool is exhausted: 503,
    which a caller may retry, instead of a 500."""
    log.warning(
        "database_unavailable",
        method=request.method,
        path=request.url.path,
        error_type=type(exc).__name__,
    )
    return error_response(
        503,
        "unavailable",
        "the database is unavailable; try again shortly",
        {"Retry-After": "1"},
    )


def _is_decode_error(exc: HTTPException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, SerializationException | msgspec.DecodeError) or (
        "JSON is malformed" in str(exc.detail)
    )


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [f"{e.get('key') or 'body'}: {e.get('message')}" for e in extra if isinstance(e, dict)]
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


def _validation_details(exc: ValidationException) -> list[Any]:
    return exc.extra if isinstance(exc.extra, list) else []


EXCEPTION_HANDLERS: dict[Any, Any] = {
    errors.SimwireError: simwire_error_handler,
    HTTPException: http_error_handler,
    OperationalError: database_unavailable_handler,
    InterfaceError: database_unavailable_handler,
    PoolTimeout: database_unavailable_handler,
    ConnectionError: database_unavailable_handler,
    Exception: unexpected_error_handler,
}
